"""Method `entropy` (Bansal & Zepeda): MEL, NBEL and the CAM locality penalty, the R/T batch, errors, a short run."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from ssl_ray import config as C
from ssl_ray.data import BatchStream, DataSpec, load_dataset, load_splits
from ssl_ray.data.base import DataInfo
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.errors import ConfigError
from ssl_ray.methods.entropy import Entropy, EntropyConfig, locality_loss, locality_penalty, negative_batch_entropy
from ssl_ray.nn.functional import entropy as mean_entropy
from ssl_ray.models import MLP, ConvNet

torch.set_num_threads(1)

LN2, LN3 = math.log(2.0), math.log(3.0)
UNIFORM = [0.0, 0.0, 0.0]  # logits of (1/3, 1/3, 1/3)
ONE_HOT = [0.0, -200.0, -200.0]  # softmax is exactly (1, 0, 0) in float32
MIXED = [math.log(0.5), math.log(0.25), math.log(0.25)]


def logits(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# ---- J_M and J_B against hand computations ---------------------------------------------------------------
def test_mean_entropy_hand_values():
    assert_close(mean_entropy(logits(UNIFORM)), torch.tensor(LN3))
    assert_close(mean_entropy(logits(ONE_HOT)), torch.tensor(0.0))
    assert_close(mean_entropy(logits(MIXED)), torch.tensor(1.5 * LN2))  # .5 ln2 + 2 * .25 ln4
    assert_close(mean_entropy(logits(UNIFORM, ONE_HOT, MIXED)), torch.tensor((LN3 + 0.0 + 1.5 * LN2) / 3))


def test_negative_batch_entropy_hand_values():
    spread = logits([0, -200, -200], [-200, 0, -200], [-200, -200, 0])  # mean (1/3, 1/3, 1/3)
    assert_close(negative_batch_entropy(spread), torch.tensor(-LN3))
    collapsed = logits(ONE_HOT, ONE_HOT)  # mean (1, 0, 0)
    assert_close(negative_batch_entropy(collapsed), torch.tensor(0.0))
    # mean of uniform and one-hot: (2/3, 1/6, 1/6)
    expected = 2 / 3 * math.log(2 / 3) + 2 * (1 / 6) * math.log(1 / 6)
    assert_close(negative_batch_entropy(logits(UNIFORM, ONE_HOT)), torch.tensor(expected))
    # mean of (.5, .25, .25) and its permutation (.25, .5, .25): (.375, .375, .25)
    perm = [MIXED[1], MIXED[0], MIXED[2]]
    expected = 2 * 0.375 * math.log(0.375) + 0.25 * math.log(0.25)
    assert_close(negative_batch_entropy(logits(MIXED, perm)), torch.tensor(expected))


def test_nbel_is_minimised_by_spread_predictions():
    torch.manual_seed(0)
    k = 5
    z = (torch.randn(20, k) * 3 + torch.tensor([4.0, 0, 0, 0, 0])).requires_grad_(True)  # mostly class 0
    start = negative_batch_entropy(z).item()
    opt = torch.optim.Adam([z], lr=0.2)
    for _ in range(150):
        opt.zero_grad()
        negative_batch_entropy(z).backward()
        opt.step()
    mean_q = z.detach().softmax(1).mean(0)
    assert start > -math.log(k) + 0.3
    assert_close(mean_q, torch.full((k,), 1.0 / k), atol=2e-3, rtol=0)
    assert_close(negative_batch_entropy(z.detach()), torch.tensor(-math.log(k)), atol=1e-4, rtol=0)


# ---- J_L --------------------------------------------------------------------------------------------------
def brute_force_locality(c: np.ndarray) -> float:
    """sum over 4 directions of sum_k ||C_{g_k}||_2 with g_k the first k columns/rows from that side."""
    h, w = c.shape
    total = 0.0
    for k in range(1, w + 1):
        left = [c[i, j] for i in range(h) for j in range(k)]
        right = [c[i, j] for i in range(h) for j in range(w - k, w)]
        total += math.sqrt(sum(v * v for v in left)) + math.sqrt(sum(v * v for v in right))
    for k in range(1, h + 1):
        top = [c[i, j] for i in range(k) for j in range(w)]
        bottom = [c[i, j] for i in range(h - k, h) for j in range(w)]
        total += math.sqrt(sum(v * v for v in top)) + math.sqrt(sum(v * v for v in bottom))
    return total


@pytest.mark.parametrize("shape", [(6, 6), (5, 7), (1, 4)])
def test_locality_penalty_equals_brute_force(shape):
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(3, *shape, generator=g, dtype=torch.float64)
    got = locality_penalty(maps)
    want = torch.tensor([brute_force_locality(m.numpy()) for m in maps], dtype=torch.float64)
    assert_close(got, want)


def test_single_pixel_scores_the_same_anywhere():
    # one value v at (i, j) of an H x W map lies in W - j + 1 left groups and j right groups (1-based): W + 1;
    # likewise H + 1 row groups. The penalty prefers compact maps, not central ones.
    for i, j in [(0, 0), (3, 4), (6, 2)]:
        c = torch.zeros(7, 5, dtype=torch.float64)
        c[i, j] = -2.0
        assert_close(locality_penalty(c), torch.tensor((5 + 1 + 7 + 1) * 2.0, dtype=torch.float64))


def test_centre_concentrated_map_scores_lower_than_border_map():
    n = 8
    centre = torch.zeros(n, n)
    centre[3:5, 3:5] = 1.0
    border = torch.ones(n, n)
    border[1:-1, 1:-1] = 0.0
    border *= centre.norm() / border.norm()  # same total L2 energy
    assert_close(centre.norm(), border.norm())
    assert locality_penalty(centre) < 0.8 * locality_penalty(border)


def test_locality_loss_top_and_weighted():
    g = torch.Generator().manual_seed(2)
    cams = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64)
    probs = torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.1, 0.4]], dtype=torch.float64)
    bf = [[brute_force_locality(cams[t, k].numpy()) for k in range(3)] for t in range(2)]
    assert_close(locality_loss(cams, probs, "top"), torch.tensor((bf[0][1] + bf[1][0]) / 2, dtype=torch.float64))
    weighted = sum(float(probs[t, k]) * bf[t][k] for t in range(2) for k in range(3)) / 2
    assert_close(locality_loss(cams, probs, "weighted"), torch.tensor(weighted, dtype=torch.float64))


def test_locality_gradient_is_finite_on_zero_regions():
    cam = torch.zeros(1, 4, 4)
    cam[0, 1:3, 1:3] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    cam.requires_grad_(True)
    locality_penalty(cam).sum().backward()
    assert torch.isfinite(cam.grad).all()
    assert cam.grad[0, 1:3, 1:3].abs().min() > 0


# ---- the R/T batch ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("ratio", [0.25, 0.4, 0.5, 0.7, 0.9])
def test_batch_composition_honours_r_over_t(ratio):
    splits = load_splits(DataSpec("digits", labels=50), seed=0)
    stream = BatchStream(splits, 40, ratio, seed=0)
    r = round(40 * ratio)
    lab_x = torch.as_tensor(np.asarray(splits.raw.x_train)[splits.lab_idx]).float() / 255
    for _ in range(3):
        b = stream.next()
        assert (len(b.x_l), len(b.y_l), len(b.x_u), len(b.x_all)) == (r, r, 40 - r, 40)
        # every labelled sample comes from the labelled set
        assert all(bool((lab_x == xi).flatten(1).all(1).any()) for xi in b.x_l)


def test_trainer_uses_the_configured_ratio():
    tr = Trainer(RunSpec("entropy", DataSpec("digits", labels=50), epochs=1, seed=0,
                         config={"batch_size": 50, "labeled_ratio": 0.6}), progress=False)
    assert (tr.stream.r, tr.stream.u) == (30, 20)


def _digits_method(**overrides) -> Entropy:
    info = load_dataset(DataSpec("digits")).info
    return Entropy(C.build(EntropyConfig, overrides), info)


def test_ce_term_uses_exactly_the_r_labelled_samples():
    splits = load_splits(DataSpec("digits", labels=50), seed=0)
    batch = BatchStream(splits, 50, 0.3, seed=0).next()  # R = 15
    torch.manual_seed(0)
    m = _digits_method(arch="mlp", alpha=0.5, beta=0.2)  # MLP without BN: logits of x_l do not depend on x_u
    net0 = copy.deepcopy(m.net)
    out = m.train_step(batch)
    with torch.no_grad():
        lab = net0(batch.x_l)
        p_all = net0(batch.x_all).softmax(1).double()
    ce_r = -lab.log_softmax(1)[torch.arange(15), batch.y_l].sum() / 15
    assert_close(out["loss_ce"], ce_r)
    h = -(p_all * p_all.log()).sum(1)
    assert_close(out["loss_mel"].double(), h.mean(), rtol=1e-5, atol=1e-6)  # over all T = 50
    pm = p_all.mean(0)
    assert_close(out["loss_nbel"].double(), (pm * pm.log()).sum(), rtol=1e-5, atol=1e-6)
    assert_close(out["loss_total"], out["loss_ce"] + 0.5 * out["loss_mel"] + 0.2 * out["loss_nbel"])
    assert not torch.equal(net0.head.weight, m.net.head.weight)  # the step updated the net


# ---- architecture and errors ------------------------------------------------------------------------------
def test_nonzero_gamma_on_points_is_a_clear_error():
    info = load_dataset(DataSpec("circles")).info
    Entropy(C.build(EntropyConfig, {"gamma": 0.0}), info)  # fine without the locality penalty
    with pytest.raises(ConfigError, match=r"gamma.*circles"):
        Entropy(C.build(EntropyConfig, {"gamma": 0.1}), info)
    with pytest.raises(ConfigError, match="gamma"):
        Trainer(RunSpec("entropy", DataSpec("circles"), epochs=1, config={"gamma": 0.1}), progress=False)


def test_nonzero_gamma_with_mlp_is_a_clear_error():
    with pytest.raises(ConfigError, match=r"gamma.*arch=mlp"):
        C.build(EntropyConfig, {"gamma": 0.1, "arch": "mlp"})


def test_auto_arch_is_a_conv_net_on_images():
    assert isinstance(_digits_method(gamma=0.1).net, ConvNet) and _digits_method().net.arch == "conv_small"
    colour = Entropy(C.build(EntropyConfig, {"gamma": 0.1}), DataInfo("fake", (3, 32, 32), 10, "image"))
    assert colour.net.arch == "conv_large"
    assert isinstance(Entropy(C.build(EntropyConfig, {}), load_dataset(DataSpec("circles")).info).net, MLP)


def test_defaults_follow_the_paper():
    cfg = C.build(EntropyConfig, {})
    assert (cfg.alpha, cfg.labeled_ratio, cfg.loc_mode) == (0.8, 0.8, "top")


# ---- a short run that learns ------------------------------------------------------------------------------
def test_short_digits_run_learns():
    spec = RunSpec("entropy", DataSpec("digits", labels=50), epochs=3, seed=0,
                   config={"steps_per_epoch": 25, "batch_size": 64, "beta": 0.1, "gamma": 0.001})
    tr = Trainer(spec, progress=False)
    hist = [tr.run_epoch() for _ in range(3)]
    assert hist[-1]["test_error"] < 35.0  # chance is 90%
    assert hist[-1]["loss_ce"] < hist[0]["loss_ce"]
    assert {"loss_ce", "loss_mel", "loss_nbel", "loss_loc", "loss_total"} <= set(hist[-1])
    pics = tr.method.pictures(tr.x_val, tr.y_val)
    assert pics["cam"].dtype == np.uint8 and pics["cam"].ndim == 3 and pics["cam"].shape[2] == 3


def test_search_space_is_valid():
    from pathlib import Path

    from ssl_ray.tuning.spaces import load_space

    space = load_space(Path(__file__).parents[1] / "search_spaces" / "entropy.yaml")
    assert space.method == "entropy" and {"labeled_ratio", "alpha", "beta", "gamma"} <= set(space.search)
