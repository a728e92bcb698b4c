"""Every registered method at its defaults, the way a user runs it: `ssl-ray train METHOD` with no --set.

Same code path as the CLI (RunSpec with the CLI's default dataset, labels and epochs, an empty config, one
torch thread as in a 1-CPU Ray Train worker), run in-process with `Trainer` to skip Ray's start-up. Prints a
markdown table of test error (%) per seed against `supervised` on the same split; the unsupervised
clustering methods (vcagan, gan, infogan) are listed separately with their clustering error (after
Hungarian matching), since they do not see labels.

    python benchmarks/defaults_table.py --seeds 1 2
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer
from ssl_ray.methods import get_method
from ssl_ray.methods.registry import list_methods


def cli_default(name: str):
    """A default of `ssl-ray train` (read from the click command, so the table cannot drift from the CLI)."""
    from ssl_ray.cli.train import train  # the click command (ssl_ray.cli.train is its module)

    return next(p.default for p in train.params if p.name == name)


def run_default(method: str, seed: int, epochs: int | None = None, sets: dict | None = None,
                data: DataSpec | None = None) -> dict:
    """`ssl-ray train METHOD --seed SEED` in-process: the CLI's default data spec and epochs, no overrides
    (`sets` = the `--set` values of a variant such as `--set tau=2 --set n_fake=256`; `data`: another dataset
    and label count, as `--dataset X --labels N`)."""
    spec = RunSpec(method, data or DataSpec(), epochs=cli_default("epochs") if epochs is None else epochs,
                   seed=seed, config=dict(sets or {}))
    return Trainer(spec, progress=False).fit()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    ap.add_argument("--epochs", type=int, default=None, help="default: the CLI's (ssl-ray train --epochs)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a variant: this hyperparameter for every method but supervised (as ssl-ray train --set)")
    ap.add_argument("--dataset", default=None, help="as ssl-ray train --dataset (default: the CLI's)")
    ap.add_argument("--labels", type=int, default=None, help="as ssl-ray train --labels (default: the dataset's)")
    args = ap.parse_args(argv)
    from ssl_ray.config import parse_set

    sets = parse_set(args.sets)
    torch.set_num_threads(1)
    data = DataSpec(**{k: v for k, v in (("name", args.dataset), ("labels", args.labels)) if v is not None})
    names = args.methods or [m.name for m in list_methods()]
    if "supervised" not in names:
        names = ["supervised"] + names
    res: dict[str, list[float]] = {}
    secs: dict[str, float] = {}
    for name in names:
        t0 = time.time()
        res[name] = []
        for seed in args.seeds:
            out = run_default(name, seed, args.epochs, None if name == "supervised" else sets, data)
            res[name].append(out["test_error"])
            print(f"{name} seed={seed}: test_error={out['test_error']:.2f}%", file=sys.stderr, flush=True)
        secs[name] = (time.time() - t0) / len(args.seeds)

    d = data
    epochs = args.epochs or cli_default("epochs")
    sup = statistics.mean(res["supervised"])
    seeds = " | ".join(f"seed {s}" for s in args.seeds)
    what = " ".join(f"--set {k}={v}" for k, v in sets.items()) or "defaults (no --set)"
    print(f"\n{d.name}, {d.labels} labels, {epochs} epochs, {what}; test error %\n")
    print(f"| method | {seeds} | mean | vs supervised | wall s per run |")
    print("|---|" + "---|" * len(args.seeds) + "---|---|---|")
    clus = []
    for name in names:
        if get_method(name).clustering:
            clus.append(name)
            continue
        m = statistics.mean(res[name])
        vs = "" if name == "supervised" else f"{m - sup:+.2f} ({'better' if m < sup else 'NOT better'})"
        cells = " | ".join(f"{v:.2f}" for v in res[name])
        print(f"| {name} | {cells} | {m:.2f} | {vs} | {secs[name]:.0f} |")
    if clus:
        print("\nUnsupervised (clustering error after Hungarian matching, labels unused; not compared):\n")
        print(f"| method | {seeds} | mean | wall s per run |")
        print("|---|" + "---|" * len(args.seeds) + "---|---|")
        for name in clus:
            cells = " | ".join(f"{v:.2f}" for v in res[name])
            print(f"| {name} | {cells} | {statistics.mean(res[name]):.2f} | {secs[name]:.0f} |")


if __name__ == "__main__":
    main()
