"""Pseudo-Label, Mean Teacher, FixMatch and the augmentation they use: losses and schedules against hand
computations, the EMA teacher's update, and the views' determinism, ranges and data-parallel exactness.
(The registry-driven tests run their train steps, parameter movement and exact resume.)"""
import json
import math
import os
import socket

import pytest
import torch
from click.testing import CliRunner

from ssl_ray.cli import main
from ssl_ray.config import build
from ssl_ray.data import Batch, DataInfo
from ssl_ray.data.augment import (RANDAUGMENT_OPS, augment, augment_batch, cutout, flip_allowed, flip_and_shift,
                                  rand_augment, step_seed)
from ssl_ray.errors import ConfigError
from ssl_ray.methods import get_method
from ssl_ray.methods._baselines import (cosine_decay, linear_ramp, pseudo_label_loss, sigmoid_rampup,
                                        softmax_mse)

DIGITS = DataInfo("digits", (1, 8, 8), 10, "image")


# ---- schedules -----------------------------------------------------------------------------------------
def test_linear_ramp_by_hand():
    assert [linear_ramp(t, 10, 30) for t in (0, 9, 10, 15, 20, 29, 30, 99)] == [0, 0, 0, 0.25, 0.5, 0.95, 1, 1]
    assert linear_ramp(5, 5, 5) == 1.0 and linear_ramp(4, 5, 5) == 0.0  # T1 = T2: a step


def test_sigmoid_rampup_by_hand():
    assert sigmoid_rampup(0, 100) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(50, 100) == pytest.approx(math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(90, 100) == pytest.approx(math.exp(-5.0 * 0.01))
    assert sigmoid_rampup(100, 100) == 1.0 and sigmoid_rampup(7, 0) == 1.0


def test_cosine_decay_by_hand():
    assert cosine_decay(0, 1000) == 1.0
    assert cosine_decay(500, 1000) == pytest.approx(math.cos(7 * math.pi / 32))
    assert cosine_decay(1000, 1000) == pytest.approx(math.cos(7 * math.pi / 16))  # ~0.195, never 0
    assert cosine_decay(5000, 1000) == cosine_decay(1000, 1000)


# ---- losses ----------------------------------------------------------------------------------------------
def _ce(logits, k):
    return -logits[k] + math.log(sum(math.exp(v) for v in logits))


def test_pseudo_label_loss_masks_by_the_targets_confidence():
    target = torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 6.0]])  # confident, unsure, confident
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.3, 0.2, 0.1], [0.0, -1.0, 1.0]], requires_grad=True)
    conf = [math.exp(4) / (math.exp(4) + 2), None, math.exp(6) / (math.exp(6) + 2)]
    assert conf[0] > 0.9 and conf[2] > 0.9
    loss, mask = pseudo_label_loss(logits, target, threshold=0.9)
    assert mask.tolist() == [1.0, 0.0, 1.0]
    rows = logits.detach().tolist()
    by_hand = (_ce(rows[0], 0) + _ce(rows[2], 2)) / 3  # mean over ALL unlabelled samples (FixMatch eq. 4)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    loss.backward()
    assert logits.grad[1].abs().sum() == 0  # a masked sample gives no gradient
    # threshold 0 (Lee 2013): every sample counts with its argmax
    loss0, mask0 = pseudo_label_loss(logits.detach(), target, threshold=0.0)
    assert mask0.tolist() == [1.0, 1.0, 1.0]
    assert loss0.item() == pytest.approx((_ce(rows[0], 0) + _ce(rows[1], 1) + _ce(rows[2], 2)) / 3, rel=1e-6)


def test_pseudo_label_targets_carry_no_gradient():
    target = torch.randn(5, 4, requires_grad=True)
    loss, _ = pseudo_label_loss(torch.randn(5, 4, requires_grad=True), target, 0.0)
    loss.backward()
    assert target.grad is None


def test_softmax_mse_by_hand():
    a, b = [1.0, 0.0], [0.0, 2.0]
    pa = [math.exp(v) / sum(math.exp(u) for u in a) for v in a]
    pb = [math.exp(v) / sum(math.exp(u) for u in b) for v in b]
    by_hand = sum((x - y) ** 2 for x, y in zip(pa, pb)) / 2  # mean over classes (one sample)
    got = softmax_mse(torch.tensor([a, a]), torch.tensor([b, b]))
    assert got.item() == pytest.approx(by_hand, rel=1e-6)
    assert softmax_mse(torch.tensor([a]), torch.tensor([a])).item() == 0.0


# ---- the methods -------------------------------------------------------------------------------------------
def _method(name, **overrides):
    cls = get_method(name)
    torch.manual_seed(0)
    m = cls(build(cls.Config, overrides), DIGITS)
    m.noise_gen.manual_seed(5)
    return m


def _batch(r=4, u=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.rand(r, 1, 8, 8, generator=g), torch.arange(r) % 10, torch.rand(u, 1, 8, 8, generator=g))


@pytest.mark.parametrize("after", [0.999, 0.9999])
def test_mean_teacher_ema_update_by_hand(after):
    """The reference's plain EMA: decay ema_decay (0.99) during the ramp-up, then exactly ema_decay_after,
    from the first update on (no (1 + n) / (10 + n) warm-up, which would give 0.1, 0.18, ... here)."""
    m = _method("meanteacher", rampup_steps=3, ema_decay_after=after)
    teacher0 = [p.detach().clone() for p in m.ema.shadow.parameters()]
    for step in range(6):
        before = [p.detach().clone() for p in m.ema.shadow.parameters()]
        m.train_step(_batch(seed=step))
        decay = after if step >= 3 else 0.99
        assert m.ema.decay == decay
        for s, b, p in zip(m.ema.shadow.parameters(), before, m.net.parameters()):
            torch.testing.assert_close(s, decay * b + (1 - decay) * p.detach(), rtol=1e-5, atol=1e-6)
    assert m.num_steps == 6
    assert any(not torch.equal(a, b) for a, b in zip(teacher0, m.ema.shadow.parameters()))
    assert [p.grad for p in m.ema.shadow.parameters()] == [None] * len(teacher0)  # the teacher is never trained


def test_mean_teacher_ema_decay_after_changes_the_teacher():
    """Two runs that differ only in ema_decay_after have the same teacher until the ramp-up ends, then not."""
    teachers = {}
    for after in (0.999, 0.9999):
        m = _method("meanteacher", rampup_steps=2, ema_decay_after=after)
        snaps = []
        for step in range(4):
            m.train_step(_batch(seed=step))
            snaps.append(torch.cat([p.detach().flatten() for p in m.ema.shadow.parameters()]))
        teachers[after] = snaps
    a, b = teachers[0.999], teachers[0.9999]
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)  # steps 0, 1: both 0.99
    assert (a[3] - b[3]).abs().max().item() > 1e-6


def test_mean_teacher_ramps_lr_and_betas():
    m = _method("meanteacher", rampup_steps=4, lr=0.01)
    opt = m.optimizers["opt"]
    m.train_step(_batch())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01 * math.exp(-5.0))
    assert opt.param_groups[0]["betas"] == (0.9, 0.99)
    for _ in range(4):
        m.train_step(_batch())
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01) and opt.param_groups[0]["betas"] == (0.9, 0.999)


def test_fixmatch_step_uses_weak_targets_and_the_threshold():
    m = _method("fixmatch", threshold=1.0)  # nothing reaches confidence 1: the unlabelled loss is 0
    out = m.train_step(_batch())
    assert out["loss_unlab"].item() == 0.0 and out["loss_mask"].item() == 0.0
    m = _method("fixmatch", threshold=0.0)  # everything counts
    out = m.train_step(_batch())
    assert out["loss_mask"].item() == 1.0 and out["loss_unlab"].item() > 0
    assert m.optimizers["opt"].param_groups[0]["lr"] == pytest.approx(0.03)  # cos(0) at step 0
    assert m.ema is not None and m.ema.num_updates == 1


def test_pseudolabel_weight_follows_the_ramp():
    """Before T1 the pseudo-label term has weight 0: the steps equal those of alpha = 0; from T1 on they differ."""
    def run(**kw):
        m = _method("pseudolabel", threshold=0.0, **kw)
        outs = [m.train_step(_batch(seed=i)) for i in range(3)]
        return [p.detach().clone() for p in m.net.parameters()], outs

    base, _ = run(alpha=0.0)
    late, outs = run(alpha=3.0, ramp_start=100, ramp_end=200)
    early, _ = run(alpha=3.0, ramp_start=0, ramp_end=0)
    assert all(torch.equal(a, b) for a, b in zip(base, late))
    assert any(not torch.equal(a, b) for a, b in zip(base, early))
    assert all(o["loss_pseudo"].item() > 0 for o in outs)  # the term is computed, only its weight is 0


def test_configs_refuse_bad_values():
    with pytest.raises(ConfigError, match="ramp_end"):
        build(get_method("pseudolabel").Config, {"ramp_start": 10, "ramp_end": 5})
    with pytest.raises(ConfigError, match="threshold"):
        build(get_method("fixmatch").Config, {"threshold": 1.5})
    with pytest.raises(ConfigError, match="augment"):
        build(get_method("meanteacher").Config, {"augment": "heavy"})


def test_ssl_ray_methods_lists_the_baselines_with_their_hyperparameters():
    res = CliRunner().invoke(main, ["methods", "pseudolabel", "meanteacher", "fixmatch", "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["name"]: {h["name"]: h for h in r["hyperparameters"]} for r in json.loads(res.output)}
    assert rows["fixmatch"]["threshold"]["default"] == 0.95 and rows["fixmatch"]["lambda_u"]["default"] == 1.0
    assert rows["fixmatch"]["labeled_ratio"]["default"] == pytest.approx(1 / 8)  # mu = 7
    assert rows["meanteacher"]["consistency"]["default"] == 100.0
    assert rows["meanteacher"]["ema_decay"]["default"] == 0.99
    assert rows["pseudolabel"]["alpha"]["default"] == 3.0 and "threshold" in rows["pseudolabel"]
    for r in rows.values():
        assert all(h["doc"] for h in r.values())


# ---- augmentation ------------------------------------------------------------------------------------------
def test_views_are_reproducible_and_differ_by_rank_step_and_salt():
    x = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    for kind in ("weak", "strong"):
        a = augment(x, kind, seed=1, step=3, flip=True)
        assert torch.equal(a, augment(x, kind, seed=1, step=3, flip=True))  # same seed -> same views
        assert a.shape == x.shape and a.dtype == x.dtype
        assert 0.0 <= a.min().item() and a.max().item() <= 1.0
        for other in (dict(seed=2, step=3), dict(seed=1, step=4), dict(seed=1, step=3, salt=1),
                      dict(seed=1, step=3, rank=1, world=2)):
            assert not torch.equal(a, augment(x, kind, flip=True, **other)), other


def test_views_are_exact_under_data_parallelism():
    """Two ranks with batch n draw exactly the views one worker with batch 2n draws."""
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    for kind in ("weak", "strong"):
        one = augment(x, kind, seed=7, step=2, flip=True)
        two = torch.cat([augment(x[:4], kind, seed=7, step=2, rank=0, world=2, flip=True),
                         augment(x[4:], kind, seed=7, step=2, rank=1, world=2, flip=True)])
        torch.testing.assert_close(one, two)


def test_flip_and_shift_by_hand():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(2, 1, 1, 1)
    out = flip_and_shift(x, torch.tensor([False, True]), torch.tensor([1, 0]), torch.tensor([0, -1]))
    # sample 0: down by one row, reflect padding repeats row 1 on top
    torch.testing.assert_close(out[0, 0], torch.stack([x[0, 0, 1], x[0, 0, 0], x[0, 0, 1], x[0, 0, 2]]))
    # sample 1: mirrored, then left by one column (reflect on the right)
    m = x[1, 0].flip(-1)
    torch.testing.assert_close(out[1, 0], torch.cat([m[:, 1:], m[:, 2:3]], 1))


def test_weak_view_of_digits_never_flips():
    assert not flip_allowed("digits") and not flip_allowed("svhn") and flip_allowed("cifar10")
    assert flip_allowed("digits", "yes") and not flip_allowed("cifar10", "no")
    x = torch.rand(64, 1, 8, 8)
    y = augment(x, "weak", seed=0, step=0, flip=False)
    # every output is a shift of its input by at most 1 pixel (12.5% of 8): the interior survives exactly
    for i in range(64):
        assert any(torch.equal(y[i, 0, 2:6, 2:6], x[i, 0, 2 - dy:6 - dy, 2 - dx:6 - dx])
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def test_cutout_by_hand():
    x = torch.zeros(2, 1, 6, 6)
    out = cutout(x, torch.tensor([2.0, 0.0]), torch.tensor([3.0, 3.0]), torch.tensor([1.0, 3.0]), fill=1.0)
    assert out[0, 0, 2:4, 0:2].eq(1).all() and out[0].sum() == 4
    assert out[1].sum() == 0  # size 0: nothing cut


def test_randaugment_ops_per_sample():
    x = torch.rand(len(RANDAUGMENT_OPS), 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ops = torch.arange(len(RANDAUGMENT_OPS)).view(-1, 1)
    levels = torch.tensor([[o[2]] for o in RANDAUGMENT_OPS])  # each op at the top of its range
    out = rand_augment(x, ops, levels)
    names = [o[0] for o in RANDAUGMENT_OPS]
    assert torch.equal(out[names.index("identity")], x[names.index("identity")])
    i = names.index("brightness")
    torch.testing.assert_close(out[i], x[i] * 0.95)
    i = names.index("solarize")  # threshold 1: only pixels == 1 flip
    torch.testing.assert_close(out[i], x[i])
    i = names.index("posterize")  # 8 bits: unchanged up to the 8-bit grid
    torch.testing.assert_close(out[i], torch.round(x[i] * 255) / 255)
    for i in range(len(names)):
        assert 0 <= out[i].min() and out[i].max() <= 1, names[i]


def test_augment_batch_views_each_part_like_one_worker_with_the_global_batch():
    g = torch.Generator().manual_seed(3)
    full = Batch(torch.rand(4, 1, 8, 8, generator=g), torch.arange(4), torch.rand(8, 1, 8, 8, generator=g))
    one = augment_batch(full, "weak", seed=1, step=2)
    parts = [augment_batch(Batch(full.x_l[2 * r:2 * r + 2], full.y_l[2 * r:2 * r + 2], full.x_u[4 * r:4 * r + 4]),
                           "weak", seed=1, step=2, rank=r, world=2) for r in (0, 1)]
    torch.testing.assert_close(torch.cat([p.x_l for p in parts]), one.x_l)
    torch.testing.assert_close(torch.cat([p.x_u for p in parts]), one.x_u)
    assert torch.equal(one.y_l, full.y_l) and one.x_u2 is None and not torch.equal(one.x_u, full.x_u)
    assert augment_batch(full, "none", seed=1, step=2) is full


def test_points_pass_through():
    x = torch.randn(10, 2)
    assert augment(x, "strong", seed=0, step=0) is x


def test_step_seed_mixes_seed_and_step():
    seeds = {step_seed(s, t) for s in range(20) for t in range(20)}
    assert len(seeds) == 400 and all(0 <= s < 2 ** 63 for s in seeds)


# ---- data parallelism ----------------------------------------------------------------------------------------
DP_CASE = {"batch_size": 16, "labeled_ratio": 0.25, "arch": "mlp", "steps_per_epoch": 3}


def _run_dp(rank, world, port, method, out):
    import torch.distributed as dist

    from ssl_ray.data import DataSpec
    from ssl_ray.engine.loop import RunSpec, Trainer

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world)
    cfg = dict(DP_CASE, batch_size=DP_CASE["batch_size"] * (2 // world))
    tr = Trainer(RunSpec(method, DataSpec("digits", labels=40, val_size=100), epochs=1, seed=5, config=cfg),
                 progress=False)
    tr.run_epoch()
    if rank == 0:
        torch.save({"net": tr.method.net.state_dict(), "ema": tr.method.ema.shadow.state_dict()}, out)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()


@pytest.mark.parametrize("method", ["fixmatch", "meanteacher"])
def test_two_workers_equal_one_worker_with_double_batch(method, tmp_path):
    """Views, input noise, pseudo-label masks and the EMA: 2 workers x 8 samples reach the parameters of
    1 worker x 16 (the views are drawn for the global batch and cut per rank)."""
    import torch.multiprocessing as mp

    def port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    one, two = str(tmp_path / "one.pt"), str(tmp_path / "two.pt")
    mp.start_processes(_run_dp, args=(1, port(), method, one), nprocs=1, start_method="spawn")
    mp.start_processes(_run_dp, args=(2, port(), method, two), nprocs=2, start_method="spawn")
    a, b = torch.load(one, weights_only=True), torch.load(two, weights_only=True)
    for part in ("net", "ema"):
        for k, v in a[part].items():
            torch.testing.assert_close(b[part][k], v, rtol=1e-4, atol=1e-5, msg=f"{part}.{k}")


# ---- the loop's augmentation, for methods that do not draw their own views -------------------------------
@pytest.mark.parametrize("method", ["supervised", "vat", "i2gan"])
def test_the_loop_serves_augmented_batches_to_a_method_that_asks(method):
    """`--set augment=weak`: the method's train step sees the loop's weak view of each batch (seeded by the run's
    seed and the global step); at the default `none` it sees the raw batch."""
    from ssl_ray.data import DataSpec
    from ssl_ray.engine.loop import RunSpec, Trainer

    for kind in ("none", "weak"):
        tr = Trainer(RunSpec(method, DataSpec("digits", labels=20, val_size=100), epochs=1, seed=3,
                             config={"augment": kind, "steps_per_epoch": 2}), progress=False)
        raw, got = [], []
        draw, step = tr.stream.next, tr.method.train_step

        def next_batch(draw=draw, raw=raw):
            b = draw()
            raw.append((b.x_l.clone(), b.x_u.clone()))
            return b

        def train_step(batch, step=step, got=got):
            got.append((batch.x_l.clone(), batch.x_u.clone()))
            return step(batch)

        tr.stream.next, tr.method.train_step = next_batch, train_step  # type: ignore[method-assign]
        tr.run_epoch()
        assert len(got) == 2
        for s, (r, g) in enumerate(zip(raw, got)):
            for salt, (rp, gp) in enumerate(zip(r, g)):  # labelled (salt 0), unlabelled (salt 1)
                if kind == "none" or len(rp) == 0:
                    torch.testing.assert_close(gp, rp, rtol=0, atol=0)
                else:
                    assert not torch.equal(gp, rp)  # a view, not the raw images
                    want = augment(rp, "weak", seed=3, step=s, flip=False, salt=salt)
                    torch.testing.assert_close(gp, want, rtol=0, atol=0)


def test_a_search_space_can_search_weak_augmentation_for_i2gan(tmp_path):
    from ssl_ray.tuning.spaces import load_space

    p = tmp_path / "s.yaml"
    p.write_text("method: i2gan\ndataset: {name: digits, labels: 50}\nsearch:\n  augment: {choice: [none, weak]}\n"
                 "scheduler: {name: asha, max_epochs: 4, grace_epochs: 1, reduction_factor: 2}\nnum_samples: 2\n")
    assert "augment" in load_space(p).search
    p.write_text(p.read_text().replace("method: i2gan", "method: fixmatch"))  # draws its own views: no such knob
    with pytest.raises(ConfigError, match="augment"):
        load_space(p)
