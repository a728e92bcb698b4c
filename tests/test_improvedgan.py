"""ImprovedGAN and I2GAN: loss formulas against hand computations, the two players' phases, I2GAN's knobs,
and a short run on digits that has to learn."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from ssl_ray import config as C
from ssl_ray.data import Batch, DataInfo, DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.errors import ConfigError
from ssl_ray.methods import get_method
from ssl_ray.methods.i2gan import I2GAN, I2GANConfig
from ssl_ray.methods.improvedgan import (ImprovedGAN, ImprovedGANConfig, d_real_prob, feature_matching_loss,
                                         linear_decay, unlabelled_loss, weight_norm_data_init)
from ssl_ray.models import MLP, ConvGenerator, ConvNet, MLPGenerator

torch.set_num_threads(1)

DIGITS = DataInfo("digits", (1, 8, 8), 10, "image")


def make(cls, info=DIGITS, **over):
    torch.manual_seed(0)
    return cls(C.build(cls.Config, over), info)


def fake_batch(r=6, u=8, u2=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(r, 1, 8, 8, generator=g), torch.randint(0, 10, (r,), generator=g),
                 torch.rand(u, 1, 8, 8, generator=g), torch.rand(u2, 1, 8, 8, generator=g))


def params(module):
    return [p.detach().clone() for p in module.parameters()]


# ---- loss formulas ----------------------------------------------------------------------------------------
def test_unlabelled_loss_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    lu, lf = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    # D(x) = S/(S+1), S = sum_k exp(l_k): L_unl = 0.5 mean(-log D(x_u)) + 0.5 mean(-log(1 - D(G(z)))).
    s_u = [sum(math.exp(v) for v in row) for row in lu.tolist()]
    s_f = [sum(math.exp(v) for v in row) for row in lf.tolist()]
    hand = 0.5 * np.mean([-math.log(s / (s + 1)) for s in s_u]) + 0.5 * np.mean([-math.log(1 - s / (s + 1))
                                                                                 for s in s_f])
    assert_close(unlabelled_loss(lu, lf), torch.tensor(hand, dtype=torch.float64))
    assert_close(d_real_prob(lu), torch.tensor([s / (s + 1) for s in s_u], dtype=torch.float64))


def test_metric_learning_form_is_twice_improvedgan_unlabelled_loss():
    """Slides: L_u = (1/N) sum_i [log(1 + 1/sum_j e^{s_ij}) + log(1 + sum_j e^{s^_ij})], s_ij = f(x_i).w_j.
    That is exactly 2 x ImprovedGAN's L_unl (whose two terms carry a factor 0.5 each)."""
    g = torch.Generator().manual_seed(3)
    n, dim, k = 6, 5, 4
    f, f_hat = torch.randn(n, dim, generator=g, dtype=torch.float64), torch.randn(n, dim, generator=g,
                                                                                  dtype=torch.float64)
    w = torch.randn(k, dim, generator=g, dtype=torch.float64)
    hand = 0.0
    for i in range(n):
        s_i = sum(math.exp(float(f[i] @ w[j])) for j in range(k))
        s_hat_i = sum(math.exp(float(f_hat[i] @ w[j])) for j in range(k))
        hand += math.log(1 + 1 / s_i) + math.log(1 + s_hat_i)
    hand /= n
    assert_close(2 * unlabelled_loss(f @ w.T, f_hat @ w.T), torch.tensor(hand, dtype=torch.float64))


def test_feature_matching_norms_by_hand():
    real = torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]])            # mean (2, 1, 0)
    fake = torch.tensor([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [2.0, 2.0, 1.0]])  # mean (1, 1, 1): N' != N
    assert_close(feature_matching_loss(real, fake, "l2"), torch.tensor((1.0 + 0.0 + 1.0) / 3))
    assert_close(feature_matching_loss(real, fake, "l1"), torch.tensor((1.0 + 0.0 + 1.0) / 3))
    fake2 = fake * 2  # mean (2, 2, 2): differences (0, -1, -2)
    assert_close(feature_matching_loss(real, fake2, "l2"), torch.tensor(5.0 / 3))
    assert_close(feature_matching_loss(real, fake2, "l1"), torch.tensor(3.0 / 3))


def test_d_loss_is_cross_entropy_plus_weighted_unlabelled_loss():
    m = make(ImprovedGAN, unl_weight=0.7)
    b = fake_batch()
    torch.manual_seed(5)
    d = m.d_losses(b)
    assert_close(d["d"], d["lab"] + 0.7 * d["unl"])
    # L_lab recomputed by hand from D's logits (noise off: eval mode) is -mean log softmax_y.
    m.D.eval()
    logits = m.D(b.x_l).detach().double()
    hand = -np.mean([float(logits[i, y] - torch.log(torch.exp(logits[i]).sum())) for i, y in enumerate(b.y_l)])
    torch.manual_seed(5)
    assert_close(m.d_losses(b)["lab"].double(), torch.tensor(hand, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_linear_lr_decay_over_the_last_third():
    f = linear_decay(800, 1200)  # the reference CIFAR schedule: lr * min(3 - epoch/400, 1)
    for epoch in (0, 400, 800, 1000, 1100, 1200, 1300):
        assert f(epoch) == pytest.approx(min(max(3 - epoch / 400, 0.0), 1.0), abs=1e-12)
    assert linear_decay(0, 0)(10_000) == 1.0


def test_weight_norm_data_init_standardises_each_layer():
    torch.manual_seed(0)
    net = MLP(6, 3, (5, 4), weight_norm=True)  # no noise: the check below is deterministic
    x = torch.randn(64, 6) * 3 + 1
    assert weight_norm_data_init(net, x) == 3
    with torch.no_grad():
        h = x
        for layer in net.trunk[1:]:
            h = layer(h)
            if isinstance(layer, torch.nn.Linear):  # pre-activations, computed layer by layer by hand
                assert_close(h.mean(0), torch.zeros(h.shape[1]), atol=1e-5, rtol=0)
                assert_close(h.std(0, unbiased=False), torch.ones(h.shape[1]), atol=1e-4, rtol=0)
        logits = net(x)
    assert_close(logits.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    assert_close(logits.std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)


def test_data_init_runs_once_before_the_first_step_and_is_checkpointed():
    m = make(ImprovedGAN, ema_decay=0.9)
    assert not m.initialised
    calls = []
    orig = m.data_init
    m.data_init = lambda x: (calls.append(len(x)), orig(x))[1]
    b = fake_batch()
    m.train_step(b)
    m.train_step(b)
    assert calls == [len(b.x_all)] and m.initialised
    fresh = make(ImprovedGAN, ema_decay=0.9)
    fresh.load_state_dict(m.state_dict())
    assert fresh.initialised
    assert make(ImprovedGAN, data_init=False).initialised  # nothing to do


# ---- the two players ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ImprovedGAN, I2GAN])
def test_the_weight_average_follows_d_steps_not_g_steps(cls):
    """(That each step moves its own player only is checked for every method in test_methods_registry.py.)"""
    m = make(cls, ema_decay=0.5)
    b = fake_batch()
    m.data_init(b.x_all)
    assert m.ema is not None
    e0 = params(m.ema.shadow)
    m.d_step(b)
    assert any(not torch.equal(a, p) for a, p in zip(e0, m.ema.shadow.parameters()))
    e1 = params(m.ema.shadow)
    m.g_step(b.x_u2)
    assert all(torch.equal(a, p) for a, p in zip(e1, m.ema.shadow.parameters()))


def test_train_step_returns_finite_detached_losses_and_g_uses_second_batch():
    m = make(ImprovedGAN)
    seen = []
    orig = m.D.features
    m.D.features = lambda x: (seen.append(x), orig(x))[1]
    b = fake_batch(u2=9)
    out = m.train_step(b)
    assert set(out) == {"loss_lab", "loss_unl", "loss_g"}
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in out.values())
    # G step: real features from the independent second batch, N = T - R of it (the 8 unlabelled of the batch,
    # not the 9 the stream drew), then as many generated samples.
    assert torch.equal(seen[-2], b.x_u2[:8]) and len(seen[-1]) == 8


# ---- I2GAN -----------------------------------------------------------------------------------------------------
def test_tau_scales_exactly_the_gradient_of_the_unlabelled_loss():
    b = fake_batch()
    grads = {}
    for tau in (1.0, 3.0):
        m = make(I2GAN, tau=tau)
        torch.manual_seed(7)
        d = m.d_losses(b)
        grads[tau] = torch.autograd.grad(d["d"], m.optimizers["D"].param_groups[0]["params"])
        torch.manual_seed(7)
        d = m.d_losses(b)
        grads["lab", tau] = torch.autograd.grad(d["lab"], m.optimizers["D"].param_groups[0]["params"])
    for g1, g3, l1, l3 in zip(grads[1.0], grads[3.0], grads["lab", 1.0], grads["lab", 3.0]):
        assert_close(l1, l3)  # the labelled part is untouched
        assert_close(g3 - l3, 3.0 * (g1 - l1), rtol=1e-4, atol=1e-6)


def generated_sizes(m):
    sizes = []
    m.G.register_forward_hook(lambda mod, inp, out: sizes.append(len(out)))
    return sizes


@pytest.mark.parametrize("fake_in_unl, expect", [("batch", [8, 24]), ("n_fake", [24, 24])])
def test_n_fake_sets_the_generated_batch_size(fake_in_unl, expect):
    m = make(I2GAN, n_fake=24, fake_in_unl=fake_in_unl)
    sizes = generated_sizes(m)
    m.train_step(fake_batch(u=8, u2=8))
    assert sizes == expect  # [D step, G step]


def test_n_fake_changes_nothing_else():
    """Same seed, n_fake 0 (= N) vs 24: D's step and its losses are identical; only G's loss differs."""
    b = fake_batch()
    runs = {}
    for nf in (0, 24):
        m = make(I2GAN, n_fake=nf, ema_decay=0)
        torch.manual_seed(11)
        out = m.train_step(b)
        runs[nf] = (out, params(m.D))
    (o0, d0), (o1, d1) = runs[0], runs[24]
    assert_close(o0["loss_lab"], o1["loss_lab"])
    assert_close(o0["loss_unl"], o1["loss_unl"])
    for a, p in zip(d0, d1):
        assert_close(a, p)
    assert not torch.allclose(o0["loss_g"], o1["loss_g"])


def test_i2gan_with_tau_1_and_n_fake_n_is_improvedgan():
    b = fake_batch()
    res = []
    for cls, over in ((ImprovedGAN, {}), (I2GAN, {"tau": 1.0, "n_fake": 0, "fm_norm": "auto"})):
        m = make(cls, ema_decay=0.9, **over)
        torch.manual_seed(13)
        outs = [m.train_step(b) for _ in range(2)]
        res.append((outs, params(m.D) + params(m.G) + params(m.ema.shadow)))
    for k in ("loss_lab", "loss_unl", "loss_g"):
        assert_close(res[0][0][1][k], res[1][0][1][k])
    for a, p in zip(res[0][1], res[1][1]):
        assert_close(a, p)


def test_config_validation():
    with pytest.raises(ConfigError, match="tau"):
        C.build(I2GANConfig, {"tau": 0.5})
    with pytest.raises(ConfigError, match="n_fake"):
        C.build(I2GANConfig, {"n_fake": -1})
    with pytest.raises(ConfigError, match="fake_in_unl"):
        C.build(I2GANConfig, {"fake_in_unl": "all"})
    with pytest.raises(ConfigError, match="labeled_ratio"):
        C.build(ImprovedGANConfig, {"batch_size": 10, "labeled_ratio": 0.99})
    with pytest.raises(ConfigError, match="lr_decay_end"):
        C.build(ImprovedGANConfig, {"lr_decay_start": 10, "lr_decay_end": 5})
    assert get_method("i2gan") is I2GAN and get_method("improvedgan") is ImprovedGAN


# ---- architectures from the data's shape -----------------------------------------------------------------------
def test_architectures_follow_the_data():
    m = make(ImprovedGAN)  # grey 8x8 images: the MNIST MLPs, squared feature matching, lr 3e-3
    assert isinstance(m.D, MLP) and isinstance(m.G, MLPGenerator)
    assert [l.out_features for l in m.D.trunk if isinstance(l, torch.nn.Linear)] == [1000, 500, 250, 250, 250]
    assert m.fm_norm == "l2" and m.optimizers["D"].param_groups[0]["lr"] == 3e-3
    assert m.optimizers["G"].param_groups[0]["betas"] == (0.5, 0.999)
    svhn = make(ImprovedGAN, DataInfo("svhn", (3, 32, 32), 10, "image"))
    assert isinstance(svhn.D, ConvNet) and svhn.D.feature_dim == 128 and isinstance(svhn.G, ConvGenerator)
    assert svhn.fm_norm == "l1" and svhn.optimizers["D"].param_groups[0]["lr"] == 3e-4
    pts = make(ImprovedGAN, DataInfo("circles", (2,), 2, "points"), fm_norm="l1", lr=1e-3)
    assert isinstance(pts.D, MLP) and pts.D.feature_dim == 100 and pts.fm_norm == "l1"
    assert pts.pictures(torch.zeros(3, 2), torch.zeros(3)) == {}
    conv = make(ImprovedGAN, arch="conv_small")
    assert isinstance(conv.D, ConvNet) and conv.fm_norm == "l1"
    img = m.pictures(torch.zeros(3, 1, 8, 8), torch.zeros(3))["samples"]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


# ---- learning ---------------------------------------------------------------------------------------------------
def test_short_digits_run_learns():
    spec = RunSpec("i2gan", DataSpec("digits", labels=200), epochs=3, seed=0,
                   config={"ema_decay": 0, "steps_per_epoch": 15, "batch_size": 100})
    out = Trainer(spec, progress=False).fit()
    assert out["test_error"] < 40.0  # chance is 90%
    for k in ("confidence", "d_real", "d_fake"):
        assert 0.0 <= out[k] <= 1.0
    assert out["d_real"] > out["d_fake"]
    assert {"loss_lab", "loss_unl", "loss_g"} <= set(out)
