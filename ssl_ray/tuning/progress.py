"""What `ssl-ray tune` shows while it runs: one compact line on stderr instead of Ray's status table.

    [tune 2m05s] trials 3/8 done (1 stopped early, 0 errored), 2 running | epochs 14/31 | ETA ~2m40s | best val 12.34%

every 15 s (a heartbeat every 60 s under --quiet), and once at the end. The plan's trial count and epoch budget
are the dry run's (plan.plan: epochs_nominal, what ASHA runs if it keeps exactly 1/reduction_factor at each rung);
the ETA is elapsed x (epochs left / epochs run), the epochs left being at least those of the trials still running.
progress_line is a pure function of a Snapshot (tests build them by hand); ProgressCallback is the ray.tune
Callback that fills the Snapshot from Tune's trials and prints the line (on_step_end, which Tune calls every loop
turn; on_trial_result and on_trial_complete keep the counts). Ray-specific lines: [1] (Tune's Callback hooks and
Trial fields, Ray 2.60).

dry_run_estimate: `--dry-run`'s rough time, epochs x seconds per epoch measured by the newest finished experiment
of the same method and dataset in the storage (history.parquet's epoch_seconds), divided by the trials that run
at once; "unknown" when there is none.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

INTERVAL_S = 15.0
QUIET_INTERVAL_S = 60.0


@dataclass
class Snapshot:
    """A search at one moment."""

    trials: int  # planned
    epochs_planned: float  # the plan's nominal epoch budget
    max_epochs: int
    done: int = 0  # finished: ran to the end or stopped early
    stopped: int = 0  # of `done`, stopped early by the scheduler
    errored: int = 0
    running: int = 0
    epochs: int = 0  # epochs run so far, all trials
    running_left: int = 0  # epochs the running trials have left at most
    elapsed: float = 0.0
    best: float | None = None  # best validation error so far (%)


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def eta(s: Snapshot) -> float | None:
    """Seconds left: elapsed x epochs left / epochs run (None before the first epoch)."""
    if s.epochs <= 0 or s.elapsed <= 0:
        return None
    left = max(s.epochs_planned - s.epochs, s.running_left, 0.0)
    if s.done + s.errored >= s.trials and s.running == 0:
        left = 0.0
    return s.elapsed * left / s.epochs


def progress_line(s: Snapshot) -> str:
    """The line printed while a search runs (module docstring)."""
    planned = max(s.epochs_planned, s.epochs)
    left = eta(s)
    best = "-" if s.best is None or not math.isfinite(s.best) else f"{s.best:.2f}%"
    return (f"[tune {duration(s.elapsed)}] trials {s.done}/{s.trials} done ({s.stopped} stopped early, "
            f"{s.errored} errored), {s.running} running | epochs {s.epochs}/{planned:.0f} | "
            f"ETA {'?' if left is None else '~' + duration(left)} | best val {best}")


class ProgressCallback:
    """Built lazily as a ray.tune Callback subclass (importing this module starts nothing): progress_callback()."""


def progress_callback(trials: int, epochs_planned: float, max_epochs: int, *, quiet: bool = False,
                      stream: IO[str] | None = None, clock: Callable[[], float] = time.monotonic,
                      interval: float | None = None) -> Any:
    """The Tune callback that prints progress_line to `stream` (stderr) every `interval` seconds (15, 60 quiet)."""
    from ray.tune import Callback

    every = interval if interval is not None else QUIET_INTERVAL_S if quiet else INTERVAL_S

    class _Progress(Callback, ProgressCallback):  # [1]
        def __init__(self) -> None:
            self.snap = Snapshot(trials=trials, epochs_planned=epochs_planned, max_epochs=max_epochs)
            self.start: float | None = None
            self.last = 0.0
            self.lines: list[str] = []  # what was printed (tests read it)
            self.epochs_of: dict[str, int] = {}

        def _now(self) -> float:
            t = clock()
            if self.start is None:
                self.start, self.last = t, t
            return t

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self._now()
            self.epochs_of[trial.trial_id] = max(self.epochs_of.get(trial.trial_id, 0),
                                                 int(result.get("epoch") or result.get("training_iteration") or 0))
            v = result.get("val_error")
            if isinstance(v, (int, float)) and math.isfinite(v) and (self.snap.best is None or v < self.snap.best):
                self.snap.best = float(v)

        def refresh(self, trials) -> Snapshot:
            s, now = self.snap, self._now()
            s.elapsed = now - (self.start or now)
            status = [t.status for t in trials]
            s.running = status.count("RUNNING") + status.count("PAUSED")
            s.errored = status.count("ERROR")
            finished = [t for t in trials if t.status == "TERMINATED"]
            s.done = len(finished)
            s.stopped = sum(self.epochs_of.get(t.trial_id, 0) < max_epochs for t in finished)
            s.epochs = sum(self.epochs_of.values())
            s.running_left = sum(max_epochs - self.epochs_of.get(t.trial_id, 0) for t in trials
                                 if t.status in ("RUNNING", "PAUSED", "PENDING"))
            return s

        def emit(self, trials) -> None:
            line = progress_line(self.refresh(trials))
            self.lines.append(line)
            print(line, file=stream or sys.stderr, flush=True)

        def on_step_end(self, iteration, trials, **info):
            now = self._now()
            if now - self.last >= every:
                self.last = now
                self.emit(trials)

        def on_experiment_end(self, trials, **info):
            self.emit(trials)

    return _Progress()


def search_progress(space: Any, o: Any, *, trials: int | None = None) -> Any:
    """progress_callback for run_tune: the plan's trials and nominal epochs (plan.plan), quiet under --quiet."""
    from .plan import plan

    p = plan(space, o)
    return progress_callback(trials if trials is not None else p["trials"], p["epochs_nominal"],
                             space.scheduler.max_epochs, quiet=not getattr(o, "progress", True))


# ---- --dry-run's time estimate --------------------------------------------------------------------------
def measured_epoch_seconds(storage: str, method: str, dataset: str) -> tuple[float, str] | None:
    """The median epoch_seconds of the newest finished experiment of `method` on `dataset` under the local folder
    `storage` (its summary.json and history.parquet), and that experiment's folder; None when there is none."""
    root = Path(storage)
    if "://" in storage or not root.is_dir():
        return None
    found = []
    for summary in root.glob("*/summary.json"):
        try:
            doc = json.loads(summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if doc.get("method") == method and doc.get("dataset") == dataset and \
                (summary.parent / "history.parquet").is_file():
            found.append((summary.stat().st_mtime, summary.parent))
    for _, exp in sorted(found, reverse=True):
        try:
            import pyarrow.parquet as pq

            col = pq.read_table(exp / "history.parquet", columns=["epoch_seconds"]).column(0).to_pylist()
        except Exception:  # noqa: BLE001 - an older or damaged file: look at the next one
            continue
        values = [float(v) for v in col if isinstance(v, (int, float)) and math.isfinite(v) and v > 0]
        if values:
            return statistics.median(values), str(exp)
    return None


def dry_run_estimate(p: dict[str, Any], storage: str, slots: int | None) -> str:
    """--dry-run's line: epochs (nominal) x measured seconds per epoch / trials at once, or "unknown"."""
    got = measured_epoch_seconds(storage, p["method"], p["dataset"])
    if got is None:
        return (f"rough time: unknown (no finished {p['method']} search on {p['dataset']} in {storage} to measure "
                f"an epoch)")
    per_epoch, exp = got
    at_once = max(1, min(slots or 1, p["trials"]))
    seconds = p["epochs_nominal"] * per_epoch / at_once
    return (f"rough time: ~{duration(seconds)} ({p['epochs_nominal']:g} epochs x {per_epoch:.2f} s per epoch, "
            f"measured in {os.path.basename(exp)}, / {at_once} trial(s) at once; Ray's start and the trials' "
            f"set-up come on top)")
