"""Platform overhead: `ssl-ray train` (Ray Train, 1 worker) against a bare PyTorch loop, same machine, one run.

Three ways to make the same method steps, one after the other in this process:
  bare    the method built with `get_method(name)(cfg, info)` and `train_step` called on pre-made batches
          (no BatchStream, no loss sync, no evaluation, no checkpoint, no Ray);
  loop    ssl_ray's Trainer in this process (BatchStream, per-epoch loss sync, evaluation, TensorBoard, and a
          checkpoint per epoch as under Ray);
  ray     `run_train` = what `ssl-ray train` runs: a TorchTrainer with one 1-CPU worker running the Trainer,
          plus a checkpoint and a Ray report every epoch.
Figures (steps/second):
  train-only      steps / seconds inside the training steps (the loop's own `samples_per_second`);
  steady-state    steps / (wall time between two consecutive epochs' reports; for ray read from the TensorBoard
                  scalars' time stamps), i.e. everything an
                  epoch costs: steps, evaluation on val+test, checkpoint, report;
  start-up        for ray: wall time of run_train minus its epochs (worker group, imports, data, first report
                  latency), and `ray.init` timed on its own.
The bare loop is run before and after the others; its median is the reference (other jobs share the machine).

Wall-clock figures on a shared, overloaded machine mostly measure the other jobs. So every figure is also
given in CPU time: bare and loop from this process's CPU clock, ray from the CPU time of the whole process
tree under this driver (the Ray Train worker, Train controller, raylet, GCS, dashboard, the driver itself),
sampled from /proc every 0.25 s and read off at each epoch's TensorBoard time stamp. "CPU steps/s" =
steps / CPU seconds they cost; the ratio to the bare loop is the platform's overhead in CPU, which other
jobs on the machine change much less. The Train worker's CPU alone, and the CPU of every process of the tree
by name over the steady epochs, are printed too.

    python benchmarks/overhead.py [--quick] [--method i2gan] [--steps-per-epoch 150] [--epochs 5]
                                  [--no-preemption-watcher]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from ssl_ray import config as C  # noqa: E402
from ssl_ray.data import BatchStream, DataSpec, load_splits  # noqa: E402
from ssl_ray.engine.loop import RunSpec, Trainer  # noqa: E402
from ssl_ray.methods import get_method  # noqa: E402


TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> dict[int, tuple[float, str]]:
    """(CPU seconds (user + system), command name) of `root` and all its descendants, by pid, from /proc."""
    parent, cpu, name = {}, {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        f = stat[stat.rindex(")") + 2:].split()
        parent[int(d)], cpu[int(d)] = int(f[1]), (int(f[11]) + int(f[12])) / TICK
        name[int(d)] = stat[stat.index("(") + 1:stat.rindex(")")]
    out = {}
    for pid, c in cpu.items():
        p = pid
        while p and p != root and p in parent:
            p = parent[p]
        if p == root:
            out[pid] = (c, name[pid])
    return out


class TreeCPU(threading.Thread):
    """Samples (time, cumulative CPU seconds of the process tree under this process) every `period` s,
    and the same for the Ray Train worker processes alone (process name ray::RayTrainWo[rker]).
    A process's CPU counts with the last value seen (a process that exits loses under `period` of it)."""

    def __init__(self, period: float = 0.25):
        super().__init__(daemon=True)
        self.period, self.last, self.samples, self.worker_samples = period, {}, [], []
        self.snapshots: list[tuple[float, dict[int, tuple[float, str]]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.last.update(tree_cpu(os.getpid()))
            now = time.time()
            self.samples.append((now, sum(c for c, _ in self.last.values())))
            self.worker_samples.append((now, sum(c for c, n in self.last.values() if "RayTrainWo" in n)))
            self.snapshots.append((now, dict(self.last)))
            time.sleep(self.period)

    def by_process(self, t0: float, t1: float) -> dict[str, float]:
        """CPU seconds each process (by name) used between the snapshots nearest to t0 and t1."""
        a = min(self.snapshots, key=lambda s: abs(s[0] - t0))[1]
        b = min(self.snapshots, key=lambda s: abs(s[0] - t1))[1]
        out: dict[str, float] = {}
        for pid, (c, n) in b.items():
            out[n] = out.get(n, 0.0) + c - a.get(pid, (0.0, n))[0]
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def at(self, t: float, worker: bool = False) -> float:
        """Cumulative tree (or Train worker) CPU at wall time t (linear between samples)."""
        s = self.worker_samples if worker else self.samples
        for (t0, c0), (t1, c1) in zip(s, s[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / max(t1 - t0, 1e-9)
        return s[-1][1] if t > s[-1][0] else s[0][1]


def bare_steps_per_second(method: str, data: DataSpec, config: dict, steps: int, seed: int = 0) -> tuple[float, float]:
    """(wall steps/s, CPU steps/s) of the bare loop."""
    cls = get_method(method)
    cfg = C.build(cls.Config, config)
    splits = load_splits(data, seed)
    stream = BatchStream(splits, cfg.batch_size, cfg.labelled_share, seed, uses_labels=cls.uses_labels,
                         second_unlabelled=cls.second_unlabelled)
    batches = [stream.next() for _ in range(32)]  # pre-made: the bare loop pays no batch gathering
    torch.manual_seed(seed)
    m = cls(cfg, splits.info, "cpu")
    m.train()
    for b in batches[:5]:  # warm-up (allocator, first-call costs)
        m.train_step(b)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        m.train_step(batches[i % len(batches)])
    return steps / (time.perf_counter() - t0), steps / (time.process_time() - c0)


def epoch_walltimes(tb_dir: Path) -> list[float]:
    """Wall-clock time at which each epoch's scalars were written (one per epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    times: list[float] = []
    for f in sorted(tb_dir.rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(f.parent), size_guidance={"scalars": 0})
        acc.Reload()
        if "perf/samples_per_second" in acc.Tags().get("scalars", []):
            times = [e.wall_time for e in acc.Scalars("perf/samples_per_second")]
    return times


def steady(times: list[float], steps: int, clock=None) -> float:
    """steps/second from the median period between consecutive epochs (the first epoch is left out);
    `clock` maps a wall time to a cumulative CPU time (CPU steps/s), identity by default."""
    clock = clock or (lambda t: t)
    c = [clock(t) for t in times]
    periods = [b - a for a, b in zip(c[1:], c[2:])] or [b - a for a, b in zip(c, c[1:])]
    return steps / statistics.median(periods)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="60 steps x 4 epochs instead of 150 x 5")
    ap.add_argument("--method", default="i2gan")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--steps-per-epoch", type=int, default=150)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--no-preemption-watcher", action="store_true",
                    help="set RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0 before ray.init (Train V2's drain poller)")
    ap.add_argument("--json", default=None, help="also write the figures here")
    a = ap.parse_args()
    if a.quick:
        a.steps_per_epoch, a.epochs = 60, 4
    if a.no_preemption_watcher:
        os.environ["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = "0"  # the raylet, hence every worker, inherits it
    data = DataSpec(a.dataset, labels=50)
    config = {"steps_per_epoch": a.steps_per_epoch}
    spec = RunSpec(a.method, data, epochs=a.epochs, seed=0, config=config)
    # what `ssl-ray train` runs with its defaults: test error when val improves and at the end, checkpoints by time
    cli_spec = RunSpec(a.method, data, epochs=a.epochs, seed=0, config=config, test_every=0, checkpoint_every=0,
                       checkpoint_seconds=30)
    res: dict = {"method": a.method, "dataset": a.dataset, "steps_per_epoch": a.steps_per_epoch, "epochs": a.epochs}

    bare = [bare_steps_per_second(a.method, data, config, a.steps_per_epoch * 2)]

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        tr = Trainer(spec, log_dir=f"{tmp}/loop_tb", progress=False)
        t1 = time.perf_counter()
        marks: list[tuple[float, float]] = []  # (wall, CPU) at each report, after the checkpoint is written
        tr.fit(lambda metrics, ckpt: marks.append((time.time(), time.process_time())))
        t2 = time.perf_counter()
        cpu_at = dict(marks)
        res["loop"] = {"train_only": statistics.median(h["samples_per_second"] for h in tr.history[1:])
                       / tr.cfg.batch_size,
                       "steady": steady([w for w, _ in marks], a.steps_per_epoch),
                       "steady_cpu": steady([w for w, _ in marks], a.steps_per_epoch, cpu_at.__getitem__),
                       "startup_s": t1 - t0, "wall_s": t2 - t0}

        from ssl_ray.tuning.cluster import init_ray
        from ssl_ray.tuning.train import run_train

        cpu = TreeCPU()
        cpu.start()
        t0 = time.perf_counter()
        init_ray(None)
        t_init = time.perf_counter() - t0
        t0, w0 = time.perf_counter(), time.time()
        summary = run_train(cli_spec, output=f"{tmp}/ray", workers=1, cpus_per_worker=1, progress=False,
                            ray_train=True)
        wall = time.perf_counter() - t0
        time.sleep(0.5)
        cpu.stop.set()
        cpu.join()
        times = epoch_walltimes(Path(f"{tmp}/ray/tensorboard"))
        ray_steady = steady(times, a.steps_per_epoch)
        ray_steady_cpu = steady(times, a.steps_per_epoch, cpu.at)
        worker_steady_cpu = steady(times, a.steps_per_epoch, lambda t: cpu.at(t, worker=True))
        res["ray"] = {"train_only_last_epoch": summary["metrics"]["samples_per_second"] / tr.cfg.batch_size,
                      "steady": ray_steady, "steady_cpu": ray_steady_cpu,
                      "worker_steady_cpu": worker_steady_cpu, "ray_init_s": t_init, "wall_s": wall,
                      "startup_s": wall - a.epochs * a.steps_per_epoch / ray_steady,
                      "startup_cpu_s": cpu.at(w0 + wall) - cpu.at(w0) - a.epochs * a.steps_per_epoch / ray_steady_cpu,
                      "ray_init_cpu_s": cpu.at(w0) - cpu.samples[0][1],
                      "steady_cpu_by_process": cpu.by_process(times[1], times[-1]),
                      "steady_wall_s": times[-1] - times[1]}
        # one local worker through run_train: in this process, no Ray (the default `ssl-ray train` path)
        from ssl_ray.tuning.spaces import parse_space
        from ssl_ray.tuning.tune import TuneOptions, run_tune

        t0 = time.perf_counter()
        run_train(cli_spec, output=f"{tmp}/local", workers=1, cpus_per_worker=1, progress=False)
        local_wall = time.perf_counter() - t0
        times = epoch_walltimes(Path(f"{tmp}/local/tensorboard"))
        res["local"] = {"steady": steady(times, a.steps_per_epoch), "wall_s": local_wall,
                        "startup_s": local_wall - a.epochs * a.steps_per_epoch / steady(times, a.steps_per_epoch)}
        # one Tune trial (a function trainable in a trial process, reporting and checkpointing every epoch)
        space = parse_space(f"method: {a.method}\ndataset: {{name: {a.dataset}, labels: 50}}\n"
                            f"fixed: {{steps_per_epoch: {a.steps_per_epoch}}}\nsearch: {{}}\n"
                            f"scheduler: {{name: fifo, max_epochs: {a.epochs}}}\nnum_samples: 1\n")
        t0 = time.perf_counter()
        run_tune(space, TuneOptions(cpus_per_trial=1, storage=tmp, name="trial", progress=False))
        tune_wall = time.perf_counter() - t0
        times = epoch_walltimes(Path(f"{tmp}/trial"))
        res["tune"] = {"steady": steady(times, a.steps_per_epoch), "wall_s": tune_wall}
        import ray

        ray.shutdown()

    bare.append(bare_steps_per_second(a.method, data, config, a.steps_per_epoch * 2))
    res["bare_runs"] = bare
    ref = statistics.median(b[0] for b in bare)
    ref_cpu = statistics.median(b[1] for b in bare)
    res["bare"], res["bare_cpu"] = ref, ref_cpu
    rows = [("loop, train-only", res["loop"]["train_only"], None),
            ("loop, steady-state epoch", res["loop"]["steady"], res["loop"]["steady_cpu"]),
            ("ray train, train-only", res["ray"]["train_only_last_epoch"], None),
            ("ray train, steady-state", res["ray"]["steady"], res["ray"]["steady_cpu"]),
            ("  (Train worker CPU only)", res["ray"]["steady"], res["ray"]["worker_steady_cpu"]),
            ("run_train in-process, steady", res["local"]["steady"], None),
            ("Tune trial, steady", res["tune"]["steady"], None)]
    res["ratios"] = {name: {"wall": w / ref, "cpu": (c / ref_cpu if c else None)} for name, w, c in rows}

    print(f"\n{a.method} on {a.dataset}, batch {tr.cfg.batch_size}, {a.steps_per_epoch} steps/epoch, "
          f"{a.epochs} epochs, 1 thread")
    print(f"{'':28s}{'wall steps/s':>13s}{'ratio':>8s}{'CPU steps/s':>13s}{'ratio':>8s}")
    print(f"{'bare (median of 2)':28s}{ref:13.1f}{1:8.3f}{ref_cpu:13.1f}{1:8.3f}   runs: "
          + ", ".join(f"{w:.1f}/{c:.1f}" for w, c in bare))
    for name, w, c in rows:
        cs = f"{c:13.1f}{c / ref_cpu:8.3f}" if c else f"{'-':>13s}{'-':>8s}"
        print(f"{name:28s}{w:13.1f}{w / ref:8.3f}{cs}")
    r = res["ray"]
    print(f"start-up: ray.init {t_init:.1f} s wall ({r['ray_init_cpu_s']:.1f} CPU-s); run_train {wall:.1f} s wall, "
          f"of which not epochs {r['startup_s']:.1f} s wall / {r['startup_cpu_s']:.1f} CPU-s (whole process tree); "
          f"in-process Trainer construction {res['loop']['startup_s']:.1f} s wall")
    by = r["steady_cpu_by_process"]
    print(f"CPU-s by process over the steady epochs ({r['steady_wall_s']:.1f} s wall, "
          f"{(len(times) - 2) * a.steps_per_epoch} steps): "
          + ", ".join(f"{n} {c:.1f}" for n, c in list(by.items())[:10] if c >= 0.05))
    print(f"load average at the end (1/5/15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
