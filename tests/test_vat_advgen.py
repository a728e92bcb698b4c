"""VAT and advgen: losses against hand computations, the perturbation against the KL's Hessian,
which player moves in which phase, BN statistics, and short CPU runs on two circles that learn."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from ssl_ray.config import build as build_config
from ssl_ray.data import Batch, DataSpec
from ssl_ray.data.base import DataInfo
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.errors import ConfigError
from ssl_ray.methods.advgen import (AdvGen, AdvGenConfig, classifier_objective, generator_objective,
                                    reconstruction_loss)
from ssl_ray.methods.vat import REFERENCE_EPS, VAT, VATConfig, auto_eps, normalize, vat_loss, vat_perturbation
from ssl_ray.models.encoder_decoder import EncoderDecoder
from ssl_ray.nn.functional import kl as kl_with_logits

torch.set_num_threads(1)
POINTS = DataInfo("circles", (2,), 2, "points", ("outer", "inner"))


# ---- VAT: pure functions ---------------------------------------------------------------------------
def test_normalize_matches_reference_formula_by_hand():
    d = torch.tensor([[3.0, -4.0], [0.0, 0.5]], dtype=torch.float64)
    # row 1: / 4 -> (0.75, -1), sum of squares 1.5625; row 2: / 0.5 -> (0, 1), sum 1
    want = torch.tensor([[0.75 / (1e-6 + 1.5625) ** 0.5, -1 / (1e-6 + 1.5625) ** 0.5],
                         [0.0, 1 / (1e-6 + 1.0) ** 0.5]], dtype=torch.float64)
    torch.testing.assert_close(normalize(d), want, rtol=1e-7, atol=1e-12)


def test_kl_direction_is_clean_against_perturbed():
    q = torch.tensor([[2.0, 0.0, -1.0]])
    p = torch.tensor([[0.0, 1.0, 0.5]])
    qs, ps = torch.softmax(q, 1), torch.softmax(p, 1)
    want = (qs * (qs / ps).log()).sum()
    torch.testing.assert_close(kl_with_logits(q, p), want)
    assert abs(kl_with_logits(q, p).item() - kl_with_logits(p, q).item()) > 1e-3  # not symmetric: order matters


def _linear_case(seed=0, n=5, dim=4, k=3):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(k, dim, generator=g, dtype=torch.float64)
    b = torch.randn(k, generator=g, dtype=torch.float64)
    x = torch.randn(n, dim, generator=g, dtype=torch.float64)

    def forward(v):
        return v @ w.T + b

    p = torch.softmax(forward(x), 1)
    hess = torch.stack([w.T @ (torch.diag(pi) - torch.outer(pi, pi)) @ w for pi in p])  # (n, dim, dim)
    return forward, x, hess


def test_vat_perturbation_one_power_iteration_is_hessian_times_d():
    forward, x, hess = _linear_case()
    d0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = vat_perturbation(forward, x, forward(x), eps=0.7, xi=1e-6, ip=1, d=d0.clone())
    hd = torch.einsum("nij,nj->ni", hess, d0)
    want = 0.7 * hd / hd.norm(dim=1, keepdim=True)
    torch.testing.assert_close(r, want, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(r.norm(dim=1), torch.full((len(x),), 0.7, dtype=torch.float64), rtol=1e-5, atol=0)


def test_vat_perturbation_converges_to_dominant_eigenvector():
    forward, x, hess = _linear_case(seed=3)
    vals, vecs = torch.linalg.eigh(hess)
    assert bool((vals[:, -2] < 0.95 * vals[:, -1]).all())  # an eigen-gap, so power iteration converges
    torch.manual_seed(0)
    r = vat_perturbation(forward, x, forward(x), eps=2.0, xi=1e-6, ip=300)  # 0.95 ** 300 ~ 2e-7
    top = vecs[:, :, -1]
    sign = torch.sign((r * top).sum(1, keepdim=True))
    torch.testing.assert_close(r, 2.0 * sign * top, rtol=1e-3, atol=1e-4)


def test_vat_loss_holds_clean_prediction_fixed():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(6, 2)
    r = 0.3 * torch.randn(6, 2)
    logits = net(x)
    loss = vat_loss(net, x, logits, r)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    # hand version: p is a constant; only log q(.|x + r) carries gradient
    p = torch.softmax(net(x), 1).detach()
    hand = (p * (p.log() - F.log_softmax(net(x + r), 1))).sum(1).mean()
    want = torch.autograd.grad(hand, list(net.parameters()))
    torch.testing.assert_close(loss, hand)
    for g, w in zip(grads, want):
        torch.testing.assert_close(g, w)
    leaf = logits.detach().requires_grad_(True)
    vat_loss(net, x, leaf, r).backward()
    assert leaf.grad is None  # no gradient into the clean logits


def test_vat_perturbation_leaves_no_parameter_gradients():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = torch.randn(6, 2)
    vat_perturbation(net, x, net(x), eps=1.0)
    assert all(p.grad is None for p in net.parameters())


def test_vat_train_step_updates_bn_statistics_only_from_labelled_pass():
    info = DataInfo("digits", (1, 8, 8), 10, "image")
    torch.manual_seed(0)
    m = VAT(build_config(VATConfig, {"arch": "conv_small", "eps": 1.0}), info)
    ref = copy.deepcopy(m.net).train()
    batch = Batch(torch.rand(4, 1, 8, 8), torch.arange(4), torch.rand(12, 1, 8, 8))
    with torch.no_grad():
        ref(batch.x_l)  # one BN update from the labelled inputs, nothing else
    m.train_step(batch)
    for (name, b), (_, want) in zip(m.net.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b, want, msg=name)
    pics = m.pictures(torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8), torch.zeros(16, dtype=torch.long))
    assert pics["original_vs_adversarial"].shape[2] == 3


def _bn_vat_case():
    """A VAT with a BatchNorm net (conv_small) in training mode and one batch of 4 labelled + 12 unlabelled."""
    info = DataInfo("digits", (1, 8, 8), 10, "image")
    torch.manual_seed(0)
    m = VAT(build_config(VATConfig, {"arch": "conv_small", "eps": 1.0}), info)
    g = torch.Generator().manual_seed(3)
    return m, Batch(torch.rand(4, 1, 8, 8, generator=g), torch.arange(4), torch.rand(12, 1, 8, 8, generator=g))


def test_vat_clean_and_perturbed_predictions_share_batch_statistics():
    """KL(clean || perturbed) is 0 at r = 0 for a BN net; a clean prediction put together from separate
    labelled and unlabelled passes would not be (the BN statistics differ), which this case shows too."""
    m, batch = _bn_vat_case()
    x, logits = m.vat_batch(batch)
    zero = vat_loss(m.forward_frozen_bn, x, logits, torch.zeros_like(x))
    torch.testing.assert_close(zero, torch.zeros(()), atol=1e-7, rtol=0)
    two_pass = torch.cat([m.forward_frozen_bn(batch.x_l), m.forward_frozen_bn(batch.x_u)])
    assert vat_loss(m.forward_frozen_bn, x, two_pass, torch.zeros_like(x)).item() > 1e-4


def test_vat_direction_matches_float64_finite_difference_reference_with_bn():
    """The power-iteration direction of the training step's passes against the same finite difference
    computed in float64 on a float64 copy of the net (same inputs, same batch statistics)."""
    m, batch = _bn_vat_case()
    x, logits = m.vat_batch(batch)
    d0 = torch.randn(x.shape, generator=torch.Generator().manual_seed(4))
    xi = 1e-2  # a probe that float32 resolves: the comparison then tests the statistics, not rounding
    r = vat_perturbation(m.forward_frozen_bn, x, logits, eps=1.0, xi=xi, ip=1, d=d0.clone())
    net64 = copy.deepcopy(m.net).double().train()
    x64 = x.double()
    with torch.no_grad():
        clean64 = net64(x64)
    d = (xi * normalize(d0.double())).requires_grad_(True)
    ref = normalize(torch.autograd.grad(kl_with_logits(clean64, net64(x64 + d)), d)[0])
    cos = F.cosine_similarity(r.double().flatten(1), ref.flatten(1), dim=1)
    torch.testing.assert_close(cos, torch.ones_like(cos), atol=1e-3, rtol=0)
    torch.testing.assert_close(r.double(), ref, atol=1e-3, rtol=0)


@pytest.mark.parametrize("arch", ["mlp", "conv_small"])
def test_vat_direction_under_bf16_autocast_matches_float32(arch):
    """--amp: the clean pass and the power iteration run in float32 with autocast off, so the direction under
    CPU bfloat16 autocast is the float32 one (rounded to bfloat16 they gave cosines ~0: xi = 1e-6 is below
    bfloat16's resolution, and the clean logits' rounding error swamps the probe)."""
    info = DataInfo("digits", (1, 8, 8), 10, "image")
    torch.manual_seed(0)
    m = VAT(build_config(VATConfig, {"arch": arch, "eps": 1.0}), info)
    g = torch.Generator().manual_seed(3)
    batch = Batch(torch.rand(8, 1, 8, 8, generator=g), torch.arange(8), torch.rand(24, 1, 8, 8, generator=g))
    d0 = torch.randn(32, 1, 8, 8, generator=g)
    x, logits = m.vat_batch(batch)
    r32 = vat_perturbation(m.forward_frozen_bn, x, logits, 1.0, d=d0.clone())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x, logits = m.vat_batch(batch)
        r_amp = vat_perturbation(m.forward_frozen_bn, x, logits, 1.0, d=d0.clone())
        m.train_step(batch)  # the whole step runs under autocast
    resolved = r32.flatten(1).norm(dim=1) > 0.5  # float32 itself gives r = 0 where the KL's change underflows
    assert resolved.float().mean() > 0.7
    cos = F.cosine_similarity(r_amp.flatten(1)[resolved], r32.flatten(1)[resolved], dim=1)
    assert cos.min().item() > 0.99, cos
    torch.testing.assert_close(r_amp, r32, rtol=1e-5, atol=1e-6)
    assert logits.dtype == torch.float32


def test_vat_eps_from_the_data():
    """eps 0: the references' value for mnist, svhn and the circles, eps_scale x the inputs' mean L2 norm
    otherwise (measured on the first training batch, kept in the checkpoint); eps > 0 is used as given."""
    assert REFERENCE_EPS == {"mnist": 0.3, "mnist5k": 0.3, "svhn": 2.5, "circles": 0.1}
    assert auto_eps("mnist5k", 100.0, 0.5) == 0.3 and auto_eps("circles", 100.0, 0.5) == 0.1
    assert auto_eps("digits", 4.0, 0.0325) == pytest.approx(0.13)
    info = DataInfo("digits", (1, 8, 8), 10, "image")
    torch.manual_seed(0)
    m = VAT(build_config(VATConfig, {}), info)
    assert m.cfg.eps == 0.0 and m.data_norm is None
    g = torch.Generator().manual_seed(3)
    batch = Batch(torch.rand(4, 1, 8, 8, generator=g), torch.arange(4), torch.rand(12, 1, 8, 8, generator=g))
    m.train_step(batch)
    want = batch.x_all.flatten(1).norm(dim=1).mean().item()
    assert m.data_norm == pytest.approx(want, rel=1e-6)
    assert m.eps(batch.x_u) == pytest.approx(0.0325 * want, rel=1e-6)
    x, logits = m.vat_batch(batch)  # the perturbation has that norm
    r = vat_perturbation(m.forward_frozen_bn, x, logits, m.eps(x))
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((16,), 0.0325 * want), rtol=1e-4, atol=0)
    m2 = VAT(build_config(VATConfig, {}), info)
    m2.load_state_dict(m.state_dict())
    assert m2.data_norm == m.data_norm  # a restored run keeps its eps
    m2.train_step(Batch(batch.x_l * 0.5, batch.y_l, batch.x_u * 0.5))
    assert m2.data_norm == m.data_norm
    assert VAT(build_config(VATConfig, {"eps": 2.0}), info).eps(batch.x_u) == 2.0
    assert VAT(build_config(VATConfig, {}), POINTS).eps(torch.ones(3, 2)) == 0.1  # circles: the slides' 0.1


def test_vat_schedule_is_vat_tf_linear_decay_and_beta1_switch():
    """vat_tf's train_semisup.py: from epoch lr_decay_start (0-based), lr * (end - epoch) / (end - start) and
    Adam beta1 mom2 = 0.5; before it lr and beta1 0.9. Off by default."""
    info = DataInfo("digits", (1, 8, 8), 10, "image")
    batch = Batch(torch.rand(4, 1, 8, 8), torch.arange(4), torch.rand(12, 1, 8, 8))
    torch.manual_seed(0)
    m = VAT(build_config(VATConfig, {"eps": 0.5, "lr_decay_start": 2, "lr_decay_end": 5}), info)
    opt = m.optimizers["opt"]
    seen = []
    for epoch in range(5):
        m.train_step(batch)
        seen.append((opt.param_groups[0]["lr"], opt.param_groups[0]["betas"]))
        m.end_epoch(epoch + 1)
    want = [(1e-3, (0.9, 0.999)), (1e-3, (0.9, 0.999)), (1e-3, (0.5, 0.999)), (2e-3 / 3, (0.5, 0.999)),
            (1e-3 / 3, (0.5, 0.999))]
    for (lr, betas), (wlr, wb) in zip(seen, want):
        assert lr == pytest.approx(wlr, rel=1e-9) and betas == wb
    m_off = VAT(build_config(VATConfig, {"eps": 0.5}), info)
    for epoch in range(3):
        m_off.train_step(batch)
        m_off.end_epoch(epoch + 1)
    assert m_off.optimizers["opt"].param_groups[0]["lr"] == 1e-3
    assert m_off.optimizers["opt"].param_groups[0]["betas"] == (0.9, 0.999)
    with pytest.raises(ConfigError, match="lr_decay_end"):
        build_config(VATConfig, {"lr_decay_start": 5, "lr_decay_end": 5})


def test_advgen_c_step_kl_is_zero_when_g_returns_x_with_bn():
    """advgen's C step: clean and generated predictions from the same batch statistics, so L_adv = 0 for
    G(x, z) = x (a BN classifier)."""
    torch.manual_seed(0)
    m = AdvGen(build_config(AdvGenConfig, {"arch": "conv_small"}), DataInfo("digits", (1, 8, 8), 10, "image"))
    m.gen = lambda x, z=None: x.clone()  # the identity generator
    g = torch.Generator().manual_seed(3)
    batch = Batch(torch.rand(4, 1, 8, 8, generator=g), torch.arange(4), torch.rand(12, 1, 8, 8, generator=g))
    out = m.c_step(batch)
    torch.testing.assert_close(out["loss_adv"], torch.zeros(()), atol=1e-7, rtol=0)


# ---- advgen ---------------------------------------------------------------------------------------
def test_advgen_pure_losses_by_hand():
    x = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    gx = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    torch.testing.assert_close(reconstruction_loss(x, gx), torch.tensor((5.0 + 25.0) / 2))
    adv, rec = torch.tensor(0.4), torch.tensor(2.0)
    torch.testing.assert_close(generator_objective(adv, rec, alpha=2.0, lambda_rec=0.5), torch.tensor(-0.8 + 1.0))
    torch.testing.assert_close(classifier_objective(torch.tensor(1.5), adv, alpha=2.0), torch.tensor(2.3))


def test_encoder_decoder_noise_enters_latent_code():
    torch.manual_seed(0)
    g = EncoderDecoder((2,), latent_dim=4, noise_dim=3, hidden=16, z_mode="concat")
    assert g.decoder[0].in_features == 7
    x = torch.randn(5, 2)
    z = torch.randn(5, 3)
    torch.testing.assert_close(g(x, z), g(x, z))
    assert not torch.allclose(g(x, z), g(x, z + 1.0))
    g_add = EncoderDecoder((2,), latent_dim=4, noise_dim=4, hidden=16, z_mode="add")
    z4 = torch.randn(5, 4)
    torch.testing.assert_close(g_add(x, z4), g_add.out(g_add.decoder(g_add.encoder(x) + z4)))
    img = EncoderDecoder((3, 8, 8), latent_dim=4, noise_dim=4, hidden=8)
    assert img.arch == "conv" and img(torch.rand(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    with pytest.raises(ConfigError, match="noise_dim"):
        build_config(AdvGenConfig, {"z_mode": "add", "latent_dim": 8, "noise_dim": 4})


def test_advgen_image_pictures_pair_x_with_g_of_x():
    torch.manual_seed(0)
    m = AdvGen(build_config(AdvGenConfig, {}), DataInfo("digits", (1, 8, 8), 10, "image"))
    assert m.gen.arch == "mlp"
    x = torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8)
    grid = m.pictures(x, torch.zeros(16, dtype=torch.long))["original_vs_adversarial"]
    assert grid.shape == (1 + 4 * 9, 1 + 8 * 9, 3)  # 32 images, 8 per row, 1-pixel padding
    first = torch.as_tensor(grid[1:9, 1:9, 0], dtype=torch.float32) / 255  # top-left: the original x[0]
    torch.testing.assert_close(first, x[0, 0].float() / 255, atol=1 / 255, rtol=0)


def _advgen(**kw):
    torch.manual_seed(0)
    return AdvGen(build_config(AdvGenConfig, kw), POINTS)


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    x_l = torch.randn(8, 2, generator=g)
    return Batch(x_l, (x_l.norm(dim=1) < 1).long(), torch.randn(32, 2, generator=g))


def _l_adv(m, x, z):
    with torch.no_grad():
        return kl_with_logits(m.net(x), m.net(m.gen(x, z))).item()


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _same(a, b):
    return all(torch.equal(u, v) for u, v in zip(a, b))


def _adversarial_game(**kw):
    """An advgen whose C fits the labels (so KL has something to gain) and whose G then attacks it."""
    m = _advgen(**kw)
    batch = _batch()
    z = torch.randn(len(batch.x_all), m.cfg.noise_dim)
    for _ in range(30):
        m.c_step(batch, z)
    return m, batch, z


def test_advgen_g_step_raises_l_adv_and_moves_only_g():
    m, batch, z = _adversarial_game(lambda_rec=0.0)
    before, c0, g0 = _l_adv(m, batch.x_all, z), _params(m.net), _params(m.gen)
    for _ in range(20):
        m.g_step(batch.x_all, z)
    assert _l_adv(m, batch.x_all, z) > before * 1.25
    assert _same(c0, _params(m.net)) and not _same(g0, _params(m.gen))
    assert all(p.requires_grad for p in m.net.parameters())  # C unfrozen again after the G step


def test_advgen_c_step_lowers_l_adv_and_moves_only_c():
    m, batch, z = _adversarial_game(lambda_rec=0.0)
    for _ in range(10):
        m.g_step(batch.x_all, z)
    unlabelled = Batch(batch.x_l[:0], batch.y_l[:0], batch.x_all)  # no labels: C's objective is alpha * L_adv
    before, c0, g0 = _l_adv(m, batch.x_all, z), _params(m.net), _params(m.gen)
    for _ in range(10):
        m.c_step(unlabelled, z)
    assert _l_adv(m, batch.x_all, z) < before * 0.8
    assert _same(g0, _params(m.gen)) and not _same(c0, _params(m.net))


def test_advgen_reconstruction_weight_pulls_g_toward_x():
    batch = _batch()
    x = batch.x_all
    z = torch.randn(len(x), 16, generator=torch.Generator().manual_seed(5))
    errs = {}
    for lam in (0.0, 10.0):
        m = _advgen(lambda_rec=lam)
        start = reconstruction_loss(x, m.gen(x, z)).item()
        for _ in range(30):
            m.g_step(x, z)
        errs[lam] = reconstruction_loss(x, m.gen(x, z)).item()
    assert errs[10.0] < 0.5 * start
    assert errs[10.0] < 0.5 * errs[0.0]


# ---- short runs on two circles ------------------------------------------------------------------
@pytest.mark.parametrize("method,config", [("vat", {"eps": 0.1}), ("advgen", {"lambda_rec": 10.0})])
def test_short_circles_run_learns(method, config):
    spec = RunSpec(method, DataSpec("circles", labels=8, options={"noise": 0.01, "factor": 0.5}), epochs=3,
                   seed=0, config={"steps_per_epoch": 100, **config})
    tr = Trainer(spec, progress=False)
    first = tr.run_epoch()
    last = tr.fit()
    assert last["test_error"] < 25.0, last["test_error"]  # chance is 50%
    key = "loss_ce" if method == "vat" else "loss_nll"
    assert last[key] < first[key]
    pic = tr.method.pictures(tr.x_val, tr.y_val)["decision_boundary"]
    assert pic.ndim == 3 and pic.shape[2] == 3
