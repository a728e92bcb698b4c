"""One training worker, without Ray: the body of an in-process `ssl-ray train`, of every Ray Train worker and of
every single-worker Tune trial (tuning/ adds only the numbered Ray lines around it).

`run_worker` sets the worker's torch threads, checks that a GPU it was given is usable, builds the Trainer,
continues the newest of the checkpoints it is handed, trains, and signals a divergence one way: a DIVERGED.txt
file holding the message, written into `marker_dir`, then DivergenceError. A folder holding that file among the
checkpoints to continue (a retried trial's folder, the last checkpoint of a run) fails at once, before any
compute: the same run would diverge again.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

import torch

from ..errors import DivergenceError, SSLRayError
from . import checkpoint
from .loop import Report, Trainer
from .spec import RunSpec

DIVERGED_FILE = "DIVERGED.txt"


def require_gpu(gpus: float) -> None:
    """Fail loudly when this worker was given GPUs but torch cannot use them (a torch build that needs a newer
    CUDA than the node's driver, or no driver at all), instead of silently training on the CPU."""
    if gpus > 0 and not torch.cuda.is_available():
        raise SSLRayError(f"asked for {gpus:g} GPU(s) but torch {torch.__version__} (CUDA {torch.version.cuda}) "
                          f"sees none on this node: check `nvidia-smi` against the torch build (clusters/README.md)")


def mark_diverged(folder: str | os.PathLike, message: str) -> None:
    """Record a divergence in `folder` (DIVERGED.txt)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / DIVERGED_FILE).write_text(message, encoding="utf-8")


def diverged(folder: str | os.PathLike | None) -> str | None:
    """The message of the divergence recorded in `folder`, or None."""
    f = Path(folder) / DIVERGED_FILE if folder is not None else None
    return f.read_text(encoding="utf-8") if f is not None and f.is_file() else None


def run_worker(spec: RunSpec, device: torch.device | str, report: Report | None = None,
               restore_from: Iterable[str | os.PathLike] = (), *, threads: float | None = None, gpus: float = 0.0,
               log_dir: str | None = None, progress: bool = True, checkpoint_dir: str | None = None,
               marker_dir: str | os.PathLike | None = None,
               started: Callable[[Trainer], None] | None = None) -> Trainer:
    """Train `spec` on `device` to its last epoch; returns the Trainer.

    report: called once per epoch with (metrics, checkpoint folder or None) (Trainer.fit). restore_from:
    checkpoint folders; the one furthest along is continued (each holding a state.pt; others are skipped), and
    one that records a divergence raises DivergenceError at once. threads: torch's threads (the CPUs given);
    gpus: the GPUs given (require_gpu). checkpoint_dir: where checkpoints are kept (else temporary folders handed to
    `report`). marker_dir: where a divergence is recorded before DivergenceError is raised. started: called with
    the Trainer before it trains (a caller that reports on Ctrl-C keeps it)."""
    folders = list(restore_from)
    for folder in folders:
        message = diverged(folder)
        if message is not None:
            raise DivergenceError(message)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    require_gpu(gpus)
    trainer = Trainer(spec, device=device, log_dir=log_dir, progress=progress)
    states = [checkpoint.load(f) for f in folders if (Path(f) / checkpoint.STATE_FILE).is_file()]
    if states:
        trainer.restore(max(states, key=lambda s: int(s["epoch"])))
    if started is not None:
        started(trainer)
    try:
        trainer.fit(report, checkpoint_dir=checkpoint_dir)
    except DivergenceError as e:
        if marker_dir is not None:
            mark_diverged(marker_dir, str(e))
        raise
    return trainer

