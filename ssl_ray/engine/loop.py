"""The training loop shared by `ssl-ray train`, every Tune trial and every Ray Train worker.

Per epoch: `steps` calls of method.train_step on R/T batches, one host sync for the losses, a
NaN/inf check that names the loss, epoch and step, evaluation on the whole validation (and test) split,
TensorBoard scalars, an atomic checkpoint, and one report. The caller decides what "report" means
(Ray Tune, Ray Train, or a plain list), so this file knows nothing of Ray.
"""
from __future__ import annotations

import errno
import math
import os
import sys
import threading
import time
from typing import Any, Callable

import torch

from .. import config as C
from ..data import Batch, BatchStream, eval_tensors, load_splits
from ..data.augment import AugmentConfig, augment_batch, flip_allowed
from ..data.registry import get_entry
from ..errors import DivergenceError
from ..methods.common import predict_labels
from ..nn import distributed
from ..nn.metrics import clustering_error, error_rate, nmi

VAL_TIEBREAK = "val_error_tiebreak"
"""Reported each epoch: val_error + epoch * 1e-6, the validation error with ties broken towards the EARLIER
epoch, as best_val_error and report's epoch of best validation (strict improvement: the first of equals). Tune
keeps the checkpoints of lowest value (tuning/schedulers/base.py), so the one report names is kept. Exact while
epoch * 1e-6 stays below the error's granularity: val_error is in %, steps of 100 / n_val >= 0.01 for up to
10,000 validation examples, so up to 9,999 epochs."""
from . import checkpoint
from .spec import RunSpec, plain  # RunSpec: also imported from here

Report = Callable[[dict[str, Any], "str | None"], None]


def _gather_labels(pred: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate each rank's contiguous chunk of predictions (padded to equal length) into all n."""
    if not distributed.is_distributed():
        return pred
    import torch.distributed as dist

    world = dist.get_world_size()
    chunk = -(-n // world)
    padded = torch.full((chunk,), -1, dtype=torch.long, device=pred.device)
    padded[: len(pred)] = pred
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n]


class Trainer:
    def __init__(self, spec: RunSpec, *, device: torch.device | str = "cpu", log_dir: str | None = None,
                 progress: bool = True, rank: int | None = None, world: int | None = None):
        self.spec = spec
        r, w = distributed.rank_and_world()
        self.rank, self.world = (r if rank is None else rank), (w if world is None else world)
        self.device = torch.device(device)
        if self.device.type == "cuda":
            configure_cuda()
        self.method_cls = spec.method_class
        self.cfg = spec.method_config()
        self.splits = load_splits(spec.data, spec.seed)
        self.info = self.splits.info
        # Same seed on every rank: identical initial weights. Then per-rank streams for noise/dropout.
        torch.manual_seed(spec.seed)
        self.method = self.method_cls(self.cfg, self.info, self.device)
        for m in self.method.all_modules():
            distributed.broadcast_module(m)
        self.method.rank, self.method.world = self.rank, self.world
        self.method.seed_noise(spec.seed * 1_000_003 + 99_991)  # shared noise streams (global_rand)
        torch.manual_seed(spec.seed * 1_000_003 + 17 + self.rank * 7_777_777)  # per-rank: dropout, noise layers
        self.stream = BatchStream(self.splits, self.cfg.batch_size, self.cfg.labelled_share, spec.seed, self.device,
                                  uses_labels=self.method_cls.uses_labels,
                                  second_unlabelled=self.method_cls.second_unlabelled, rank=self.rank,
                                  world=self.world, resident=spec.data_resident)
        if spec.compile:
            for m in self.method.modules.values():
                m.compile()
        self.steps = self.cfg.steps_per_epoch or get_entry(spec.data.name).epoch_steps or self.stream.epoch_steps()
        self.x_val, self.y_val = eval_tensors(self.splits, "val", self.device)
        self.x_test, self.y_test = eval_tensors(self.splits, "test", self.device)
        self.epoch = 0
        self.checkpoint_epoch = 0
        self.global_step = 0
        self.best_val = math.inf
        self.test_at_best = math.nan
        self.history: list[dict[str, Any]] = []
        self.progress = progress and self.rank == 0
        self.tb = None
        if log_dir and self.rank == 0:
            from .tblog import TBLogger

            self.tb = TBLogger(log_dir)
            self.tb.hparams(C.to_dict(self.cfg) | {"method": spec.method, "dataset": spec.data.name,
                                                   "seed": spec.seed}, searched=spec.searched)

    # ---- state -----------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        """The whole training state. Weights, optimisers, data position and the shared noise streams are the same
        on every rank; the random state of each rank's own streams (dropout, noise layers, per-rank draws) is
        not, so "rng" lists every rank's. Under data parallelism this gathers them: every rank calls it."""
        return {"method": self.method.state_dict(), "stream": self.stream.state_dict(), "rng": self._rng_states(),
                "noise": self.method.noise_state(),
                "epoch": self.epoch, "global_step": self.global_step, "best_val": self.best_val,
                "test_at_best": self.test_at_best, "spec": plain(self.spec.to_dict()), "world": self.world}

    def _rng_states(self) -> list[dict[str, Any]]:
        """Every rank's random state, by rank (a collective under data parallelism)."""
        mine = checkpoint.rng_state(self.device)
        if not distributed.is_distributed():
            return [mine]
        import torch.distributed as dist

        states: list[Any] = [None] * self.world
        dist.all_gather_object(states, mine)
        return states

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint: its weights, optimiser moments, data position, RNG and epoch, under this
        trainer's own config (Method.apply_hparams: a PBT trial restored from another trial's checkpoint with
        a mutated config trains with the new learning rate, not the checkpoint's).

        Each rank takes its own random state. A checkpoint from before per-rank states holds rank 0's only,
        which every rank then takes (as it did then); a rank the checkpoint has no state for keeps the stream
        this trainer seeded for it."""
        self.method.load_state_dict(state["method"])
        self.method.apply_hparams()
        self.stream.load_state_dict(state["stream"])
        rng = state["rng"]
        mine = rng if isinstance(rng, dict) else (rng[self.rank] if self.rank < len(rng) else None)
        if mine is not None:
            checkpoint.set_rng_state(mine, self.device)
        self.method.load_noise_state(state["noise"])
        self.epoch = self.checkpoint_epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_val = float(state["best_val"])
        self.test_at_best = float(state["test_at_best"])

    # ---- evaluation ------------------------------------------------------------------------------
    def error(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
        n = len(x)
        chunk = -(-n // self.world)
        lo, hi = self.rank * chunk, min(n, (self.rank + 1) * chunk)
        self._sync_buffers()
        self.method.eval()
        pred = _gather_labels(predict_labels(self.method.predict, x[lo:hi]), n)
        self.method.train()
        if self.method_cls.clustering:
            return clustering_error(pred, y, self.method.num_clusters, self.info.num_classes), pred
        return error_rate(pred, y), pred

    def _autocast(self):
        import contextlib

        if not self.spec.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def _sync_buffers(self) -> None:
        """BatchNorm statistics are per worker while training (no SyncBatchNorm: see docs); before evaluating,
        every worker takes rank 0's, so the sharded evaluation is of one and the same model."""
        if not distributed.is_distributed():
            return
        import torch.distributed as dist

        for module in self.method.all_modules():
            for b in module.buffers():
                dist.broadcast(b.data, 0)

    # ---- the loop ----------------------------------------------------------------------------------
    def _augmented(self, batch: Batch, step: int) -> Batch:
        """The batch in the view its config's `augment` asks for (data/augment.py; seeded by the run's seed and
        the global step, each rank viewing its slice of the global batch), unless the method draws its own."""
        cfg = self.cfg
        if not isinstance(cfg, AugmentConfig) or cfg.augment == "none" or self.method_cls.augments_itself:
            return batch
        return augment_batch(batch, cfg.augment, seed=self.spec.seed, step=step, rank=self.rank, world=self.world,
                             flip=flip_allowed(self.spec.data.name, cfg.flip))

    def run_epoch(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        self.method.train()
        rows: list[torch.Tensor] = []
        keys: list[str] = []
        for i in _steps(self.steps, self.progress, f"[{self.spec.method}/{self.spec.data.name}] epoch {self.epoch + 1}"):
            batch = self._augmented(self.stream.next(), self.global_step + i)
            with self._autocast():
                out = self.method.train_step(batch)
            if not keys:
                keys = list(out)
            rows.append(torch.stack([out[k].detach().float().reshape(()) for k in keys]))
        # (steps, n_losses), summed over workers: one host sync below, not one per step; a NaN on any worker
        # is seen by every worker, so all of them stop together (none is left waiting in a collective)
        losses = distributed.all_reduce_sum(torch.stack(rows))
        bad = ~torch.isfinite(losses)
        if bool(bad.any()):
            s, j = (int(v) for v in bad.nonzero()[0])
            val = losses[s, j].item()
            raise DivergenceError(f"{_loss_name(keys[j])} became {val} at epoch {self.epoch + 1}, "
                                  f"step {self.global_step + s + 1}")
        means = losses.mean(0) / self.world
        self.global_step += self.steps
        self.epoch += 1
        train_seconds = time.perf_counter() - t0
        metrics: dict[str, Any] = {_loss_name(k): float(v) for k, v in zip(keys, means.tolist())}
        metrics.update(self.method.end_epoch(self.epoch))
        for name, opt in self.method.optimizers.items():
            metrics[f"lr_{name}"] = float(opt.param_groups[0]["lr"])
        val_error, _ = self.error(self.x_val, self.y_val)
        metrics["val_error"] = val_error
        improved = val_error < self.best_val or not math.isfinite(self.best_val)
        every = self.spec.test_every
        if self.spec.eval_test and (improved or self.epoch >= self.spec.epochs or (every and self.epoch % every == 0)):
            metrics["test_error"], test_pred = self.error(self.x_test, self.y_test)
            if self.method_cls.clustering:
                metrics["test_nmi"] = nmi(test_pred, self.y_test)
        if improved:
            self.best_val = val_error
            self.test_at_best = metrics.get("test_error", math.nan)
        metrics.update(self.method.eval_metrics(self.x_val, self.y_val))
        metrics["best_val_error"] = self.best_val
        metrics["test_error_at_best_val"] = self.test_at_best
        metrics[VAL_TIEBREAK] = val_error + self.epoch * 1e-6  # what Tune scores checkpoints on (see VAL_TIEBREAK)
        samples = self.steps * self.cfg.batch_size * self.world
        metrics["samples_per_second"] = samples / max(train_seconds, 1e-9)
        metrics["epoch_seconds"] = time.perf_counter() - t0
        metrics["epoch"] = self.epoch
        metrics["step"] = self.global_step
        return metrics

    def pictures(self) -> None:
        if self.tb is None:
            return
        self.method.eval()
        for name, img in self.method.pictures(self.x_val, self.y_val).items():
            self.tb.image(name, img, self.epoch)
        self.method.train()

    def fit(self, report: Report | None = None, checkpoint_dir: str | None = None) -> dict[str, Any]:
        """Train until spec.epochs (continuing from a restored epoch); report once per epoch.

        Checkpoints (spec.checkpoint_every epochs, spec.checkpoint_seconds, and the last epoch) are written
        into `checkpoint_dir` when given (atomically: a crash leaves the previous one), else into a temporary
        folder handed to `report` and removed after it. `self.checkpoint_epoch` is the epoch of the last one."""
        last: dict[str, Any] = {}
        total = self.spec.epochs
        last_ckpt = time.monotonic()
        hook = _quiet_full_disk_in_threads()
        try:
            while self.epoch < total:
                metrics = self.run_epoch()
                self.history.append(metrics)
                last = metrics
                if self.tb is not None:
                    self.tb.scalars(metrics, self.epoch)
                    every = self.spec.picture_every
                    if self.epoch == total or (every and self.epoch % every == 0):
                        self.pictures()
                if self.progress:
                    self._print(metrics)
                if report is None and checkpoint_dir is None:
                    continue
                k, secs = self.spec.checkpoint_every, self.spec.checkpoint_seconds
                want_ckpt = (self.epoch == total or bool(k and self.epoch % k == 0)
                             or bool(secs and time.monotonic() - last_ckpt >= secs))
                want_ckpt = self._rank0_decides(want_ckpt)  # the clocks of the ranks may disagree
                ckpt_dir = None
                if want_ckpt:
                    state = self.state()  # every rank: it gathers each rank's random state
                    if self.rank == 0:
                        ckpt_dir = checkpoint_dir or checkpoint.temporary_dir()
                        checkpoint.save(ckpt_dir, state)
                        self.checkpoint_epoch = self.epoch
                    last_ckpt = time.monotonic()
                try:
                    if report is not None:
                        report(metrics, ckpt_dir)
                finally:
                    if ckpt_dir and not checkpoint_dir:
                        import shutil

                        shutil.rmtree(ckpt_dir, ignore_errors=True)
        except OSError as e:  # TensorBoard's writer on a full disk (checkpoint.save words its own failure)
            if e.errno not in DISK_FULL:
                raise
            raise _disk_full(e, self.tb) from None
        finally:
            try:
                if self.tb is not None:
                    self.tb.close()
            except OSError as e:  # its background thread's failed write surfaces again here
                if e.errno not in DISK_FULL:
                    raise
                raise _disk_full(e, self.tb) from None
            finally:
                threading.excepthook = hook
        return last

    def _rank0_decides(self, flag: bool) -> bool:
        """Rank 0's value of `flag` on every rank (a decision that leads into a collective must be the same on
        all of them); `flag` itself alone."""
        if not distributed.is_distributed():
            return flag
        import torch.distributed as dist

        t = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(t, 0)
        return bool(t.item())

    def _print(self, m: dict[str, Any]) -> None:
        losses = " ".join(f"{k}={v:.4g}" for k, v in m.items() if k.startswith("loss_"))
        test = f" test_error={m['test_error']:.2f}%" if "test_error" in m else ""
        print(f"[{self.spec.method}/{self.spec.data.name} seed={self.spec.seed}] epoch {m['epoch']}/{self.spec.epochs}"
              f" val_error={m['val_error']:.2f}%{test} {losses} ({m['epoch_seconds']:.1f}s,"
              f" {m['samples_per_second']:.0f} samples/s)", file=sys.stderr, flush=True)


def configure_cuda() -> None:
    """Settings for training on a CUDA device, made where the Trainer is given one (every path: in-process, Ray
    Train worker, Tune trial):

    - `torch.backends.cudnn.benchmark = True`: cuDNN times its convolution algorithms for each new input shape
      and keeps the fastest. Training shapes are fixed (the batch size), so this is paid once; the algorithm
      chosen may differ from run to run (GPU results are not bitwise reproducible anyway).
    - TF32 for float32 matrix products and convolutions (`torch.backends.cuda.matmul.allow_tf32`; cuDNN's
      convolutions use TF32 by default already): Ampere and newer GPUs multiply with 10-bit mantissas and
      accumulate in float32, several times faster. `SSL_RAY_TF32=0` keeps float32 exact (matrix products and
      convolutions). Code that needs exact float32 in one place (a finite difference far below TF32's
      resolution, such as VAT's xi = 1e-6 probe) runs it inside :func:`ssl_ray.nn.modes.full_precision`.

    Process-wide settings, which a CPU run never makes (so CPU numbers are untouched)."""
    torch.backends.cudnn.benchmark = True
    tf32 = os.environ.get("SSL_RAY_TF32", "1").strip().lower() not in ("0", "false", "no", "off")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


PROGRESS_SECONDS = float(os.environ.get("SSL_RAY_PROGRESS_SECONDS", 30))
"""Within a long epoch, a progress line on stderr at most this often (only where per-epoch lines are printed)."""


def _steps(n: int, show: bool, label: str):
    """range(n), printing `label: step i/n (p%), t s` every PROGRESS_SECONDS (long epochs: CIFAR on a CPU)."""
    t0 = last = time.monotonic()
    for i in range(n):
        yield i
        now = time.monotonic()
        if show and i + 1 < n and now - last >= PROGRESS_SECONDS:
            last = now
            print(f"{label}: step {i + 1}/{n} ({100 * (i + 1) / n:.0f}%), {now - t0:.0f}s", file=sys.stderr, flush=True)


def _loss_name(k: str) -> str:
    return k if k.startswith("loss_") else f"loss_{k}"


DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""The errnos of a write that found no room: a full disk, a full quota, the file size limit (ulimit -f)."""


def _disk_full(e: OSError, tb: Any) -> Exception:
    """A write that found no room (DISK_FULL) as one line naming the folder and the disk (data.files.write_failure):
    the TensorBoard writer's background thread reports it as an OSError from its next scalars() or close()."""
    from ..data.files import write_failure
    from ..errors import SSLRayError

    folder = os.path.dirname(e.filename) if e.filename else str(getattr(tb, "dir", None) or os.getcwd())
    return SSLRayError(f"cannot write the run's files in {folder}: {write_failure(folder, e)}")


def _quiet_full_disk_in_threads() -> Callable[[Any], Any]:
    """While fit runs: a thread that dies of a DISK_FULL OSError (TensorBoard's writer thread) is not printed as a
    traceback, as fit reports it in one line when the writer raises it again in this thread; anything else is
    printed as before. Returns the previous threading.excepthook, which fit puts back."""
    previous = threading.excepthook

    def hook(args: Any) -> None:
        if not (isinstance(args.exc_value, OSError) and args.exc_value.errno in DISK_FULL):
            previous(args)
    threading.excepthook = hook
    return previous
