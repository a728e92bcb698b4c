"""ImprovedGAN / I2GAN against openai/improved-gan term by term (issue 26): the weight-norm setup of the
discriminators and generators (fixed hidden scales, direction init, data-init targets, the per-output-channel
norm of transposed convolutions), what feature matching reads, where the noise z comes from, N in L_g."""
from __future__ import annotations

import pathlib

import pytest
import torch
from torch.testing import assert_close

from ssl_ray import config as C
from ssl_ray.data import Batch, DataInfo
from ssl_ray.errors import ConfigError
from ssl_ray.methods.i2gan import I2GAN, I2GANConfig
from ssl_ray.methods.improvedgan import ImprovedGAN, ImprovedGANConfig, weight_norm_data_init
from ssl_ray.models import ConvGenerator, ConvNet, GaussianNoise
from ssl_ray.models.classifiers import maybe_wn

torch.set_num_threads(1)

DIGITS = DataInfo("digits", (1, 8, 8), 10, "image")
MNIST = DataInfo("mnist5k", (1, 28, 28), 10, "image")


def make(cls=ImprovedGAN, info=DIGITS, **over):
    torch.manual_seed(0)
    return cls(C.build(cls.Config, over), info)


def batch(r=6, u=8, u2=8, seed=1, side=8):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(r, 1, side, side, generator=g), torch.randint(0, 10, (r,), generator=g),
                 torch.rand(u, 1, side, side, generator=g), torch.rand(u2, 1, side, side, generator=g))


def wn_layers(net):
    return [m for m in net.modules() if hasattr(m, "parametrizations")]


def scale(layer):
    return layer.parametrizations.weight.original0


def direction(layer):
    return layer.parametrizations.weight.original1


def optimised(m, player):
    return {id(p) for g in m.optimizers[player].param_groups for p in g["params"]}


# ---- the MNIST discriminator ------------------------------------------------------------------------------------
def test_mnist_d_directions_start_at_n_0_01_and_scales_at_1():
    """nn.py's DenseLayer: theta ~ N(0, 0.1^2), weight_scale 1, b 0 (PyTorch's default would be U(+-1/sqrt(fan_in)),
    std 0.036 for the first layer)."""
    m = make(info=MNIST)
    layers = wn_layers(m.D)
    assert len(layers) == 6
    for layer in layers:
        v = direction(layer)
        assert_close(v.std().item(), 0.1, rtol=0.05, atol=0)
        assert_close(v.mean().item(), 0.0, rtol=0, atol=0.01)
        assert torch.equal(scale(layer), torch.ones_like(scale(layer)))
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))


def test_hidden_scales_are_fixed_after_the_data_init_and_the_head_scale_trains():
    m = make()
    hidden, head = wn_layers(m.D)[:-1], m.D.head
    d_opt = optimised(m, "D")
    for layer in hidden:  # train_scale=False: no gradient, no optimiser
        assert not scale(layer).requires_grad and id(scale(layer)) not in d_opt
        assert id(direction(layer)) in d_opt and id(layer.bias) in d_opt
    assert scale(head).requires_grad and id(scale(head)) in d_opt
    b = batch()
    m.train_step(b)  # the data init, then one D and one G step
    after_init = [scale(layer).detach().clone() for layer in hidden]
    assert all(not torch.equal(g, torch.ones_like(g)) for g in after_init)  # set by the data init
    head_g, v0 = scale(head).detach().clone(), direction(hidden[0]).detach().clone()
    for _ in range(3):
        m.train_step(b)
    for layer, g in zip(hidden, after_init):
        assert torch.equal(scale(layer), g)
    assert not torch.equal(scale(head), head_g)
    assert not torch.equal(direction(hidden[0]), v0)
    # the fixed scales are state: a checkpoint round trip restores them
    fresh = make()
    fresh.load_state_dict(m.state_dict())
    for a, b_ in zip(wn_layers(fresh.D), wn_layers(m.D)):
        assert torch.equal(scale(a), scale(b_)) and scale(a).requires_grad == scale(b_).requires_grad


def test_feature_matching_reads_the_last_dense_layer_before_its_noise():
    """The reference's `layers[-3]`: the last 250-unit layer's output (after ReLU); the noise layer after it
    (sigma 0.5) acts on the way to the head only. Noise in the layers below is on (train mode) as there."""
    m = make(info=MNIST)
    x = torch.rand(256, 1, 28, 28)
    seen = {}
    last_relu = [mod for mod in m.D.trunk if isinstance(mod, torch.nn.ReLU)][-1]
    h1 = last_relu.register_forward_hook(lambda mod, i, o: seen.__setitem__("relu", o.detach()))
    h2 = m.D.head.register_forward_pre_hook(lambda mod, i: seen.__setitem__("head_in", i[0].detach()))
    m.D.train()
    torch.manual_seed(3)
    m.D(x)
    torch.manual_seed(3)
    f = m.D.features(x)
    h1.remove(), h2.remove()
    assert_close(f, seen["relu"])  # same noise below it: the pre-noise output of the last dense layer
    noise = seen["head_in"] - f
    assert_close(noise.std().item(), 0.5, rtol=0.03, atol=0)  # the head sees the sigma 0.5 noise, features don't
    assert isinstance(m.D.tail[0], GaussianNoise) and m.D.tail[0].sigma == 0.5


# ---- the CIFAR discriminator and generator ----------------------------------------------------------------------
def small_cifar_d():
    torch.manual_seed(0)
    return ConvNet(3, 10, "improvedgan", width=(8, 16), weight_norm=True)


def test_cifar_d_init_and_scales():
    """train_cifar_feature_matching.py: W ~ N(0, 0.05^2) everywhere; hidden scales fixed (train_g=False), the
    head's trained (train_g=True) and data-initialised to outputs of std 0.1 (init_stdv=0.1)."""
    net = small_cifar_d()
    layers = wn_layers(net)
    assert len(layers) == 10 and layers[-1] is net.head
    for layer in layers:
        assert_close(direction(layer).std().item(), 0.05, rtol=0.2, atol=0)
        assert scale(layer).requires_grad == (layer is net.head)
    x = torch.rand(64, 3, 32, 32)
    net.eval()  # dropout off: the check below sees the very pass the init saw
    assert weight_norm_data_init(net, x) == 10
    with torch.no_grad():
        logits = net(x)
    assert_close(logits.std(0, unbiased=False), torch.full((10,), 0.1), rtol=1e-3, atol=1e-5)
    assert_close(logits.mean(0), torch.zeros(10), rtol=0, atol=1e-5)


def test_conv_generator_output_layer_is_normalised_per_output_channel_and_data_initialised():
    """The reference's Deconv2DLayer normalises W (in, out, k, k) over (0, 2, 3): per output channel (PyTorch's
    weight_norm default, dim 0, would normalise per input channel). Its output layer is data-initialised to
    pre-activations of std 0.1 (init_stdv=0.1); BN scales are fixed (g=None)."""
    torch.manual_seed(0)
    g = ConvGenerator(100, (3, 32, 32), base=32)
    out = g.net[-2]
    w = out.weight  # the effective weight g * v / ||v||
    assert scale(out).shape == (1, 3, 1, 1)
    assert_close(w.pow(2).sum((0, 2, 3)).sqrt(), scale(out).flatten())
    assert_close(direction(out).std().item(), 0.05, rtol=0.1, atol=0)
    assert all(not bn.weight.requires_grad for bn in g.modules() if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm))
    z = torch.rand(50, 100)
    g.train()
    assert weight_norm_data_init(g, z) == 1
    pre = {}
    h = out.register_forward_hook(lambda mod, i, o: pre.__setitem__("a", o.detach()))
    with torch.no_grad():
        img = g(z)
    h.remove()
    assert_close(pre["a"].std((0, 2, 3), unbiased=False), torch.full((3,), 0.1), rtol=1e-3, atol=1e-5)
    assert img.min() >= 0 and img.max() <= 1
    m = make(info=DataInfo("cifar10", (3, 32, 32), 10, "image"))
    assert not any(id(p) in optimised(m, "G") for p in m.G.parameters() if not p.requires_grad)


def test_mnist_generator_is_initialised_as_the_reference():
    """Lasagne DenseLayer defaults (Glorot uniform, b 0); batch_norm(g=None): BN scale fixed at 1;
    l2normalize on the output: scale starts at 1, trained, no data init."""
    m = make(info=MNIST)
    lin = [mod for mod in m.G.modules() if isinstance(mod, torch.nn.Linear)]
    out = lin[-1]
    for layer in lin:
        w = direction(layer) if layer is out else layer.weight
        fan_out, fan_in = w.shape
        assert_close(w.std().item(), (2.0 / (fan_in + fan_out)) ** 0.5, rtol=0.05, atol=0)
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    assert torch.equal(scale(out), torch.ones_like(scale(out))) and id(scale(out)) in optimised(m, "G")
    bns = [mod for mod in m.G.modules() if isinstance(mod, torch.nn.BatchNorm1d)]
    assert len(bns) == 2 and all(not bn.weight.requires_grad and id(bn.bias) in optimised(m, "G") for bn in bns)
    assert [bn.eps for bn in bns] == [1e-6, 1e-6]  # BatchNormLayer: sqrt(1e-6 + var)
    assert weight_norm_data_init(m.G, torch.rand(8, 100)) == 0  # l2normalize: no data init in the reference


def test_maybe_wn_leaves_a_plain_layer_alone():
    layer = torch.nn.Linear(3, 2)
    assert maybe_wn(layer, False) is layer and not hasattr(layer, "parametrizations")


# ---- noise, N, I2GAN's norm --------------------------------------------------------------------------------------
def test_z_comes_from_the_shared_stream_so_data_parallelism_is_exact():
    """sample_z = global_rand: two workers' noise together is what one worker with twice the batch draws."""
    one, ranks = make(), [make(), make()]
    for r, m in enumerate(ranks):
        m.rank, m.world = r, 2
    for m in [one, *ranks]:
        m.noise_gen.manual_seed(42)
    z1 = one.sample_z(10)
    z2 = torch.cat([m.sample_z(5) for m in ranks])
    assert_close(z1, z2, rtol=0, atol=0)
    assert z1.min() >= 0 and z1.max() < 1 and z1.shape == (10, 100)


def test_evaluation_metrics_leave_the_training_noise_stream_alone():
    m = make()
    m.data_init(batch().x_all)
    state = m.noise_gen.get_state().clone()
    x = torch.rand(20, 1, 8, 8)
    a = m.eval_metrics(x, torch.zeros(20, dtype=torch.long))
    assert torch.equal(m.noise_gen.get_state(), state)
    assert a == m.eval_metrics(x, torch.zeros(20, dtype=torch.long))  # fixed evaluation noise


def test_fm_batch_sets_n_and_is_checked():
    m = make(fm_batch=5)
    seen = []
    orig = m.D.features
    m.D.features = lambda x: (seen.append(len(x)), orig(x))[1]
    m.train_step(batch(u=8, u2=8))
    assert seen == [5, 5]  # N real samples, as many generated (ImprovedGAN)
    with pytest.raises(ConfigError, match="fm_batch"):
        C.build(ImprovedGANConfig, {"batch_size": 10, "labeled_ratio": 0.5, "fm_batch": 6})
    C.build(ImprovedGANConfig, {"batch_size": 10, "labeled_ratio": 0.3, "fm_batch": 7})  # max(T - R, R) = 7


def test_i2gan_matches_features_with_the_slides_l1_norm():
    assert C.build(I2GANConfig, {}).fm_norm == "l1"
    assert make(I2GAN).fm_norm == "l1" and make(ImprovedGAN).fm_norm == "l2"


def test_the_parity_port_imports_nothing_from_ssl_ray():
    src = (pathlib.Path(__file__).parents[1] / "benchmarks" / "improvedgan_port.py").read_text()
    lines = [ln.strip() for ln in src.splitlines()]
    assert not [ln for ln in lines if ln.startswith(("import ssl_ray", "from ssl_ray", "from ."))]
    assert any(ln.startswith("import torch") for ln in lines)


# ---- I2GAN's training step = the reference's equations (the port's), step for step -----------------------------------
def _reference_step_equations(m, eps_bn):
    """The MNIST D and G as the port writes them (benchmarks/improvedgan_port.py: dense layers x @ (theta * scale /
    ||theta||) + b, noise 0.3 / 0.5, BN without scale), as plain tensors copied from ssl-ray's modules: D, G, disc,
    gen. Nothing of ssl-ray's layers is called."""
    import torch.nn.functional as F

    lin = [mod for mod in m.D.modules() if isinstance(mod, torch.nn.Linear)]
    D = [dict(theta=lay.parametrizations.weight.original1.detach().t().clone().requires_grad_(),
              scale=lay.parametrizations.weight.original0.detach().flatten().clone().requires_grad_(k == len(lin) - 1),
              b=lay.bias.detach().clone().requires_grad_()) for k, lay in enumerate(lin)]
    gl = [mod for mod in m.G.modules() if isinstance(mod, torch.nn.Linear)]
    bns = [mod for mod in m.G.modules() if isinstance(mod, torch.nn.BatchNorm1d)]
    G = dict(w1=gl[0].weight.t(), c1=gl[0].bias, b1=bns[0].bias, w2=gl[1].weight.t(), c2=gl[1].bias, b2=bns[1].bias,
             w3=gl[2].parametrizations.weight.original1.t(), s3=gl[2].parametrizations.weight.original0.flatten(),
             b3=gl[2].bias)
    G = {k: v.detach().clone().requires_grad_() for k, v in G.items()}

    def disc(x, features=False):
        h = x.reshape(len(x), -1)
        h = h + 0.3 * torch.randn_like(h)
        for k, layer in enumerate(D):
            a = h @ (layer["theta"] * (layer["scale"] / layer["theta"].pow(2).sum(0).sqrt())) + layer["b"]
            if k == len(D) - 1:
                return a
            h = F.relu(a)
            if features and k == len(D) - 2:
                return h
            h = h + 0.5 * torch.randn_like(h)

    def bn(a):
        a = a - a.mean(0)
        return a / (eps_bn + a.pow(2).mean(0)).sqrt()

    def gen(z):
        h = F.softplus(bn(z @ G["w1"] + G["c1"]) + G["b1"])
        h = F.softplus(bn(h @ G["w2"] + G["c2"]) + G["b2"])
        w3 = G["w3"] * (G["s3"] / G["w3"].pow(2).sum(0).sqrt())
        return torch.sigmoid(h @ w3 + G["b3"]).view(len(z), 1, 28, 28)
    return D, G, disc, gen


def test_i2gan_trains_step_for_step_as_the_reference_equations():
    """Ten steps of `ssl-ray train i2gan`'s defaults on the MNIST MLPs (tau 2, N' = 2N, L1 feature matching, Adam
    beta1 0.5, lr 3e-3) against the port's equations on copies of the initialised weights, with the same batches,
    z and Gaussian noise, in float64: every weight of D and G agrees after the ten steps (D's three passes and the
    feature matching in ssl-ray's order; the fixed hidden scales stay fixed). What this leaves out: the data-dependent
    init's sample and the random streams (docs/results-improvedgan.md, "Step for step")."""
    import torch.nn.functional as F

    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        m = I2GAN(C.build(I2GANConfig, {"batch_size": 40, "n_fake": 40}), MNIST)
        assert (m.cfg.tau, m.fm_norm, m.cfg.beta1) == (2.0, "l1", 0.5)
        g = torch.Generator().manual_seed(5)
        batches = [Batch(torch.rand(20, 1, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g),
                         torch.rand(20, 1, 28, 28, generator=g), torch.rand(20, 1, 28, 28, generator=g))
                   for _ in range(10)]
        m.train()
        m.data_init(batches[0].x_all)
        bns = [mod for mod in m.G.modules() if isinstance(mod, torch.nn.BatchNorm1d)]
        D, G, disc, gen = _reference_step_equations(m, 1e-6)  # BatchNormLayer: sqrt(1e-6 + var)
        d_params = [t for layer in D for t in layer.values() if t.requires_grad]
        opt_d = torch.optim.Adam(d_params, lr=3e-3, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(list(G.values()), lr=3e-3, betas=(0.5, 0.999))
        zgen = torch.Generator().manual_seed(123)
        m.noise_gen.manual_seed(123)
        theta0 = D[0]["theta"].detach().clone()
        for t, b in enumerate(batches):
            torch.manual_seed(1000 + t)
            m.train_step(b)
            torch.manual_seed(1000 + t)
            with torch.no_grad():
                fake = gen(torch.rand(20, 100, generator=zgen))
            out_lab, out_fake, out_unl = disc(b.x_l), disc(fake), disc(b.x_u)
            l_unl, l_fake = torch.logsumexp(out_unl, 1), torch.logsumexp(out_fake, 1)
            loss_unl = -0.5 * l_unl.mean() + 0.5 * F.softplus(l_unl).mean() + 0.5 * F.softplus(l_fake).mean()
            opt_d.zero_grad()
            (F.cross_entropy(out_lab, b.y_l) + 2.0 * loss_unl).backward()
            opt_d.step()
            with torch.no_grad():
                f_real = disc(b.x_u2, features=True).mean(0)
            f_fake = disc(gen(torch.rand(40, 100, generator=zgen)), features=True).mean(0)
            opt_g.zero_grad()
            (f_fake - f_real).abs().mean().backward()
            opt_g.step()
        lin = [mod for mod in m.D.modules() if isinstance(mod, torch.nn.Linear)]
        for k, lay in enumerate(lin):
            w = lay.parametrizations.weight
            for ours, theirs in ((w.original1.t(), D[k]["theta"]), (w.original0.flatten(), D[k]["scale"]),
                                 (lay.bias, D[k]["b"])):
                assert_close(ours.detach(), theirs.detach(), rtol=0, atol=1e-9)
        gl = [mod for mod in m.G.modules() if isinstance(mod, torch.nn.Linear)]
        for ours, theirs in ((gl[0].weight.t(), G["w1"]), (bns[0].bias, G["b1"]), (gl[1].weight.t(), G["w2"]),
                             (bns[1].bias, G["b2"]), (gl[2].parametrizations.weight.original1.t(), G["w3"]),
                             (gl[2].parametrizations.weight.original0.flatten(), G["s3"]), (gl[2].bias, G["b3"])):
            assert_close(ours.detach(), theirs.detach(), rtol=0, atol=1e-9)
        assert float((D[0]["theta"].detach() - theta0).abs().max()) > 1e-3  # ten steps that moved the weights
    finally:
        torch.set_default_dtype(torch.float32)
