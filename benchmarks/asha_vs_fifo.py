"""ASHA (and synchronous successive halving, SHA) against FIFO on the same search space and the same samples
(one Ray instance, one machine).

The space is a grid of learning rates spread over four decades (the same configurations, in the same
shuffled order, for both schedulers, so the comparison is not luck of sampling). Tune starts grid points
in the order given; `--sorted` starts them in increasing lr, which is asynchronous ASHA's worst case (each
new trial beats the earlier ones at every rung, so most are promoted). For each scheduler:
  epochs      epochs trained over all trials (compute);
  wall        run_tune wall time;
  best        lowest validation error seen (any trial, any epoch);
  to-target   epochs spent and wall time until some trial first reported a validation error within one
              point of FIFO's best (events ordered by the time Tune recorded them).
Goal: ASHA reaches the target with <= 1/3 of FIFO's epochs. SHA (`scheduler: {name: sha}`) decides at the
same rungs but only once every trial has reached the rung; its epoch count does not depend on the order.

    python benchmarks/asha_vs_fifo.py [--quick] [--samples 12] [--max-epochs 9] [--schedulers asha sha]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch

torch.set_num_threads(1)

from ssl_ray.tuning import results  # noqa: E402
from ssl_ray.tuning.cluster import init_ray  # noqa: E402
from ssl_ray.tuning.spaces import parse_space  # noqa: E402
from ssl_ray.tuning.tune import TuneOptions, run_tune  # noqa: E402

SPACE = """
method: supervised
dataset: {{name: digits, labels: {labels}}}
fixed: {{batch_size: 64, steps_per_epoch: {steps}}}
search:
  lr: {{grid: [{lrs}]}}
scheduler: {{name: {sched}, max_epochs: {epochs}, grace_epochs: 1, reduction_factor: 3}}
num_samples: 1
"""


def events(hist: dict[str, list[dict]]) -> list[tuple[float, float]]:
    """(time recorded, val_error) of every reported epoch, in the order Tune recorded them."""
    ev = []
    for rows in hist.values():
        # a trial's rows carry wall-clock `timestamp` (whole seconds) and `time_total_s` (its own clock):
        # the first gives the trial's start, the second orders its epochs finely
        start = rows[-1]["timestamp"] - rows[-1]["time_total_s"]
        ev += [(start + r["time_total_s"], r["val_error"]) for r in rows]
    return sorted(ev)


def run(sched: str, a, tmp: str) -> dict:
    order = range(a.samples) if a.sorted else random.Random(a.order_seed).sample(range(a.samples), a.samples)
    lrs = ", ".join(f"{10 ** (-5 + 4 * i / (a.samples - 1)):.3g}" for i in order)
    space = parse_space(SPACE.format(labels=a.labels, steps=a.steps_per_epoch, lrs=lrs, sched=sched,
                                     epochs=a.max_epochs))
    t0 = time.time()
    run_tune(space, TuneOptions(cpus_per_trial=1, storage=tmp, name=sched, progress=False))
    wall = time.time() - t0
    hist = results.read_histories(os.path.join(tmp, sched))
    ev = events(hist)
    return {"wall_s": wall, "epochs": len(ev), "trials": len(hist), "best": min(v for _, v in ev),
            "events": ev, "t0": t0,
            "epochs_per_trial": sorted(len(r) for r in hist.values())}


def to_target(r: dict, target: float) -> tuple[int | None, float | None]:
    for i, (t, v) in enumerate(r["events"]):
        if v <= target:
            return i + 1, t - r["t0"]
    return None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 samples, 9 epochs")
    ap.add_argument("--samples", type=int, default=12)
    ap.add_argument("--max-epochs", type=int, default=9)
    ap.add_argument("--steps-per-epoch", type=int, default=50)
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--sorted", action="store_true", help="run the grid in increasing lr (default: shuffled)")
    ap.add_argument("--order-seed", type=int, default=0, help="seed of the shuffled trial order")
    ap.add_argument("--schedulers", nargs="+", choices=["asha", "sha"], default=["asha", "sha"],
                    help="compared with FIFO (default both)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.quick:
        a.samples = 8
    init_ray(None, num_cpus=2)
    with tempfile.TemporaryDirectory() as tmp:
        fifo = run("fifo", a, tmp)
        runs = {name: run(name, a, tmp) for name in a.schedulers}
    import ray

    ray.shutdown()
    target = fifo["best"] + 1.0
    out = {"samples": a.samples, "max_epochs": a.max_epochs, "steps_per_epoch": a.steps_per_epoch,
           "labels": a.labels, "target_val_error": target}
    print(f"\nsupervised/digits ({a.labels} labels), lr grid of {a.samples} over 1e-5..1e-1, max {a.max_epochs} "
          f"epochs x {a.steps_per_epoch} steps, {'sorted' if a.sorted else 'shuffled'} order, ASHA/SHA grace 1, "
          f"reduction 3; target = FIFO best + 1 = {target:.2f}%")
    print(f"{'':6s}{'trials':>7s}{'epochs':>8s}{'wall s':>8s}{'best %':>8s}{'epochs to target':>18s}"
          f"{'s to target':>13s}")
    for name, r in {"fifo": fifo, **runs}.items():
        e, s = to_target(r, target)
        out[name] = {k: v for k, v in r.items() if k not in ("events", "t0")} | {"epochs_to_target": e,
                                                                                   "seconds_to_target": s}
        print(f"{name:6s}{r['trials']:7d}{r['epochs']:8d}{r['wall_s']:8.1f}{r['best']:8.2f}"
              f"{str(e):>18s}{(f'{s:.1f}' if s is not None else '-'):>13s}")
    for name, r in runs.items():
        up = name.upper()
        out[f"{name}_over_fifo_epochs"] = r["epochs"] / fifo["epochs"]
        out[f"{name}_over_fifo_wall"] = r["wall_s"] / fifo["wall_s"]
        e = out[name]["epochs_to_target"]
        ratio = out[f"{name}_to_target_over_fifo_epochs"] = e / fifo["epochs"] if e else None
        print(f"{up}/FIFO: total epochs {out[f'{name}_over_fifo_epochs']:.3f}, wall {out[f'{name}_over_fifo_wall']:.3f}; "
              f"{up}'s epochs to target / FIFO's total epochs {'-' if ratio is None else f'{ratio:.3f}'}; "
              f"{up} best within one point of FIFO's: {r['best'] <= target}")
    print("epochs per trial: " + ", ".join(f"{n} {r['epochs_per_trial']}" for n, r in {"fifo": fifo, **runs}.items()))
    print(f"load average at the end (1/5/15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
