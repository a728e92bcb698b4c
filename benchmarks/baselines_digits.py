"""The classic SSL baselines against `supervised`, each at its defaults, the way a user runs them:
`ssl-ray train METHOD --seed S` with no --set (digits, 50 labels, the CLI's default 20 epochs), in-process
through benchmarks/defaults_table.run_default (the same RunSpec and Trainer as the CLI, one torch thread).

The three baselines count an epoch as 50 steps (their `steps_per_epoch` default, a budget-driven choice, see
their docstrings), so their 20 epochs are 1,000 steps, against the 360 steps (20 x 18) of `supervised`. The
control row `supervised, 1,000 steps` (`--set steps_per_epoch=50`) shows what the extra steps alone give.

    python benchmarks/baselines_digits.py --seeds 1 2
    python benchmarks/baselines_digits.py --seeds 1 2 --dataset mnist5k --labels 100   # real MNIST, 28x28
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from defaults_table import cli_default

from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer

BASELINES = ("pseudolabel", "meanteacher", "fixmatch")
CONTROL = ("supervised, 1,000 steps", "supervised", {"steps_per_epoch": 50})


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--methods", nargs="+", default=list(BASELINES))
    ap.add_argument("--dataset", default=DataSpec().name, help="default: the CLI's (digits)")
    ap.add_argument("--labels", type=int, default=DataSpec().labels, help="default: the CLI's (50)")
    ap.add_argument("--no-control", action="store_true", help="skip the supervised 1,000-step control row")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    runs = [("supervised", "supervised", {})] + [(m, m, {}) for m in args.methods]
    if not args.no_control:
        runs.append(CONTROL)
    res: dict[str, list[float]] = {}
    secs: dict[str, float] = {}
    for label, method, sets in runs:
        t0 = time.time()
        res[label] = []
        for seed in args.seeds:
            spec = RunSpec(method, DataSpec(args.dataset, labels=args.labels), epochs=cli_default("epochs"),
                           seed=seed, config=dict(sets))
            out = Trainer(spec, progress=False).fit()  # = defaults_table.run_default for the CLI's default data
            res[label].append(out["test_error"])
            print(f"{label} seed={seed}: test_error={out['test_error']:.2f}%", file=sys.stderr, flush=True)
        secs[label] = (time.time() - t0) / len(args.seeds)
    sup = statistics.mean(res["supervised"])
    print(f"\n{args.dataset}, {args.labels} labels, {cli_default('epochs')} epochs, defaults (no --set); "
          "test error % at the last epoch\n")
    print("| method | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | vs supervised | wall s per run |")
    print("|---|" + "---|" * len(args.seeds) + "---|---|---|")
    for label, _, _ in runs:
        m = statistics.mean(res[label])
        if label == "supervised":
            vs = ""
        elif label == CONTROL[0]:
            vs = f"{m - sup:+.2f} (control: the baselines' step count, no unlabelled data)"
        else:
            vs = f"{m - sup:+.2f} ({'better' if m < sup else '**NOT better**'})"
        print(f"| {label} | " + " | ".join(f"{e:.2f}" for e in res[label]) + f" | {m:.2f} | {vs} | {secs[label]:.0f} |")


if __name__ == "__main__":
    main()
