"""VCAGAN and its baselines (vanilla GAN, InfoGAN): losses against hand computations, the learned prior,
and a short CPU run on the Gaussian clusters (which player each phase updates: test_methods_registry.py)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from ssl_ray import config as C
from ssl_ray.data import Batch, DataInfo, DataSpec
from ssl_ray.data.synthetic import gaussian_generation_metrics
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.errors import ConfigError, SSLRayError
from ssl_ray.methods import get_method
from ssl_ray.methods._cgan import (classifier_gradient_penalty, d_adversarial_loss, g_adversarial_loss,
                                   input_gradient_penalty, parse_prior)
from ssl_ray.methods.vcagan import prior_ema, virtual_labels
from ssl_ray.models.equalized import EqualizedConv2d, EqualizedLinear
from ssl_ray.nn.metrics import categorical_entropy

torch.set_num_threads(1)

POINTS = DataInfo("gaussians", (2,), 4, "points")
SMALL = {"width": 32, "depth": 2, "batch_size": 16}


def make(name: str, info: DataInfo = POINTS, **over):
    cls = get_method(name)
    cfg = C.build(cls.Config, {**SMALL, **over})
    torch.manual_seed(0)
    return cls(cfg, info)


def sp(v: float) -> float:
    return math.log1p(math.exp(v))


# ---- loss formulas -------------------------------------------------------------------------------------
def test_cagan_adversarial_losses_match_hand_computation():
    a_r = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.2, -1.0]])
    logits_r = torch.tensor([[0.1, 2.0, 0.0], [3.0, 0.0, 1.0]])  # argmax 1, 0 -> a_r.c_r = -2.0, 0.3
    a_f = torch.tensor([[0.7, 0.1, -0.4], [2.0, -1.5, 0.25]])
    c_f = F.one_hot(torch.tensor([2, 1]), 3).float()  # a_f.c_f = -0.4, -1.5
    c_r = virtual_labels(logits_r)
    torch.testing.assert_close(c_r, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    v_r, v_f = (a_r * c_r).sum(1), (a_f * c_f).sum(1)
    want_d = (sp(2.0) + sp(-0.3)) / 2 + (sp(-0.4) + sp(-1.5)) / 2
    want_g = (sp(0.4) + sp(1.5)) / 2
    torch.testing.assert_close(d_adversarial_loss(v_r, v_f), torch.tensor(want_d))
    torch.testing.assert_close(g_adversarial_loss(v_f), torch.tensor(want_g))


def test_vcagan_discriminator_loss_sums_its_terms_with_their_weights():
    m = make("vcagan", lambda_cls=0.7, lambda_creg=3.0, lambda_r1=0.5)
    x = torch.randn(6, 2).requires_grad_(True)
    x_f, c_f = torch.randn(6, 2), torch.tensor([0, 1, 2, 3, 4, 5])
    loss, parts, logits_r = m.discriminator_loss(x, x_f, c_f)
    want = parts["loss_adv_d"] + 0.7 * parts["loss_cls"] + 3.0 * parts["loss_creg"] + 0.5 * parts["loss_r1"]
    torch.testing.assert_close(loss.detach(), want)
    # each part recomputed independently from D's outputs
    a_f, l_f = m.D(x_f)
    a_r, l_r = m.D(x)
    torch.testing.assert_close(logits_r, l_r)
    k = l_r.argmax(1)
    v_r = a_r[torch.arange(6), k]
    v_f = a_f[torch.arange(6), c_f]
    torch.testing.assert_close(parts["loss_adv_d"], (F.softplus(-v_r) + F.softplus(v_f)).mean().detach())
    logp = torch.log_softmax(l_f, 1)
    torch.testing.assert_close(parts["loss_cls"], -logp[torch.arange(6), c_f].mean().detach())


def test_classifier_gradient_penalty_equals_analytic_linear_softmax_gradient():
    torch.manual_seed(1)
    W, b = torch.randn(5, 3), torch.randn(5)
    x = torch.randn(7, 3, requires_grad=True)
    loss = classifier_gradient_penalty(x @ W.T + b, x)
    # d softmax_k / dx = q_k (W_k - sum_j q_j W_j) for the most probable class k
    with torch.no_grad():
        q = torch.softmax(x @ W.T + b, 1)
        k = q.argmax(1)
        grad = q[torch.arange(7), k, None] * (W[k] - q @ W)
        want = grad.pow(2).sum(1).mean()
    torch.testing.assert_close(loss.detach(), want)


def test_classifier_gradient_penalty_matches_finite_differences_on_an_mlp():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    x = torch.randn(5, 2, dtype=torch.double, requires_grad=True)
    got = classifier_gradient_penalty(net(x), x)

    def maxprob(xx):
        return torch.softmax(net(xx), 1).max(1).values

    eps, g = 1e-6, torch.zeros(5, 2, dtype=torch.double)
    with torch.no_grad():
        for d in range(2):
            e = torch.zeros(1, 2, dtype=torch.double)
            e[0, d] = eps
            g[:, d] = (maxprob(x + e) - maxprob(x - e)) / (2 * eps)
    torch.testing.assert_close(got.detach(), g.pow(2).sum(1).mean(), rtol=1e-6, atol=1e-9)


def test_r1_penalty_of_a_linear_critic_is_its_squared_weight_norm():
    w = torch.tensor([3.0, -4.0])
    x = torch.randn(4, 2, requires_grad=True)
    torch.testing.assert_close(input_gradient_penalty(x @ w, x), torch.tensor(25.0))


def test_penalties_are_differentiable_w_r_t_the_network():
    m = make("vcagan")
    x = torch.randn(8, 2, requires_grad=True)
    _, logits = m.D(x)
    pen = classifier_gradient_penalty(logits, x)
    grads = torch.autograd.grad(pen, list(m.D.parameters()), allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


# ---- the learned prior ---------------------------------------------------------------------------------
def test_prior_ema_formula():
    prior = torch.tensor([0.25, 0.25, 0.5])
    q = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    torch.testing.assert_close(prior_ema(prior, q, 0.9),
                               torch.tensor([0.9 * 0.25 + 0.1 * 0.5, 0.9 * 0.25 + 0.1 * 0.25, 0.9 * 0.5 + 0.1 * 0.25]))


def test_train_step_moves_the_prior_by_an_ema_of_the_batch_mean_class_probability():
    m = make("vcagan", prior_decay=0.9)
    x = torch.randn(16, 2)
    with torch.no_grad():
        q = torch.softmax(m.D(x)[1], 1).mean(0)  # the pre-update classifier, as in Algorithm 1
    before = m.prior.clone()
    torch.testing.assert_close(before, torch.full((8,), 1 / 8))
    m.train_step(Batch(torch.empty(0, 2), torch.empty(0, dtype=torch.long), x))
    torch.testing.assert_close(m.prior, 0.9 * before + 0.1 * q)
    torch.testing.assert_close(m.prior.sum(), torch.tensor(1.0))


def test_fixed_priors_do_not_move_and_parse():
    m = make("infogan", d_c=4, prior="1,2,3,4")
    torch.testing.assert_close(m.prior, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    m.train_step(Batch(torch.empty(0, 2), torch.empty(0, dtype=torch.long), torch.randn(16, 2)))
    torch.testing.assert_close(m.prior, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert parse_prior("uniform", 4) == [0.25] * 4
    for bad in ("0.5,0.5", "a,b,c,d", "1,1,1,-1"):
        with pytest.raises(ConfigError, match="prior"):
            C.build(get_method("infogan").Config, {"d_c": 4, "prior": bad})


def test_latent_sizes_follow_the_data_as_in_the_paper_unless_given():
    # d_z / d_c 0 (the defaults): the paper's Gaussians setting on points, its MNIST setting on images.
    tiny = DataInfo("tiny", (1, 8, 8), 10, "image")
    for name in ("vcagan", "infogan", "gan"):
        assert (make(name).d_z, make(name).d_c) == (16, 8), name
        m = make(name, info=tiny, channels=4)
        assert (m.d_z, m.d_c, m.num_clusters, len(m.prior)) == (128, 16, 16, 16), name
        z, c = m.sample_latent(5)
        assert z.shape == (5, 128) and int(c.max()) < 16
        assert m.G(z, m.onehot(c)).shape == (5, 1, 8, 8)
    a, logits = make("vcagan", info=tiny, channels=4).D(torch.rand(3, 1, 8, 8))
    assert a.shape == (3, 16) and logits.shape == (3, 16)
    # given values win; a fixed prior given as weights sets d_c 0 to their number
    m = make("vcagan", info=tiny, channels=4, d_z=7, d_c=5)
    assert (m.d_z, m.d_c) == (7, 5)
    m = make("infogan", prior="1,2,3,4")
    assert m.d_c == 4
    torch.testing.assert_close(m.prior, torch.tensor([0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(ConfigError, match="3 weights given but d_c = 4"):
        C.build(get_method("infogan").Config, {"d_c": 4, "prior": "1,2,3"})
    with pytest.raises(ConfigError, match="positive"):
        C.build(get_method("infogan").Config, {"prior": "1,0,3"})


def test_a_checkpoint_of_other_network_sizes_is_one_clear_error():
    # a run of the images' defaults before d_z / d_c followed the data (16 / 8), resumed with today's (128 / 16)
    data = DataSpec("digits", labels=20, val_size=100)
    old = Trainer(RunSpec("vcagan", data, epochs=1, seed=0, config={"d_z": 16, "d_c": 8, "channels": 4}),
                  progress=False).state()
    now = Trainer(RunSpec("vcagan", data, epochs=1, seed=0, config={"channels": 4}), progress=False)
    with pytest.raises(SSLRayError, match=r"the checkpoint's G does not fit the vcagan network this config builds "
                                          r"\(size mismatch for net\.0\..*torch\.Size\(\[.*24\]\).*144\]\)"):
        now.restore(old)


def test_prior_metrics_and_checkpoint_round_trip():
    m = make("vcagan", d_c=4)
    m.prior = torch.tensor([0.7, 0.295, 0.005, 0.0])
    met = m.prior_metrics()
    assert met["active_categories"] == 2.0
    torch.testing.assert_close(torch.tensor(met["prior_entropy"]),
                               torch.tensor(-(0.7 * math.log(0.7) + 0.295 * math.log(0.295) + 0.005 * math.log(0.005))))
    torch.testing.assert_close(torch.tensor(categorical_entropy(torch.full((8,), 1 / 8))), torch.tensor(math.log(8)))
    state = m.state_dict()
    m2 = make("vcagan", d_c=4)
    m2.load_state_dict(state)
    torch.testing.assert_close(m2.prior, m.prior)


# ---- generator losses ----------------------------------------------------------------------------------
def _g_grads(name: str, lambda_cls: float) -> list[torch.Tensor]:
    m = make(name, lambda_cls=lambda_cls)
    torch.manual_seed(3)
    z, c = m.sample_latent(16)
    loss = m.generator_loss(m.G(z, m.onehot(c)), c)
    return torch.autograd.grad(loss, list(m.G.parameters()))


def test_vcagan_generator_loss_has_no_classification_term():
    for g0, g1 in zip(_g_grads("vcagan", 0.0), _g_grads("vcagan", 50.0)):
        torch.testing.assert_close(g0, g1)
    m = make("vcagan")
    x_f, c = torch.randn(5, 2), torch.tensor([1, 0, 7, 3, 3])
    a_f, _ = m.D(x_f)
    torch.testing.assert_close(m.generator_loss(x_f, c),
                               F.softplus(-a_f[torch.arange(5), c]).mean())


def test_infogan_generator_loss_has_the_classification_term():
    g0, g1 = _g_grads("infogan", 0.0), _g_grads("infogan", 50.0)
    assert max(float((a - b).abs().max()) for a, b in zip(g0, g1)) > 1e-3
    m = make("infogan", lambda_cls=2.0)
    x_f, c = torch.randn(5, 2), torch.tensor([1, 0, 7, 3, 3])
    s_f, l_f = m.D(x_f)
    want = F.softplus(-s_f[:, 0]).mean() + 2.0 * F.cross_entropy(l_f, c)
    torch.testing.assert_close(m.generator_loss(x_f, c), want)


def test_gan_has_no_classifier_head_and_only_adversarial_losses():
    m = make("gan")
    a, logits = m.D(torch.randn(3, 2))
    assert a.shape == (3, 1) and logits.shape == (3, 0)
    x = torch.randn(4, 2, requires_grad=True)
    x_f = torch.randn(4, 2)
    loss, parts, _ = m.discriminator_loss(x, x_f, torch.zeros(4, dtype=torch.long))
    s_r, s_f = m.D(x)[0][:, 0], m.D(x_f)[0][:, 0]
    torch.testing.assert_close(parts["loss_adv_d"], (F.softplus(-s_r).mean() + F.softplus(s_f).mean()).detach())
    torch.testing.assert_close(loss.detach(), parts["loss_adv_d"] + parts["loss_r1"])


def test_gan_predicts_the_category_of_the_nearest_generated_sample():
    m = make("gan", d_c=4, nn_per_category=5)

    class CentreG(nn.Module):  # category k -> a tight blob at centre k
        training = False
        centres = torch.tensor([[-2.0, 2.0], [2.0, 1.0], [0.0, -2.0], [1.0, -1.0]])

        def forward(self, z, c_onehot):
            return c_onehot @ self.centres + 0.01 * z[:, :2]

    m.G = CentreG()
    x = torch.tensor([[1.9, 1.1], [-2.1, 2.0], [1.0, -0.9], [0.1, -2.2]])
    assert m.predict(x).argmax(1).tolist() == [1, 0, 3, 2]


def test_exported_gan_classifier_predicts_like_the_method():
    from ssl_ray.export import classifier_module

    m = make("gan", nn_per_category=8)
    x = torch.randn(32, 2)
    assert torch.equal(classifier_module(m)(x), m.predict(x))


# (which parameters each phase moves: tests/test_methods_registry.py, for every method)


def test_equalized_layers_scale_unit_weights_by_the_he_constant():
    lin = EqualizedLinear(8, 3, gain=2.0)
    x = torch.randn(4, 8)
    torch.testing.assert_close(lin(x), x @ (lin.weight * 2.0 / math.sqrt(8)).T + lin.bias)
    conv = EqualizedConv2d(2, 3, 3, padding=1)
    assert conv.scale == pytest.approx(math.sqrt(2.0) / math.sqrt(18))
    torch.testing.assert_close(lin.bias, torch.zeros(3))


def test_gaussian_generation_metrics():
    pts = torch.tensor([[-2.0, 2.0], [2.0, 1.1], [2.1, 1.0], [5.0, 5.0]])  # one far away
    met = gaussian_generation_metrics(pts)
    torch.testing.assert_close(torch.tensor(met["gen_off_cluster"]), torch.tensor(0.25))
    shares = [met[f"gen_share_{k}"] for k in range(4)]
    torch.testing.assert_close(torch.tensor(shares), torch.tensor([1 / 3, 2 / 3, 0.0, 0.0]))
    want_tv = 0.5 * (abs(1 / 3 - 0.1) + abs(2 / 3 - 0.4) + 0.2 + 0.3)
    torch.testing.assert_close(torch.tensor(met["gen_share_tv"]), torch.tensor(want_tv))


def test_conv_networks_on_images_train_and_draw_a_category_grid():
    info = DataInfo("tiny", (1, 8, 8), 10, "image")
    m = make("vcagan", info=info, d_c=3, d_z=4, channels=4, width=16)
    out = m.train_step(Batch(torch.empty(0, 1, 8, 8), torch.empty(0, dtype=torch.long), torch.rand(4, 1, 8, 8)))
    assert all(torch.isfinite(v) for v in out.values())
    grid = m.pictures(None, None)["generated"]
    assert grid.shape == (8 * 9 + 1, 3 * 9 + 1, 3)  # 8 rows of codes, 3 category columns, 1-px padding


# ---- a short run ---------------------------------------------------------------------------------------
def test_short_gaussians_run_learns_to_put_samples_on_the_clusters():
    # The paper's lr (1e-3 on equalized weights) needs thousands of steps to spread G's output over the
    # clusters; a 10x larger step size shows the same learning in 150 steps of a small network.
    cfg = {"width": 64, "depth": 2, "batch_size": 64, "steps_per_epoch": 150, "lr": 1e-2}
    tr = Trainer(RunSpec("vcagan", DataSpec("gaussians", labels=4), epochs=1, seed=0, config=cfg), progress=False)
    untrained = tr.method.eval_metrics(tr.x_val, tr.y_val)["gen_off_cluster"]
    m = tr.fit()
    for k in ("val_error", "test_error", "test_nmi", "val_nmi", "prior_entropy", "gen_off_cluster"):
        assert math.isfinite(m[k]), k
    assert untrained > 0.6 and m["gen_off_cluster"] < untrained - 0.3
    torch.testing.assert_close(sum(m[f"prior_{k}"] for k in range(8)), 1.0, rtol=0, atol=1e-5)
    assert m["prior_entropy"] < math.log(8) - 1e-4  # the prior has left the uniform start
    assert m["val_error"] < 60.0  # better than a single cluster (60% wrong)
    assert 2 <= m["real_active_categories"] <= 8
