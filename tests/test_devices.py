"""Where tensors live, tested on the CPU (no GPU here): every registered method built on a device other than the
CPU -- `meta`, whose tensors have shapes but no data -- keeps every parameter and buffer of every module it uses
(EMA copies and teachers included) on that device: fresh, after training steps there, and after a restore from a
checkpoint a CPU run wrote. A step on `meta` also shows what a step would make a GPU wait for: a dispatch mode
sees every host-to-device copy and counts the blocking ones (on a GPU each waits for the work queued before it;
`nn.devices.to_device` copies without waiting), and every read of a device value (`.item()`, `nonzero()`, which
boolean masks use), which meta cannot answer (the mode answers with a placeholder and counts it). Blind spot:
`torch.tensor(values, device=...)` copies below the dispatcher and is not counted. The helpers follow their inputs' device (metrics), the EMA's fused update is the loop's bit for bit,
and the CUDA settings and random state are handled at the function level.
"""
from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ssl_ray import config as C
from ssl_ray.data import BatchStream, DataSpec, load_splits
from ssl_ray.data.augment import augment_batch
from ssl_ray.data.synthetic import gaussian_generation_metrics, gaussian_generation_shares
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import RunSpec, Trainer, configure_cuda
from ssl_ray.methods import list_methods
from ssl_ray.methods.common import EMA, predict_labels
from ssl_ray.nn.modes import full_precision

METHODS = [m.name for m in list_methods()]
TINY = {"batch_size": 16, "steps_per_epoch": 2}
META = torch.device("meta")
aten = torch.ops.aten


def _data(method: str, image: bool) -> DataSpec:
    cls = next(m for m in list_methods() if m.name == method)
    if image:
        return DataSpec("digits", labels=20, val_size=100)
    name = "circles" if cls.uses_labels else "gaussians"
    return DataSpec(name, labels=8, val_size=100, options={"n_train": 500, "n_test": 200})


def _build(method: str, image: bool, device):
    cls = next(m for m in list_methods() if m.name == method)
    cfg = C.build(cls.Config, dict(TINY))
    splits = load_splits(_data(method, image), 3)
    stream = BatchStream(splits, cfg.batch_size, cfg.labelled_share, 3, device, uses_labels=cls.uses_labels,
                         second_unlabelled=cls.second_unlabelled)
    return cls(cfg, splits.info, device), stream


def _off_device(method, device: torch.device) -> list[str]:
    """Every parameter, buffer and optimiser state tensor the method uses that is not on `device`."""
    off = [f"{type(mod).__name__}.{n} on {t.device}" for mod in method.all_modules()
           for n, t in list(mod.named_parameters()) + list(mod.named_buffers()) if t.device != device]
    for name, opt in method.optimizers.items():
        for st in opt.state.values():
            # Adam keeps its step counter on the host on purpose (a Python-side number; no sync)
            off += [f"optimizer {name}: {k} on {v.device}" for k, v in st.items()
                    if torch.is_tensor(v) and k != "step" and v.device != device]
    prior = getattr(method, "prior", None)  # the clustering GANs' categorical prior
    if torch.is_tensor(prior) and prior.device != device:
        off.append(f"prior on {prior.device}")
    return off


class Traffic(TorchDispatchMode):
    """Inside the block, on `device`: every blocking copy from the host (op, shape) in `blocking`, and every read of a
    device value back to the host (`.item()`, `nonzero()`, which boolean masks use) in `reads`. On `meta` a read
    cannot happen: it is recorded and answered with a placeholder (0, no index), so that a step goes on."""

    def __init__(self, device: torch.device):
        super().__init__()
        self.device = device
        self.blocking: list[tuple[str, tuple[int, ...]]] = []
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten._to_copy.default:
            src, dst, nb = args[0], kwargs.get("device"), kwargs.get("non_blocking", False)
            if dst is not None and src.device.type == "cpu" and torch.device(dst).type == self.device.type and not nb:
                self.blocking.append(("to", tuple(src.shape)))
        elif func is aten.copy_.default:
            dst, src = args[0], args[1]
            nb = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            if src.device.type == "cpu" and dst.device.type == self.device.type and not nb:
                self.blocking.append(("copy_", tuple(src.shape)))
        elif func in (aten._local_scalar_dense.default, aten.nonzero.default) and args[0].device == self.device:
            self.reads.append(func.overloadpacket.__name__)
            if self.device.type == "meta":
                t = args[0]
                if func is aten.nonzero.default:
                    return torch.empty((0, t.dim()), dtype=torch.long, device=t.device)
                return False if t.dtype == torch.bool else 0 if not t.is_floating_point() else 0.0
        elif func is aten.index.Tensor and any(i is not None and i.dtype == torch.bool for i in args[1]):
            self.reads.append("index with a boolean mask")
            if self.device.type == "meta":  # as if the mask selected nothing: one empty index per mask dimension
                empty = torch.empty(0, dtype=torch.long, device=args[0].device)
                idx = [j for i in args[1] for j in ([empty] * i.dim() if i is not None and i.dtype == torch.bool
                                                    else [i])]
                return func(args[0], idx)
        return func(*args, **kwargs)


def test_the_traffic_counter_sees_blocking_copies_and_reads_and_not_asynchronous_copies():
    with Traffic(META) as h:
        torch.ones(3).to(META)
        torch.empty(2, device=META).copy_(torch.ones(2))
        torch.ones(4).to(META, non_blocking=True)
        value = torch.empty(2, device=META).sum().item()
        picked = torch.empty(5, device=META)[torch.empty(5, dtype=torch.bool, device=META)]
        nz = torch.empty(3, device=META).nonzero()
    assert h.blocking == [("to", (3,)), ("copy_", (2,))]
    assert h.reads == ["_local_scalar_dense", "index with a boolean mask", "nonzero"]
    assert value == 0.0 and picked.shape == (0,) and nz.shape == (0, 1)


def _params(method: str, image: bool):
    return pytest.param(method, image, id=f"{method}-{'digits' if image else 'points'}")


CASES = [_params(m, image) for m in METHODS for image in (False, True)]


@pytest.mark.parametrize("method,image", CASES)
def test_every_module_stays_on_the_methods_device(method, image, tmp_path):
    """Fresh, after two steps on the device (ImprovedGAN's data init rebuilds its EMA there) and after a restore
    from a checkpoint a CPU run wrote (the EMA copies used to stay on the CPU: fixmatch and meanteacher crashed
    at their first GPU step, improvedgan and i2gan after any restore)."""
    m, stream = _build(method, image, META)
    assert not _off_device(m, META), f"{method} fresh: {_off_device(m, META)}"
    with Traffic(META):  # a once-per-run read (VAT's data norm) gets a placeholder value on meta
        for _ in range(2):
            m.train_step(stream.next())
    assert not _off_device(m, META), f"{method} after steps: {_off_device(m, META)}"

    cpu = Trainer(RunSpec(method, _data(method, image), epochs=1, seed=3, config=dict(TINY)), progress=False)
    cpu.fit()
    checkpoint.save(tmp_path, cpu.state())
    state = checkpoint.load(tmp_path)
    restored, _ = _build(method, image, META)
    with warnings.catch_warnings():  # meta tensors hold no values: torch says the copy is a no-op
        warnings.filterwarnings("ignore", message="for .*: copying from a non-meta parameter")
        restored.load_state_dict(state["method"])
    restored.apply_hparams()
    assert not _off_device(restored, META), f"{method} restored: {_off_device(restored, META)}"
    assert any(opt.state for opt in restored.optimizers.values())  # the optimiser moments came along


@pytest.mark.parametrize("method,image", CASES)
def test_a_training_step_copies_nothing_from_the_host_and_reads_nothing_back(method, image):
    """Each step of every method on a device, after its first (once-per-run work: ImprovedGAN's data init, VAT's
    data norm): no blocking host-to-device copy (batch indices, noise, augmentation parameters all arrive
    asynchronously or are drawn there) and no device value read back."""
    m, stream = _build(method, image, META)
    with Traffic(META):
        m.train_step(stream.next())
    with Traffic(META) as h:
        for _ in range(3):
            out = m.train_step(stream.next())
    assert h.blocking == [], f"{method}: blocking host-to-device copies in 3 steps: {h.blocking}"
    assert h.reads == [], f"{method}: device values read in 3 steps: {h.reads}"
    assert all(v.device == META for v in out.values())


@pytest.mark.parametrize("kind", ["weak", "strong"])
def test_the_loops_augmentation_copies_nothing_blocking_and_reads_nothing_back(kind):
    """The views the loop serves (augment_batch) and the baselines draw: parameters drawn on the host, decisions
    (largest shift, which sample gets which RandAugment operation) taken there, one asynchronous copy each."""
    splits = load_splits(DataSpec("digits", labels=20, val_size=100), 0)
    batch = BatchStream(splits, 32, 0.25, 0, META, second_unlabelled=True).next()
    with Traffic(META) as h:
        out = augment_batch(batch, kind, seed=1, step=5, rank=1, world=2, flip=True, n_ops=3)
    assert h.blocking == [] and h.reads == []
    assert out.x_l.device == out.x_u.device == out.x_u2.device == META
    assert out.x_u.shape == batch.x_u.shape


def test_the_batch_stream_keeps_its_indices_on_its_device():
    """Indices are sliced on the device; each new permutation is copied there once, asynchronously; the
    checkpointed state (the permutation) stays on the host."""
    splits = load_splits(DataSpec("digits", labels=20, val_size=100), 0)
    stream = BatchStream(splits, 40, 0.25, 0, META)
    with Traffic(META) as h:
        for _ in range(60):  # several passes over the 20 labelled examples: new permutations on the way
            b = stream.next()
    assert h.blocking == [] and h.reads == []
    assert b.x_l.device == b.y_l.device == b.x_u.device == META
    assert stream.lab_cycle.next(5).device == META
    assert stream.state_dict()["lab"]["perm"].device.type == "cpu"


def test_the_metrics_follow_the_device_of_their_inputs():
    """The Gaussian-cluster generation metrics mixed a host tensor with the points' (gan, infogan and vcagan failed
    at evaluation on a GPU); now their tensors are computed where the points are, then read in one go."""
    off, share, tv = gaussian_generation_shares(torch.empty(50, 2, device=META))
    assert off.device == share.device == tv.device == META
    assert predict_labels(lambda x: x, torch.empty(0, 3, device=META)).device == META
    # the numbers, by hand: two points on centres 0 and 1, one far away
    from ssl_ray.data.synthetic import GAUSSIAN_CENTRES, GAUSSIAN_PROBS

    pts = torch.tensor([GAUSSIAN_CENTRES[0], GAUSSIAN_CENTRES[1], [50.0, 50.0]], dtype=torch.float32)
    m = gaussian_generation_metrics(pts)
    want_share = [0.5, 0.5] + [0.0] * (len(GAUSSIAN_CENTRES) - 2)
    torch.testing.assert_close(m["gen_off_cluster"], 1 / 3, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close([m[f"gen_share_{k}"] for k in range(len(GAUSSIAN_CENTRES))], want_share)
    tv = 0.5 * sum(abs(a - b) for a, b in zip(want_share, GAUSSIAN_PROBS))
    torch.testing.assert_close(m["gen_share_tv"], tv, rtol=1e-12, atol=1e-12)


def test_the_fused_ema_update_is_the_loop_bit_for_bit():
    """EMA.update runs two fused kernels (torch._foreach_lerp_, _foreach_copy_) instead of a Python loop: on the
    CPU the weights are those of the loop, exactly (BatchNorm buffers, the int64 counter included)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    ema = EMA(net, 0.999)
    hand = [t.detach().clone() for t in ema.shadow.parameters()]
    hand_buf = [b.clone() for b in ema.shadow.buffers()]
    for _ in range(7):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(9, 5))  # moves the BatchNorm statistics
        d = ema.current_decay()
        for s, p in zip(hand, net.parameters()):
            s.lerp_(p.detach(), 1.0 - d)
        hand_buf = [b.clone() for b in net.buffers()]
        ema.update(net)
    for a, b in zip(ema.shadow.parameters(), hand):
        assert torch.equal(a, b)
    for a, b in zip(ema.shadow.buffers(), hand_buf):
        assert torch.equal(a, b)
    assert int(ema.shadow[1].num_batches_tracked) == 7


def test_full_precision_switches_autocast_and_tf32_off_and_restores_them():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with torch.autocast("cpu", dtype=torch.bfloat16):
            with full_precision("cpu"):
                assert not torch.is_autocast_enabled("cpu")
                assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
                assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
            assert torch.is_autocast_enabled("cpu")
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with full_precision(META):  # a device type autocast does not know: nothing to switch off, no error
            pass
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("env,tf32", [(None, True), ("0", False)])
def test_configure_cuda_sets_cudnn_benchmark_and_tf32(env, tf32, monkeypatch):
    saved = (torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    if env is None:
        monkeypatch.delenv("SSL_RAY_TF32", raising=False)
    else:
        monkeypatch.setenv("SSL_RAY_TF32", env)
    try:
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not tf32
        configure_cuda()
        assert torch.backends.cudnn.benchmark
        assert torch.backends.cuda.matmul.allow_tf32 == tf32 and torch.backends.cudnn.allow_tf32 == tf32
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_a_cpu_trainer_leaves_the_cuda_settings_alone():
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = False
        Trainer(RunSpec("supervised", _data("supervised", False), epochs=1, config=dict(TINY)), progress=False)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = saved


class _FakeCuda:
    """torch.cuda's random-state functions on a machine with `n` GPUs (none here: these are stand-ins)."""

    def __init__(self, n: int):
        self.states = {i: torch.full((16,), i, dtype=torch.uint8) for i in range(n)}
        self.n = n

    def get_rng_state(self, device="cuda"):
        return self.states[torch.device(device).index or 0].clone()

    def set_rng_state(self, state, device="cuda"):
        index = torch.device(device).index or 0
        if index >= self.n:
            raise IndexError(f"no GPU {index}")
        self.states[index] = state.clone()

    def current_device(self):
        return 0


def test_the_cuda_random_state_is_the_devices_own_and_restores_with_fewer_gpus(monkeypatch):
    """A checkpoint keeps the CUDA state of the trainer's device only; restored where fewer GPUs are visible it
    neither raises (torch.cuda.set_rng_state_all did: IndexError) nor touches another device. A checkpoint of the
    old format (every visible GPU's state) gives the device its own entry; a CPU run ignores CUDA states."""
    eight = _FakeCuda(8)
    monkeypatch.setattr(torch.cuda, "get_rng_state", eight.get_rng_state)
    saved = checkpoint.rng_state("cuda:3")
    assert torch.equal(saved["cuda"], eight.states[3])
    assert "cuda" not in checkpoint.rng_state("cpu")

    one = _FakeCuda(1)
    monkeypatch.setattr(torch.cuda, "set_rng_state", one.set_rng_state)
    monkeypatch.setattr(torch.cuda, "current_device", one.current_device)
    checkpoint.set_rng_state(saved, "cuda:0")  # a worker on the only GPU of the new machine
    assert torch.equal(one.states[0], eight.states[3])
    old = {"torch": torch.get_rng_state(), "python": saved["python"],
           "cuda": [torch.full((16,), 10 + i, dtype=torch.uint8) for i in range(8)]}
    checkpoint.set_rng_state(old, "cuda:0")
    assert torch.equal(one.states[0], old["cuda"][0])
    before = one.states[0].clone()
    checkpoint.set_rng_state(old, "cpu")  # a CPU run: the CUDA states are not its own
    assert torch.equal(one.states[0], before)


def test_rng_state_round_trip_on_the_cpu():
    torch.manual_seed(11)
    random.seed(11)
    s = checkpoint.rng_state("cpu")
    a, b = torch.rand(3), random.random()
    checkpoint.set_rng_state(s, "cpu")
    assert torch.equal(torch.rand(3), a) and random.random() == b


def test_vats_clean_pass_and_power_iteration_run_without_tf32():
    """On a GPU the Trainer allows TF32 (configure_cuda). VAT's probe (xi = 1e-6) is far below TF32's resolution
    (~1e-3 relative): emulated on the CPU, the direction's cosine to float32 is ~1e-5. So the clean pass and the
    power iteration must run with TF32 off. The switches are plain flags (settable without a GPU): every forward
    pass of VAT's perturbation records what it sees."""
    cls = next(m for m in list_methods() if m.name == "vat")
    splits = load_splits(_data("vat", False), 3)
    vat = cls(C.build(cls.Config, dict(TINY)), splits.info, "cpu")
    seen: list[tuple[bool, bool]] = []
    forward = vat.forward_frozen_bn

    def spy(x):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return forward(x)

    vat.forward_frozen_bn = spy  # type: ignore[method-assign]
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # as configure_cuda does
        vat.adversarial(torch.rand(32, 2))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert len(seen) >= 2  # the clean pass and at least one power iteration
    assert all(s == (False, False) for s in seen), seen
