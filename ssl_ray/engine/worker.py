"""One training worker, without Ray: the body of an in-process `ssl-ray train`, of every Ray Train worker and of
every single-worker Tune trial (tuning/ adds only the numbered Ray lines around it).

`run_worker` sets the worker's torch threads, checks that a GPU it was given is usable, builds the Trainer,
continues the newest of the checkpoints it is handed that loads (`newest_loadable`), trains, and signals a
divergence one way: a DIVERGED.txt file holding the message, written into `marker_dir`, then DivergenceError. A
folder holding that file among the checkpoints to continue (a retried trial's folder, the last checkpoint of a run)
fails at once, before any compute: the same run would diverge again.

A checkpoint that cannot be loaded (truncated, corrupt, a refused payload) is passed over for the newest one
that loads, said in one line on stderr (`Restored.line`); when checkpoints were handed and none loads, the run
fails in one line naming every file: starting again from scratch would discard the work without saying.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

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


@dataclass(frozen=True)
class Restored:
    """Which checkpoint a worker continues: `folder` and its `epoch` (None and 0: none, a fresh start), and
    `skipped`, each checkpoint file passed over because it cannot be loaded, with why: (file, reason)."""

    folder: str | None = None
    epoch: int = 0
    skipped: tuple[tuple[str, str], ...] = ()

    def line(self) -> str:
        """The one line that says a checkpoint was passed over ('' when none was)."""
        if not self.skipped:
            return ""
        return (f"checkpoint{'s' if len(self.skipped) > 1 else ''} {listing(self.skipped)} cannot be loaded; "
                f"continuing from {self.folder} (epoch {self.epoch})")

    def named(self, shown: dict[str, str]) -> "Restored":
        """This choice naming each checkpoint by its own path: `shown` maps a local copy (a checkpoint fetched from
        a bucket into a temporary folder) to the path it was copied from."""
        def name(f: str) -> str:
            for local, own in shown.items():
                if f == local or f.startswith(local.rstrip("/") + "/"):
                    return own + f[len(local):]
            return f

        return Restored(name(self.folder) if self.folder else None, self.epoch,
                        tuple((name(f), why) for f, why in self.skipped))

    def record(self) -> dict[str, Any]:
        """What a run's results keep of a fallback ({} when nothing was passed over): restored_from_epoch (the
        epoch continued) and skipped_checkpoints (the files passed over, each with why, '; '-separated)."""
        if not self.skipped:
            return {}
        return {"restored_from_epoch": self.epoch,
                "skipped_checkpoints": "; ".join(f"{f} ({why})" for f, why in self.skipped)}


def listing(skipped: Iterable[tuple[str, str]]) -> str:
    """Files passed over, each with why, short enough for one line: the state.pt files of one folder that
    failed for the same reason in one shell-style brace, `/run/trial/{checkpoint_000004,checkpoint_000001}/state.pt
    (reason)`."""
    groups: dict[tuple[str, str, str], list[str]] = {}
    for f, why in skipped:
        p = Path(f)
        groups.setdefault((str(p.parent.parent), p.name, why), []).append(p.parent.name)
    return "; ".join(f"{parent}/{names[0] if len(names) == 1 else '{' + ','.join(names) + '}'}/{file} ({why})"
                     for (parent, file, why), names in groups.items())


def newest_loadable(folders: Iterable[str | os.PathLike],
                    fallbacks: Iterable[str | os.PathLike] = ()) -> tuple[dict[str, Any] | None, Restored]:
    """The training state to continue and where it came from.

    Every folder of `folders` holding a state.pt is loaded and the one furthest along (highest epoch) wins;
    one that cannot be loaded (checkpoint.Unreadable) is passed over and listed in Restored.skipped. Only when
    none of them loads are `fallbacks` tried, in their order (the caller's newest first: the older checkpoints
    kept next to the latest one; it may be a generator that fetches each only when asked), the first that loads
    winning. No state.pt anywhere: (None, Restored()), a fresh start. State files and none loads: SSLRayError
    naming every file."""
    best: tuple[str, dict[str, Any]] | None = None
    skipped: list[tuple[str, str]] = []

    def attempt(folder: str | os.PathLike) -> dict[str, Any] | None:
        if not (Path(folder) / checkpoint.STATE_FILE).is_file():
            return None
        try:
            return checkpoint.load(folder)
        except checkpoint.Unreadable as e:
            skipped.append((str(e.path), e.reason))
            return None

    for folder in folders:
        state = attempt(folder)
        if state is not None and (best is None or int(state["epoch"]) > int(best[1]["epoch"])):
            best = (str(folder), state)
    if best is None and skipped:
        for folder in fallbacks:
            state = attempt(folder)
            if state is not None:
                best = (str(folder), state)
                break
    if best is None:
        if skipped:
            raise SSLRayError(f"no checkpoint to continue can be loaded: {listing(skipped)} (starting again from "
                              f"scratch would discard the run's epochs: remove them to do that)")
        return None, Restored()
    return best[1], Restored(best[0], int(best[1]["epoch"]), tuple(skipped))


def run_worker(spec: RunSpec, device: torch.device | str, report: Report | None = None,
               restore_from: Iterable[str | os.PathLike] = (), *, threads: float | None = None, gpus: float = 0.0,
               log_dir: str | None = None, progress: bool = True, checkpoint_dir: str | None = None,
               marker_dir: str | os.PathLike | None = None,
               started: Callable[[Trainer], None] | None = None, fallbacks: Iterable[str | os.PathLike] = (),
               restored: Callable[[Restored], None] | None = None) -> Trainer:
    """Train `spec` on `device` to its last epoch; returns the Trainer.

    report: called once per epoch with (metrics, checkpoint folder or None) (Trainer.fit). restore_from:
    checkpoint folders; the one furthest along that loads is continued (each holding a state.pt; others are
    skipped), and one that records a divergence raises DivergenceError at once; fallbacks: older checkpoints,
    newest first, tried only when none of restore_from loads (newest_loadable). restored: called with the choice
    (Restored) before any compute; by default its line, when a checkpoint was passed over, goes to stderr.
    threads: torch's threads (the CPUs given); gpus: the GPUs given (require_gpu). checkpoint_dir: where checkpoints are kept (else temporary folders handed to
    `report`). marker_dir: where a divergence is recorded before DivergenceError is raised. started: called with
    the Trainer before it trains (a caller that reports on Ctrl-C keeps it)."""
    folders = list(restore_from)
    for folder in folders:
        message = diverged(folder)
        if message is not None:
            raise DivergenceError(message)
    state, choice = newest_loadable(folders, _checked(fallbacks))  # before any compute: it may refuse the run
    if restored is not None:
        restored(choice)
    elif choice.skipped:
        print(choice.line(), file=sys.stderr, flush=True)
    if threads is not None:
        torch.set_num_threads(max(1, int(threads)))
    require_gpu(gpus)
    trainer = Trainer(spec, device=device, log_dir=log_dir, progress=progress)
    if state is not None:
        trainer.restore(state)
    if started is not None:
        started(trainer)
    try:
        trainer.fit(report, checkpoint_dir=checkpoint_dir)
    except DivergenceError as e:
        if marker_dir is not None:
            mark_diverged(marker_dir, str(e))
        raise
    return trainer



def _checked(folders: Iterable[str | os.PathLike]) -> Iterable[str | os.PathLike]:
    """`folders`, each refused (DivergenceError) when it records a divergence, as it is reached."""
    for folder in folders:
        message = diverged(folder)
        if message is not None:
            raise DivergenceError(message)
        yield folder
