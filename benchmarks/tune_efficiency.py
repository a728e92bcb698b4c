"""Tune efficiency on one machine: N = 4 x slots trials with a fixed amount of work each.

efficiency = total trial compute time / (wall time x slots), where a trial's compute time is the sum of its
epochs' `epoch_seconds` (training steps + evaluation, as the loop measures them). Reported twice:
including `ray.init` (a fresh local Ray instance) and excluding it. By default the search runs as `ssl-ray tune`
runs it: `run_tune` starts the local instance itself, with the pre-flight build running meanwhile, and the wall
is the whole `run_tune` call (excluding: minus its `seconds_ray_init`); `--init-first` starts Ray before
`run_tune`, as this script did before, so the pre-flight build runs after `ray.init`. Where the rest goes:
  in-trial start-up   first report's time_this_iter_s minus its epoch_seconds (process/actor set-up seen by
                      the trial, imports, dataset load, Trainer construction, first checkpoint + report);
  per-epoch reporting later reports' time_this_iter_s minus epoch_seconds (checkpoint + report);
  idle slots          wall x slots minus all trial time (Tune scheduling, trial actor start, shutdown).
All trials are the same work: FIFO, a grid over the learning rate only, fixed steps per epoch.

    python benchmarks/tune_efficiency.py [--quick] [--slots 2] [--epochs 4] [--steps-per-epoch 60] [--init-first]
"""
from __future__ import annotations

import argparse
import json
import os
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
method: {method}
dataset: {{name: digits, labels: 50}}
fixed: {{steps_per_epoch: {steps}}}
search:
  lr: {{grid: [{lrs}]}}
scheduler: {{name: fifo, max_epochs: {epochs}}}
num_samples: 1
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 epochs x 40 steps per trial instead of 4 x 60")
    ap.add_argument("--method", default="i2gan")
    ap.add_argument("--slots", type=int, default=2, help="concurrent trials (1 CPU each)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--steps-per-epoch", type=int, default=60)
    ap.add_argument("--dashboard", action="store_true", help="start the local instance with the dashboard "
                    "(ssl-ray tune does only for --workers > 1)")
    ap.add_argument("--init-first", action="store_true", help="start Ray (with --slots CPUs) before run_tune, "
                    "instead of letting run_tune start it with all CPUs as ssl-ray tune does")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.quick:
        a.epochs, a.steps_per_epoch = 3, 40
    n = 4 * a.slots
    lrs = ", ".join(f"{3e-4 * (1 + 0.1 * i):.6g}" for i in range(n))
    space = parse_space(SPACE.format(method=a.method, steps=a.steps_per_epoch, lrs=lrs, epochs=a.epochs))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if a.init_first or a.dashboard:
            init_ray(None, num_cpus=a.slots, dashboard=a.dashboard)
        t1 = time.perf_counter()
        summary = run_tune(space, TuneOptions(cpus_per_trial=1, storage=tmp, name="eff", progress=False,
                                              max_concurrent=a.slots))
        t2 = time.perf_counter()
        if not (a.init_first or a.dashboard):  # run_tune started Ray: its own measure of ray.init
            t1 = t0 + summary["seconds_ray_init"]
        import ray

        ray.shutdown()
        hist = results.read_histories(os.path.join(tmp, "eff"))
    compute = startup = reporting = trial_total = 0.0
    per_trial = []
    for rows in hist.values():
        c = sum(r["epoch_seconds"] for r in rows)
        s = rows[0]["time_this_iter_s"] - rows[0]["epoch_seconds"]
        rep = sum(r["time_this_iter_s"] - r["epoch_seconds"] for r in rows[1:])
        compute, startup, reporting = compute + c, startup + s, reporting + rep
        trial_total += rows[-1]["time_total_s"]
        per_trial.append({"epochs": len(rows), "compute_s": c, "startup_s": s, "reporting_s": rep,
                          "total_s": rows[-1]["time_total_s"], "pid": rows[0].get("pid")})
    wall_incl, wall_excl = t2 - t0, t2 - t1
    capacity = wall_excl * a.slots
    res = {"method": a.method, "slots": a.slots, "trials": n, "finished": len(hist), "epochs": a.epochs,
           "steps_per_epoch": a.steps_per_epoch, "ray_init_s": t1 - t0, "tune_wall_s": wall_excl,
           "compute_s": compute, "efficiency_incl_ray_init": compute / (wall_incl * a.slots),
           "efficiency_excl_ray_init": compute / capacity, "trial_startup_s": startup,
           "reporting_s": reporting, "idle_slot_s": capacity - trial_total, "per_trial": per_trial,
           "trial_processes": len({rows[0].get("pid") for rows in hist.values()})}
    print(f"\n{n} trials of {a.method}/digits ({a.epochs} epochs x {a.steps_per_epoch} steps), {a.slots} slots, "
          f"{len(hist)} finished in {res['trial_processes']} trial processes (reuse_actors)")
    how = "before run_tune" if a.init_first or a.dashboard else "inside run_tune, pre-flight meanwhile"
    print(f"ray.init {t1 - t0:.1f} s ({how}), wall excluding it {wall_excl:.1f} s, slot capacity {capacity:.1f} "
          f"slot-s")
    print(f"trial compute {compute:.1f} s = efficiency {res['efficiency_excl_ray_init']:.3f} excluding ray.init, "
          f"{res['efficiency_incl_ray_init']:.3f} including it")
    print(f"where the rest goes: in-trial start-up {startup:.1f} s ({startup / n:.2f} s/trial), per-epoch "
          f"checkpoint+report {reporting:.1f} s, idle slots (scheduling, actor start, shutdown) "
          f"{capacity - trial_total:.1f} slot-s")
    print("per trial (start-up s, compute s, pid):",
          ", ".join(f"({t['startup_s']:.1f}, {t['compute_s']:.1f}, {t['pid']})" for t in per_trial))
    print(f"load average at the end (1/5/15 min): {os.getloadavg()} on {os.cpu_count()} CPUs")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
