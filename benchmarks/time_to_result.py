"""Time to result: the same small job as a plain PyTorch script, as `ssl-ray train`, and as `ssl-ray tune` of one trial.

The job: supervised MLP on digits, 50 labels, 20 epochs (benchmarks/plain_supervised.py is the plain script).
Each command is a fresh process, timed from launch to exit (imports, data, training, evaluation, files and
shutdown included). The commands are run in rounds, one after the other inside each round (A/B alternated),
and every figure is also given as a ratio to the plain script *of the same round*, so that load from other
jobs on the machine, which changes from minute to minute, mostly cancels. Goal (issue 18): `ssl-ray train` at
most 1.5 x the plain script + 5 s.

Rows:
  plain               python benchmarks/plain_supervised.py
  train               ssl-ray train supervised --dataset digits --labels 50  (one local worker: in this process)
  train, cold cache   the same with an empty dataset cache (the first run on a machine imports scikit-learn
                      to build the digits arrays; later runs memory-map the cached arrays)
  train --ray-train   the same job through Ray Train (ray.init + a 1-worker TorchTrainer), as before issue 18
  tune, 1 trial       ssl-ray tune supervised with a one-point space (same job, FIFO, 20 epochs)

    python benchmarks/time_to_result.py [--rounds 3] [--skip-ray] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SPACE = """method: supervised
dataset: {name: digits, labels: 50}
search:
  lr: {grid: [0.001]}
scheduler: {name: fifo, max_epochs: 20}
num_samples: 1
"""


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process and every descendant it waited for: Ray's raylet, GCS and
    workers included when the command started them). CPU time is what other jobs on the machine change least."""
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return wall, (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-ray", action="store_true", help="leave out the two Ray rows (train --ray-train, tune)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, SSL_RAY_CACHE=f"{tmp}/cache", SSL_RAY_RUNS=f"{tmp}/runs")
        space = Path(tmp, "one.yaml")
        space.write_text(SPACE)
        rows: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        # warm the shared dataset cache once (what every run after a machine's first one finds)
        subprocess.run([py, "-c", "from ssl_ray.data import DataSpec, load_dataset; load_dataset(DataSpec('digits'))"],
                       check=True, env=env)
        cmds = {
            "plain": lambda i: [py, str(HERE / "plain_supervised.py")],
            "train": lambda i: [py, "-m", "ssl_ray.cli", "train", "supervised", "--dataset", "digits", "--labels",
                                "50", "--output", f"{tmp}/train{i}"],
            "train, cold cache": lambda i: [py, "-m", "ssl_ray.cli", "train", "supervised", "--dataset", "digits",
                                            "--labels", "50", "--output", f"{tmp}/cold{i}"],
        }
        if not a.skip_ray:
            cmds["train --ray-train"] = lambda i: [py, "-m", "ssl_ray.cli", "train", "supervised", "--dataset",
                                                   "digits", "--labels", "50", "--ray-train",
                                                   "--output", f"{tmp}/ray{i}"]
            cmds["tune, 1 trial"] = lambda i: [py, "-m", "ssl_ray.cli", "tune", "supervised", "--space", str(space),
                                               "--storage", f"{tmp}/tune", "--name", f"t{i}", "--quiet"]
        for i in range(a.rounds):
            for name, cmd in cmds.items():
                e = dict(env, SSL_RAY_CACHE=f"{tmp}/cold-cache{i}") if "cold" in name else env
                wall, cpu = timed(cmd(i), e)
                rows.setdefault(name, []).append(wall)
                cpus.setdefault(name, []).append(cpu)
                print(f"round {i + 1} {name}: {wall:.1f} s wall, {cpu:.1f} CPU-s (load {os.getloadavg()[0]:.1f})",
                      flush=True)
    plain, plain_cpu = rows["plain"], cpus["plain"]
    out = {"rounds": a.rounds, "walls": rows, "cpu": cpus, "ratios": {}, "cpu_ratios": {}, "goal_met": []}
    print(f"\n| command | wall s (median of {a.rounds}) | wall ratio to plain (median of per-round ratios) "
          f"| CPU-s (median) | CPU ratio to plain | per round: wall s (ratio) |")
    print("|---|---|---|---|---|---|")
    for name, walls in rows.items():
        ratios = [w / p for w, p in zip(walls, plain)]
        cratios = [c / p for c, p in zip(cpus[name], plain_cpu)]
        out["ratios"][name], out["cpu_ratios"][name] = ratios, cratios
        print(f"| {name} | {statistics.median(walls):.1f} | {statistics.median(ratios):.2f} | "
              f"{statistics.median(cpus[name]):.1f} | {statistics.median(cratios):.2f} | "
              + ", ".join(f"{w:.1f} ({r:.2f})" for w, r in zip(walls, ratios)) + " |")
    met = [w <= 1.5 * p + 5 for w, p in zip(rows["train"], plain)]
    met_cpu = [c <= 1.5 * p + 5 for c, p in zip(cpus["train"], plain_cpu)]
    out["goal_met"], out["goal_met_cpu"] = met, met_cpu
    print(f"\ngoal `ssl-ray train` <= 1.5 x plain + 5 s: wall: met in {sum(met)} of {len(met)} rounds "
          f"(budgets {', '.join(f'{1.5 * p + 5:.1f}' for p in plain)} s); CPU: met in {sum(met_cpu)} of "
          f"{len(met_cpu)} (budgets {', '.join(f'{1.5 * p + 5:.1f}' for p in plain_cpu)} CPU-s)")
    print(f"load average at the end (1/5/15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
