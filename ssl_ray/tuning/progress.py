"""What `ssl-ray tune` shows while it runs: one compact line on stderr instead of Ray's status table.

    [tune 2m05s] trials 3/9 done (2 stopped early, 0 errored), 2 running | epochs 38/~150 (ASHA: ~4.3/9 past 5,
    ~2.1/4.3 past 15) | ETA ~5m48s | best val 12.34%

once when Tune's loop first turns, then every 15 s (a heartbeat every 50 s under --quiet, so at least one a minute;
SSL_RAY_TUNE_PROGRESS_SECONDS sets both), and once at the end.

The epochs in all ("/~150") are an expectation, not the dry run's nominal budget, which assumes ASHA keeps exactly
1/reduction_factor at each rung: an asynchronous ASHA keeps more (the first trial at a rung always passes it, the
second half the time, ...), so a run could reach 350 epochs of a nominal 233 with an ETA low all along. Here each
trial not finished runs to its next rung; of those that will arrive at a rung, the number expected to pass follows
ASHA's own rule for trials that are alike (passing(): a trial arriving after k others passes with chance
(k - q(k - 1)) / (k + 1), q = 1 - 1/reduction_factor), counted from how many have reached the rung so far; those go
on to the next rung, and so on. SHA keeps ceil(1/reduction_factor) of all. The line says what it expects ("ASHA:
~4.3/9 past 5": of 9 trials reaching epoch 5, about 4.3 go on). Without rungs (FIFO, PBT) the total is exact (every
trial runs max_epochs); with BOHB's brackets, not known ahead, it is a maximum ("at most"). A searcher whose later
trials are better than its first ones (TPE) keeps more than this; a long run's later lines know more. The ETA is
elapsed x (epochs expected left / epochs run). expect() is the pure estimate (tests feed it synthetic trials),
progress_line a pure function of a Snapshot; ProgressCallback is the ray.tune Callback that fills the Snapshot from
Tune's trials and prints the line (on_step_end, which Tune calls every loop turn; on_trial_result keeps each
trial's epochs). Ray-specific lines: [1] (Tune's Callback hooks and Trial fields, Ray 2.60).

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable

INTERVAL_S = 15.0
QUIET_INTERVAL_S = 50.0  # --quiet: a line at least once a minute, Tune's loop turn included
INTERVAL_ENV = "SSL_RAY_TUNE_PROGRESS_SECONDS"
"""Seconds between progress lines, with or without --quiet (default 15, 50 with --quiet)."""
FINISHED = ("TERMINATED", "ERROR")


@dataclass
class Rungs:
    """Where the scheduler may stop a trial, as the estimate of the epochs in all sees it."""

    at: list[int] = field(default_factory=list)  # decision epochs below max_epochs (ASHA's, SHA's rungs)
    rf: float = 1.0  # reduction_factor: by design a rung keeps 1/rf
    label: str = ""  # ASHA, SHA: named in the line
    synchronous: bool = False  # SHA: a rung keeps ceil(1/rf) of all the trials (else ASHA's rule: passing())
    bounded: bool = False  # it stops trials at epochs not known ahead (BOHB): the total is a maximum


@dataclass
class Snapshot:
    """A search at one moment."""

    trials: int  # planned
    max_epochs: int
    done: int = 0  # finished: ran to the end or stopped early
    stopped: int = 0  # of `done`, stopped early by the scheduler
    errored: int = 0
    running: int = 0
    epochs: int = 0  # epochs run so far, all trials
    left: float = 0.0  # epochs expected still to run, all trials (expect())
    basis: str = ""  # what `left` rests on ("" when it is exact)
    elapsed: float = 0.0
    best: float | None = None  # best validation error so far (%)
    what: str = "tune"  # the line's tag: tune, or confirm (the best configuration retrained with other seeds)


def duration(seconds: float) -> str:
    """1h02m, 3m05s, 42s."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _n(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def passing(k: int, rf: float) -> float:
    """The chance that a trial passes an ASHA rung at which `k` trials were recorded before it, the trials being
    alike (exchangeable). Ray's cutoff is the (1 - 1/rf) percentile of the k recorded values, interpolated between
    them, so the chance is (k - q(k - 1)) / (k + 1) with q = 1 - 1/rf: 1 for the first trial, 1/2 for the second,
    tending to 1/rf. (Checked against a Monte Carlo of that cutoff in tests/test_progress.py.)"""
    if k <= 0:
        return 1.0
    q = 1 - 1 / rf
    return (k - q * (k - 1)) / (k + 1)


def survivors(r: Rungs, recorded: int, kept: int, arriving: float) -> float:
    """Trials expected to pass a rung of the `arriving` ones still to reach it, `recorded` having reached it (of
    which `kept` passed). ASHA: each new one passes with passing(k) (fractional arrivals weigh in linearly);
    SHA: the rung keeps ceil(all that reach it / rf) in all."""
    if r.synchronous:
        return max(0.0, math.ceil((recorded + arriving) / r.rf - 1e-9) - kept)
    whole = int(arriving)
    got = sum(passing(recorded + j, r.rf) for j in range(whole))
    return got + (arriving - whole) * passing(recorded + whole, r.rf)


def expect(trials: int, seen: list[tuple[str, int]], max_epochs: int, r: Rungs) -> tuple[float, str]:
    """(epochs expected still to run, what that rests on) for a search of `trials` planned trials of which `seen`
    ((Tune status, epochs run) each) have been created; the others start at epoch 0. Every trial not finished runs
    to its next rung (a PAUSED one at a rung, SHA, waits there undecided); the rung lets through survivors() of
    those arriving; those go on to the next rung, and so on to max_epochs. Pure: the tests feed it by hand."""
    todo = [(st, e) for st, e in seen if st not in FINISHED] + [("PENDING", 0)] * max(0, trials - len(seen))
    if not todo:
        return 0.0, ""
    bounds = list(r.at) + [max_epochs]
    arriving = [0.0] * len(bounds)
    left = 0.0
    for st, e in todo:
        i = next((j for j, b in enumerate(bounds) if b > e or (b == e and st == "PAUSED")), len(bounds) - 1)
        left += max(0, bounds[i] - e)
        arriving[i] += 1
    said = []
    for i, rung in enumerate(r.at):
        recorded = sum(e > rung or (e == rung and st != "PAUSED") for st, e in seen)
        kept = sum(e > rung or (e == rung and st == "RUNNING") for st, e in seen)
        more = survivors(r, recorded, kept, arriving[i])
        left += more * (bounds[i + 1] - rung)
        arriving[i + 1] += more
        said.append(f"~{_n(kept + more)}/{_n(recorded + arriving[i])} past {rung}")
    if r.bounded:
        return left, f"at most: {r.label} stops trials at epochs not known ahead"
    return left, (f"{r.label}: " + ", ".join(said)) if said else ""


def eta(s: Snapshot) -> float | None:
    """Seconds left: elapsed x epochs expected left / epochs run (None before the first epoch)."""
    if s.epochs <= 0 or s.elapsed <= 0:
        return None
    if s.done + s.errored >= s.trials and s.running == 0:
        return 0.0
    return s.elapsed * max(s.left, 0.0) / s.epochs


def progress_line(s: Snapshot) -> str:
    """The line printed while a search runs (module docstring)."""
    left = eta(s)
    best = "-" if s.best is None or not math.isfinite(s.best) else f"{s.best:.2f}%"
    total = f"{s.epochs}" if s.left <= 0 else f"~{s.epochs + s.left:.0f}" if s.basis else f"{s.epochs + s.left:.0f}"
    return (f"[{s.what} {duration(s.elapsed)}] trials {s.done}/{s.trials} done ({s.stopped} stopped early, "
            f"{s.errored} errored), {s.running} running | epochs {s.epochs}/{total}"
            + (f" ({s.basis})" if s.basis and s.left > 0 else "")
            + f" | ETA {'?' if left is None else '~' + duration(left)} | best val {best}")


class ProgressCallback:
    """Built lazily as a ray.tune Callback subclass (importing this module starts nothing): progress_callback()."""


def progress_callback(trials: int, max_epochs: int, rungs: Rungs | None = None, *, quiet: bool = False,
                      stream: IO[str] | None = None, clock: Callable[[], float] = time.monotonic,
                      interval: float | None = None, what: str = "tune") -> Any:
    """The Tune callback that prints progress_line to `stream` (stderr) at Tune's first loop turn, then every
    `interval` seconds (default: 15, 50 quiet, or $SSL_RAY_TUNE_PROGRESS_SECONDS), and at the end. `rungs`: where
    the scheduler stops trials (none: FIFO). `what`: the line's tag."""
    from ray.tune import Callback

    every = interval if interval is not None else interval_s(quiet)
    r = rungs or Rungs()

    class _Progress(Callback, ProgressCallback):  # [1]
        def __init__(self) -> None:
            self.snap = Snapshot(trials=trials, max_epochs=max_epochs, what=what)
            self.every = every
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
            seen = [(t.status, self.epochs_of.get(t.trial_id, 0)) for t in trials]
            s.left, s.basis = expect(max(s.trials, len(seen)), seen, max_epochs, r)
            return s

        def emit(self, trials) -> None:
            line = progress_line(self.refresh(trials))
            self.lines.append(line)
            print(line, file=stream or sys.stderr, flush=True)

        def on_step_end(self, iteration, trials, **info):
            now = self._now()
            if not self.lines or now - self.last >= every:  # a first line as soon as Tune's loop turns
                self.last = now
                self.emit(trials)

        def on_experiment_end(self, trials, **info):
            self.emit(trials)

    return _Progress()


def interval_s(quiet: bool) -> float:
    """Seconds between lines: $SSL_RAY_TUNE_PROGRESS_SECONDS when set (a positive number; anything else is
    ignored with a warning), else 15 (50 quiet)."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if math.isfinite(value) and value > 0:
            return value
        print(f"warning: {INTERVAL_ENV}={raw!r} ignored (not a positive number of seconds)", file=sys.stderr)
    return QUIET_INTERVAL_S if quiet else INTERVAL_S


def rungs_of(space: Any) -> Rungs:
    """The space's scheduler as the estimate sees it: its rungs and 1/reduction_factor (schedulers/)."""
    from . import schedulers

    s = space.scheduler
    kind = schedulers.get(s.name)
    at = list(kind.rungs(s))
    halving = getattr(kind, "survivors", None)  # schedulers.base.Halving: how many a rung keeps of `alive`
    return Rungs(at=at, rf=float(s.reduction_factor or 1), label=kind.label or s.name,
                 synchronous=halving is not None and halving(1.0, 2) == 1.0,  # SHA's rule rounds up
                 bounded=bool(kind.rungs_not_drawn))


def search_progress(space: Any, o: Any, *, trials: int | None = None) -> Any:
    """progress_callback for run_tune: the plan's trials (plan.plan), the scheduler's rungs, quiet under --quiet."""
    from .plan import plan

    n = trials if trials is not None else plan(space, o)["trials"]
    return progress_callback(n, space.scheduler.max_epochs, rungs_of(space), quiet=not getattr(o, "progress", True))


def confirm_progress(runs: int, space: Any, o: Any) -> Any:
    """progress_callback for the confirmation runs (tune.confirm: the best configuration retrained with `runs`
    seeds, FIFO, max_epochs each): `[confirm 1m05s] trials 0/2 done ...`, as often as the search's lines, so that
    `compare --quiet` keeps its heartbeat through them."""
    return progress_callback(runs, space.scheduler.max_epochs, Rungs(), quiet=not getattr(o, "progress", True),
                             what="confirm")


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


def plan_rungs(p: dict[str, Any]) -> Rungs:
    """Rungs from the dry run's plan (plan.plan): its scheduler's rungs and reduction factor."""
    from . import schedulers

    kind = schedulers.get(p["scheduler"])
    halving = getattr(kind, "survivors", None)
    return Rungs(at=list(p.get("rungs") or []), rf=float(p.get("reduction_factor") or 1), label=kind.label,
                 synchronous=halving is not None and halving(1.0, 2) == 1.0, bounded=bool(kind.rungs_not_drawn))


def dry_run_estimate(p: dict[str, Any], storage: str, slots: int | None) -> str:
    """--dry-run's line: the epochs expected (expect(), as the progress line's first estimate) x measured seconds
    per epoch / trials at once, or "unknown"."""
    got = measured_epoch_seconds(storage, p["method"], p["dataset"])
    if got is None:
        return (f"rough time: unknown (no finished {p['method']} search on {p['dataset']} in {storage} to measure "
                f"an epoch)")
    per_epoch, exp = got
    at_once = max(1, min(slots or 1, p["trials"]))
    epochs, basis = expect(p["trials"], [], p["max_epochs"], plan_rungs(p))
    seconds = epochs * per_epoch / at_once
    return (f"rough time: ~{duration(seconds)} ({epochs:.0f} epochs expected{' (' + basis + ')' if basis else ''} x "
            f"{per_epoch:.2f} s per epoch, measured in {os.path.basename(exp)}, / {at_once} trial(s) at once; "
            f"Ray's start and the trials' set-up come on top)")
