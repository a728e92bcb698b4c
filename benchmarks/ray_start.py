"""How long `ssl-ray tune` waits for Ray before Tune starts, side by side, each measurement in a fresh process.

  init         `init_ray(dashboard=False)` alone, as now (no dashboard process: ray_internals.no_api_server)
               against the same call with Ray's dashboard process started as before (`--variant keep`).
  pre-tune     run_tune's phase up to Tune's start for 8 planned trials: draw the plan (importing ray.tune), build
               it (the pre-flight check), start Ray; as now (the plan drawn first, then the build while Ray
               starts) against the plan drawn inside the check, while Ray starts (`plan-in-thread`: tried in
               ea230dc, reverted: no gain that repeats).

    python benchmarks/ray_start.py [--pairs 3]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time

SPACE = """
method: i2gan
dataset: {name: digits, labels: 50}
fixed: {steps_per_epoch: 5}
search:
  lr: {grid: [0.001, 0.0011, 0.0012, 0.0013, 0.0014, 0.0015, 0.0016, 0.0017]}
scheduler: {name: fifo, max_epochs: 2}
num_samples: 1
"""


def measure(what: str, variant: str) -> float:
    """One measurement in this (fresh) process; returns seconds."""
    import torch

    torch.set_num_threads(1)
    import ray

    from ssl_ray.tuning import cluster, experiment
    from ssl_ray.tuning.spaces import parse_space
    from ssl_ray.tuning.tune import preflight_plan, preflight_while_ray_starts

    if variant == "keep":  # Ray's dashboard process started and waited for, as before
        cluster.no_api_server = contextlib.nullcontext  # type: ignore[assignment]
    start = lambda: cluster.init_ray(None, dashboard=False)  # noqa: E731
    t0 = time.perf_counter()
    if what == "init":
        start()
    else:
        space = parse_space(SPACE)
        if variant == "plan-in-thread":
            preflight_while_ray_starts(lambda: preflight_plan(space, experiment.make_plan(space, 0), 0), start)
        else:
            plan = experiment.make_plan(space, 0)
            preflight_while_ray_starts(lambda: preflight_plan(space, plan, 0), start)
    seconds = time.perf_counter() - t0
    ray.shutdown()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--one", nargs=2, metavar=("WHAT", "VARIANT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(measure(*a.one)))
        return
    for what, variants in (("init", ("now", "keep")), ("pre-tune", ("now", "plan-in-thread"))):
        got: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(a.pairs):  # alternated
            for v in variants:
                out = subprocess.run([sys.executable, __file__, "--one", what, v], capture_output=True, text=True,
                                     check=True)
                got[v].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{what}: " + "; ".join(f"{v} {', '.join(f'{s:.2f}' for s in xs)} s (median {statistics.median(xs):.2f})"
                                      for v, xs in got.items()))


if __name__ == "__main__":
    main()
