"""Bookkeeping at scale (issue 29): what the driver and the experiment storage pay per result as a search grows.

N = 100, 300, 1000 trials of a method that only sleeps (`sleepy`: each epoch one step that sleeps --epoch-seconds,
a two-parameter "classifier" whose validation error depends on the searched `radius`, so ASHA has something to
cut), E epochs each, on a local Ray instance with more logical CPUs than cores (--cpus 16, one per trial), with
ASHA and with FIFO. Printed per search:

  wall / theoretical   run_tune's wall time against the least it could take: the epochs the trials ran x
                       epoch-seconds / slots (ASHA runs fewer epochs than FIFO; that count is the one used);
  driver CPU / result  CPU seconds of this process (resource.getrusage, user + system, all threads: Tune's loop,
                       its callbacks, ssl-ray's recorder, the final tables) over run_tune, per reported result;
  storage / result     what reached the experiment folder, counted by a watcher process through inotify over
                       the whole storage tree (every process: the driver's records, result.json pushes, Tune's
                       experiment-state syncs, the trials' checkpoints): a file written and closed = one PUT of
                       its size (what it costs in a bucket), a rename = one COPY request; per reported result;
  report / export      `ssl-ray report EXP --trials` and `ssl-ray export EXP` on the finished experiment, as
                       commands (process start included), and the in-process read of what --resume reads
                       (experiment.load + collect);
  resume               (--resume-at-half) a second search of the same size cut off (experiment.INTERRUPT, what
                       Ctrl-C sets) after half the first one's wall time, then `--resume`d: the resumed
                       run_tune's wall, and its own read of the experiment before any trial starts.

The method is registered the way users register theirs: this file is also the plugin module
($SSL_RAY_PLUGINS=scale_bookkeeping, benchmarks/ on PYTHONPATH), imported by every Ray worker.

    python benchmarks/scale_bookkeeping.py [--n 100 300 1000] [--schedulers asha fifo] [--epochs 3]
                                           [--epoch-seconds 0.1] [--cpus 16] [--resume-at-half] [--json FILE]
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch

from ssl_ray.config import hp
from ssl_ray.methods.common import ClassifierConfig, ClassifierMethod
from ssl_ray.methods.registry import register

PLUGIN = "scale_bookkeeping"


@dataclass
class SleepyConfig(ClassifierConfig):
    epoch_seconds: float = hp(0.1, "seconds each epoch sleeps (its only step)", low=0)
    radius: float = hp(0.75, "predict class 1 (inner circle) inside this radius: the validation error's knob", low=0)


class Sleepy(ClassifierMethod[SleepyConfig]):
    """Sleeps instead of training: the trial's cost is the sleep plus what the platform adds."""
    name = "sleepy"
    Config = SleepyConfig
    paper = "benchmark plugin (scale_bookkeeping.py)"

    def build(self) -> None:
        self.net = torch.nn.Linear(self.info.input_shape[0], self.info.num_classes)
        self.modules["net"] = self.net
        self.optimizers["opt"] = torch.optim.SGD(self.net.parameters(), lr=0.0)

    def train_step(self, batch):
        time.sleep(self.cfg.epoch_seconds)
        return {"loss_lab": torch.zeros(())}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        r = x.flatten(1).norm(dim=1, keepdim=True)
        return torch.cat([r - self.cfg.radius, self.cfg.radius - r], dim=1)  # outer circle = class 0


if __name__ != "__main__":  # imported as the plugin (driver's registry and every worker); not twice as __main__
    register(Sleepy)


SPACE = """
method: sleepy
dataset: {{name: circles, labels: 10}}
fixed: {{epoch_seconds: {sleep}, steps_per_epoch: 1, batch_size: 16}}
search:
  radius: {{uniform: [0.4, 1.1]}}
scheduler: {{name: {sched}, max_epochs: {epochs}, grace_epochs: 1, reduction_factor: 3}}
num_samples: {n}
"""


# ---- the storage watcher (a separate process: its CPU is not the driver's) -----------------------------------
def watch(root: str, out: str) -> None:
    """Count, under `root` (recursively), files written and closed (PUTs, with their size at close), renames
    (COPYs) and deletions, until SIGTERM; then write the counts to `out` as JSON. Folders made after the start
    are watched as they appear, and files already in them when the watch starts are counted as written."""
    import ctypes
    import json
    import os
    import signal
    import struct

    IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE, IN_ISDIR, IN_Q_OVERFLOW = (
        0x8, 0x40, 0x80, 0x100, 0x200, 0x40000000, 0x4000)
    mask = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    dirs: dict[int, str] = {}
    counts = {"puts": 0, "put_bytes": 0, "copies": 0, "copy_bytes": 0, "deletes": 0, "dirs": 0, "overflows": 0,
              "unwatched": 0, "snapshots": 0}

    def size(path: str) -> int | None:
        try:
            return os.stat(path).st_size
        except OSError:
            return None

    def add(path: str, scan: bool) -> None:
        wd = libc.inotify_add_watch(fd, path.encode(), mask)
        if wd < 0:
            counts["unwatched"] += 1
            return
        dirs[wd] = path
        counts["dirs"] += 1
        try:
            entries = list(os.scandir(path))
        except OSError:
            return
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                add(e.path, scan)
            elif scan and e.is_file(follow_symlinks=False):  # written before the watch: one PUT
                counts["puts"] += 1
                counts["put_bytes"] += size(e.path) or 0
                _tally(counts, e.path, size(e.path) or 0, written=True)

    add(root, scan=False)
    open(out + ".ready", "w").close()  # the watch is set: the caller may start writing

    class Stop(Exception):
        pass

    def _stop(*_):
        raise Stop  # the blocking read is retried after a handler that returns (PEP 475): raise instead

    signal.signal(signal.SIGTERM, _stop)
    pending_put: set[tuple[int, str]] = set()  # closed, but gone before its size was read: size it at the move
    moved_from: dict[int, tuple[int, str]] = {}
    header = struct.Struct("iIII")
    try:
        while True:
            _handle(os.read(fd, 1 << 20), header, dirs, counts, pending_put, moved_from, add, size)
    except Stop:
        pass
    with open(out, "w") as f:
        json.dump(counts, f)


KINDS = (("records", ("ssl_ray_trials",)), ("result.json", ("result.json", "ssl_ray_rows")),
         ("checkpoints", ("checkpoint_",)), ("tensorboard", ("tfevents",)),
         ("tune state", ("experiment_state", "tuner.pkl", "searcher-state", "basic-variant-state")),
         ("tables", ("results.parquet", "history.parquet", "summary.json")))


def kind_of(path: str) -> str:
    """Which part of the experiment a written file belongs to (the storage table's columns)."""
    for kind, marks in KINDS:
        if any(m in path for m in marks):
            return kind
    return "other"


SNAPSHOT_FILE = "experiment_state"  # Tune's experiment snapshot, experiment_state-<session>.json: one per snapshot


def _tally(counts: dict, path: str, nbytes: int, requests: int = 1, written: bool = False) -> None:
    k = counts.setdefault("by_kind", {}).setdefault(kind_of(path), [0, 0])
    k[0] += requests
    k[1] += nbytes
    if written and os.path.basename(path).startswith(SNAPSHOT_FILE):  # a snapshot reached the storage
        counts["snapshots"] = counts.get("snapshots", 0) + 1


def _handle(buf, header, dirs, counts, pending_put, moved_from, add, size) -> None:
    import os

    IN_CLOSE_WRITE, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE, IN_ISDIR, IN_Q_OVERFLOW = (
        0x8, 0x40, 0x80, 0x100, 0x200, 0x40000000, 0x4000)
    i = 0
    while i < len(buf):
        wd, m, cookie, length = header.unpack_from(buf, i)
        name = buf[i + header.size:i + header.size + length].rstrip(b"\0").decode("utf-8", "replace")
        i += header.size + length
        if m & IN_Q_OVERFLOW:
            counts["overflows"] += 1
            continue
        d = dirs.get(wd)
        if d is None:
            continue
        path = os.path.join(d, name)
        if m & IN_ISDIR:
            if m & (IN_CREATE | IN_MOVED_TO):
                add(path, scan=True)
            continue
        if m & IN_CLOSE_WRITE:
            counts["puts"] += 1
            s = size(path)
            if s is None:
                pending_put.add((wd, name))
                _tally(counts, path, 0, written=True)
            else:
                counts["put_bytes"] += s
                _tally(counts, path, s, written=True)
        elif m & IN_MOVED_FROM:
            moved_from[cookie] = (wd, name)
        elif m & IN_MOVED_TO:
            counts["copies"] += 1
            s = size(path) or 0
            counts["copy_bytes"] += s
            _tally(counts, path, 0, written=True)
            src = moved_from.pop(cookie, None)
            if src in pending_put:
                pending_put.discard(src)
                counts["put_bytes"] += s
                _tally(counts, path, s, requests=0)
        elif m & IN_DELETE:
            counts["deletes"] += 1
            _tally(counts, path, 0)


class Watcher:
    def __init__(self, root: str, out: str):
        import subprocess
        import sys

        self.out = out
        self.proc = subprocess.Popen([sys.executable, __file__, "--watch", root, "--watch-out", out])
        deadline = time.time() + 120
        while not os.path.exists(out + ".ready"):  # its watch is set before the search writes anything
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the storage watcher did not start (exit code {self.proc.poll()})")
            time.sleep(0.1)

    def stop(self) -> dict:
        import json
        import signal

        time.sleep(1.0)  # the last closes reach its queue
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        with open(self.out) as f:
            return json.load(f)


# ---- one search -----------------------------------------------------------------------------------------------
def _results(exp: str) -> tuple[int, float, float]:
    """(reported results, epochs x trials run, sum of the trials' time_total_s) from history.parquet."""
    from ssl_ray.tuning import results

    hist = results.read_histories(exp)
    rows = sum(len(rs) for rs in hist.values())
    epochs = sum(max((r["epoch"] for r in rs), default=0) for rs in hist.values())
    total = sum(max((r.get("time_total_s") or 0 for r in rs), default=0.0) for rs in hist.values())
    return rows, epochs, total


def _cli(args: list[str]) -> float:
    import os
    import subprocess
    import sys

    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", *args], capture_output=True, text=True,
                       env=os.environ.copy(), timeout=900)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"ssl-ray {' '.join(args)} failed: {r.stderr[-2000:]}")
    return dt


def _finished(exp: str) -> int:
    """Trials of the experiment at `exp` whose record says they finished (TERMINATED or ERROR)."""
    from ssl_ray.tuning import experiment

    try:
        from ssl_ray.tuning import records as R  # the per-trial store (issue 29), where the code has it
        recs = R.load(*experiment.fs_of(exp))
    except ImportError:
        try:
            recs = experiment.load(exp)[1]
        except Exception:
            return 0
    except Exception:
        return 0
    return sum(isinstance(r, dict) and r.get("status") in experiment.FINISHED for r in recs.values())


def _read_back(exp: str) -> float:
    """What --resume reads before any trial starts: the space document, the records and every trial's result.json
    (experiment.load + collect)."""
    from ssl_ray.tuning import experiment

    t0 = time.perf_counter()
    doc, records = experiment.load(exp)
    experiment.collect(exp, doc, records)
    return time.perf_counter() - t0


def one_search(a, tmp: str, n: int, sched: str) -> dict:
    import os
    import resource
    import threading

    from ssl_ray.tuning import experiment
    from ssl_ray.tuning.spaces import parse_space
    from ssl_ray.tuning.tune import TuneOptions, run_tune

    storage = os.path.join(tmp, f"store-{sched}-{n}")
    os.makedirs(storage)
    name = f"{sched}-{n}"
    exp = os.path.join(storage, name)
    space = parse_space(SPACE.format(sleep=a.epoch_seconds, sched=sched, epochs=a.epochs, n=n))
    watcher = Watcher(storage, os.path.join(tmp, f"watch-{name}.json"))
    ru0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    summary = run_tune(space, TuneOptions(cpus_per_trial=1, storage=storage, name=name, progress=False, seed=0))
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    counts = watcher.stop()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    rows, epochs, trial_s = _results(exp)
    slots = a.cpus
    out = {"n": n, "scheduler": sched, "trials": summary["num_trials"], "completed": summary["num_completed"],
           "stopped_early": summary["num_stopped_early"], "errored": summary["num_errored"], "results": rows,
           "wall_s": round(wall, 2), "theoretical_s": round(epochs * a.epoch_seconds / slots, 2),
           "trial_time_over_slots_s": round(trial_s / slots, 2),
           "driver_cpu_s": round(cpu, 2), "driver_cpu_ms_per_result": round(1000 * cpu / max(rows, 1), 2),
           "storage": counts,
           "put_bytes_per_result": round(counts["put_bytes"] / max(rows, 1)),
           "requests_per_result": round((counts["puts"] + counts["copies"] + counts["deletes"]) / max(rows, 1), 2),
           "records_file_bytes": os.path.getsize(os.path.join(exp, experiment.TRIALS_FILE))
           if os.path.exists(os.path.join(exp, experiment.TRIALS_FILE)) else None}
    out["wall_over_theoretical"] = round(wall / max(out["theoretical_s"], 1e-9), 2)
    out["read_back_s"] = round(_read_back(exp), 2)
    out["report_s"] = round(_cli(["report", exp, "--trials", "--format", "csv", "--output",
                                  os.path.join(tmp, f"report-{name}.csv")]), 2)
    out["export_s"] = round(_cli(["export", exp, "--output", os.path.join(tmp, f"export-{name}"), "--json"]), 2)
    if a.resume_at_half:
        cut = f"{name}-cut"
        cut_exp = os.path.join(storage, cut)
        done = threading.Event()

        def cut_at_half() -> None:  # Ctrl-C's flag, once half the trials have a finished record
            while not done.wait(0.5):
                if _finished(cut_exp) >= n / 2:
                    experiment.INTERRUPT.set()
                    return

        poller = threading.Thread(target=cut_at_half, daemon=True)
        poller.start()
        try:
            run_tune(parse_space(SPACE.format(sleep=a.epoch_seconds, sched=sched, epochs=a.epochs, n=n)),
                     TuneOptions(cpus_per_trial=1, storage=storage, name=cut, progress=False, seed=0))
            out["resume_note"] = "the search ended before the cut"
        except KeyboardInterrupt:
            pass
        finally:
            done.set()
            poller.join()
        cut_exp = os.path.join(storage, cut)
        out["resume_read_back_s"] = round(_read_back(cut_exp), 2)
        doc, records = experiment.load(cut_exp)
        left = sum(t["status"] == "INTERRUPTED" for t in experiment.collect(cut_exp, doc, records))
        space2, o2 = experiment.resume_setup("sleepy", {}, storage, cut)
        o2.progress = False
        t0 = time.perf_counter()
        s2 = run_tune(space2, o2)
        out["resume_s"] = round(time.perf_counter() - t0, 2)
        out["resume_trials_left"] = left
        out["resume_completed"] = s2["num_completed"] + s2["num_stopped_early"]
    return out


def rare_tune_snapshots() -> None:
    """Tune snapshots the experiment (experiment_state-*.json: every trial) and uploads the driver's whole staging
    folder (every trial's result.json, progress.csv, params.json) at least every TUNE_GLOBAL_CHECKPOINT_S (auto:
    10 s or more), and is forced to whenever a trial has saved CheckpointConfig.num_to_keep checkpoints since the
    last one (ray.tune.execution.tune_controller.TuneController._create_checkpoint_manager). ssl-ray never reads
    these snapshots (--resume reads its own files). This what-if makes them rare for the whole run, through
    ray_internals.rare_experiment_snapshots (item 10) where the code has it, else the same patch made here."""
    try:
        from ssl_ray.tuning.ray_internals import rare_experiment_snapshots
    except ImportError:  # code from before item 10
        rare_experiment_snapshots = None
    if rare_experiment_snapshots is not None:
        rare_experiment_snapshots().__enter__()  # left in force until the process ends
        return
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager
    from ray.tune.execution.tune_controller import TuneController

    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = "600"

    def manager(self):
        return _ExperimentCheckpointManager(storage=self._storage, checkpoint_period=self._checkpoint_period,
                                            sync_every_n_trial_checkpoints=None)

    TuneController._create_checkpoint_manager = manager


def snapshots_in_code() -> bool:
    """Whether this code's run_tune makes Tune's snapshots rare itself (ray_internals item 10 applied in tune.py)."""
    import inspect

    from ssl_ray.tuning import tune

    return "rare_experiment_snapshots" in inspect.getsource(tune)


def table(paths: list[str]) -> str:
    """The BENCHMARKS.md table from the JSON lines of earlier runs (--table)."""
    import json
    import os

    head = ("| code | sched | N | results | wall s | theor. s | wall / theor. | trial s / slots | driver CPU ms / result | "
            "storage req. / result | storage KB / result | of which Tune snapshots KB | records KB | report s | "
            "export s | resume read s | resume s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for path in paths:
        for line in open(path):
            r = json.loads(line)
            kinds = r["storage"].get("by_kind", {})
            res = max(r["results"], 1)
            lines.append("| " + " | ".join(str(x) for x in (
                f"{r.get('label') or os.path.basename(path)}{' (rare snapshots)' if r.get('tune_snapshots') == 'rare' else ''}"
                f"{', default' if r.get('snapshots_in_code') else ''}",
                r["scheduler"], r["n"], r["results"], r["wall_s"], r["theoretical_s"], r["wall_over_theoretical"],
                r["trial_time_over_slots_s"], r["driver_cpu_ms_per_result"], r["requests_per_result"],
                round(r["put_bytes_per_result"] / 1000, 1), round(kinds.get("tune state", [0, 0])[1] / res / 1000, 1),
                round(kinds.get("records", [0, 0])[1] / 1000, 1), r["report_s"], r["export_s"],
                r.get("resume_read_back_s", ""), r.get("resume_s", ""))) + " |")
    return "\n".join(lines)


def main() -> None:
    import argparse
    import json
    import os
    import sys
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--schedulers", nargs="+", default=["asha", "fifo"], choices=["asha", "fifo"])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--epoch-seconds", type=float, default=0.1)
    ap.add_argument("--cpus", type=int, default=16, help="logical CPUs of the local Ray instance (= trial slots)")
    ap.add_argument("--resume-at-half", action="store_true")
    ap.add_argument("--tune-snapshots", choices=["as-is", "rare"], default="as-is",
                    help="rare: what-if for Tune's own experiment snapshots (not ssl-ray code): no snapshot forced "
                         "each time a trial saved num_to_keep checkpoints (TuneController's checkpoint manager "
                         "patched in this driver) and TUNE_GLOBAL_CHECKPOINT_S=600; each snapshot uploads every "
                         "trial's driver-side files")
    ap.add_argument("--json", default=None, help="append one JSON line per search to this file")
    ap.add_argument("--table", nargs="+", default=None, metavar="JSONL",
                    help="print the markdown table of earlier runs' --json files instead of running")
    ap.add_argument("--label", default="", help="a name for this code in --json (e.g. old, new)")
    ap.add_argument("--watch", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--watch-out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.watch:
        return watch(a.watch, a.watch_out)
    if a.table:
        print(table(a.table))
        return
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["SSL_RAY_PLUGINS"] = ",".join(filter(None, [os.environ.get("SSL_RAY_PLUGINS"), PLUGIN]))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    sys.path.insert(0, here)
    torch.set_num_threads(1)
    if a.tune_snapshots == "rare":
        rare_tune_snapshots()
    with tempfile.TemporaryDirectory(prefix="ssl_ray_scale_") as tmp:
        os.environ.setdefault("SSL_RAY_CACHE", os.path.join(tmp, "cache"))
        from ssl_ray.tuning.cluster import init_ray

        init_ray(None, num_cpus=a.cpus, dashboard=False)
        print(f"# uptime: {os.popen('uptime').read().strip()}", flush=True)
        for n in a.n:
            for sched in a.schedulers:
                r = one_search(a, tmp, n, sched)
                r["load_after"] = os.getloadavg()[0]
                r["tune_snapshots"] = a.tune_snapshots
                r["snapshots_in_code"] = snapshots_in_code()
                r["label"] = a.label
                r["code"] = os.path.dirname(os.path.dirname(os.path.abspath(__import__("ssl_ray").__file__)))
                print(json.dumps(r), flush=True)
                if a.json:
                    with open(a.json, "a") as f:
                        f.write(json.dumps(r) + "\n")
        import ray

        ray.shutdown()


if __name__ == "__main__":
    main()
