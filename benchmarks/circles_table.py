"""Reproduce the two-circles table of Ma et al. (WISE 2019): VAT (eps 0.1, 1.0) vs advgen (lambda 1.0).

Two circles (the `circles` dataset: scikit-learn make_circles, factor 0.5, scale 1), 2 classes,
8 labelled points, a 1500-point unlabelled pool (1700 training points minus the default 200-point
validation split), test on 1000 fresh points, classifier MLP 2-100-50-2. Every run is exactly what
`ssl-ray train vat|advgen --dataset circles --labels 8 --data-opt noise=N --data-opt factor=0.5
--set eps=E --seed S` trains (the CLI's 20 epochs; the dataset's 150 steps per epoch), in-process.
Prints a markdown table of test error % (mean +- std over seeds, last epoch) beside the paper's numbers
and writes one decision-boundary picture per (scale, noise): the models side by side for the first
seed (test points; red crosses = misclassified).

    python benchmarks/circles_table.py --seeds 1 2 3 --noises 0.01 0.06 --jobs 18

Neither the factor nor the scale is given in the paper; pass several --scales / --factors to see how
much the geometry decides.
"""
from __future__ import annotations

import argparse
import os
import time
from multiprocessing import get_context

import numpy as np

ROWS = (("VAT (eps=0.1)", "vat", {"eps": 0.1}),
        ("VAT (eps=1.0)", "vat", {"eps": 1.0}),
        ("Ours (lambda=1.0)", "advgen", {"lambda_rec": 1.0}),
        ("Ours (lambda=10), not in paper", "advgen", {"lambda_rec": 10.0}))
PAPER = {("VAT (eps=0.1)", 0.01): "0.00 (± 0.00)", ("VAT (eps=0.1)", 0.06): "24.61 (± 4.58)",
         ("VAT (eps=1.0)", 0.01): "4.59 (± 5.64)", ("VAT (eps=1.0)", 0.06): "5.10 (± 4.28)",
         ("Ours (lambda=1.0)", 0.01): "0.00 (± 0.00)", ("Ours (lambda=1.0)", 0.06): "4.75 (± 5.31)"}


def run_one(job: tuple) -> tuple:
    """One training run; returns (key, test error %, picture or None)."""
    import torch

    torch.set_num_threads(1)
    from ssl_ray.data import DataSpec
    from ssl_ray.engine.loop import RunSpec, Trainer
    from ssl_ray.nn.plots import decision_boundary

    row, method, cfg, factor, scale, noise, seed, epochs, steps, first = job
    config = {**cfg, **({"steps_per_epoch": steps} if steps else {})}
    spec = RunSpec(method, DataSpec("circles", labels=8, options={"noise": noise, "factor": factor, "scale": scale}),
                   epochs=epochs, seed=seed, config=config)
    tr = Trainer(spec, progress=False)
    m = tr.fit()
    pic = None
    if first:
        s = tr.stream
        pic = decision_boundary(tr.method.predict, s.x_lab.numpy(), s.y_lab.numpy(), s.x_unl.numpy(),
                                tr.x_test.numpy(), tr.y_test.numpy(),
                                title=f"{row}, noise {noise}, scale {scale}: test error {m['test_error']:.2f}%")
    return (row, factor, scale, noise), seed, m["test_error"], pic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--epochs", type=int, default=20, help="epochs (the CLI's default: 20)")
    ap.add_argument("--steps", type=int, default=0, help="optimiser steps per epoch; 0 = the dataset's (150)")
    ap.add_argument("--noises", type=float, nargs="+", default=[0.01, 0.06])
    ap.add_argument("--factors", type=float, nargs="+", default=[0.5])
    ap.add_argument("--scales", type=float, nargs="+", default=[1.0])
    ap.add_argument("--rows", nargs="+", default=[r[0] for r in ROWS[:3]], choices=[r[0] for r in ROWS])
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (one thread each)")
    ap.add_argument("--img-dir", default="docs/img")
    args = ap.parse_args()

    rows = [r for r in ROWS if r[0] in args.rows]
    jobs = [(row, method, cfg, f, sc, n, s, args.epochs, args.steps, s == args.seeds[0])
            for f in args.factors for sc in args.scales for n in args.noises for row, method, cfg in rows
            for s in args.seeds]
    errors: dict[tuple, dict[int, float]] = {}
    pics: dict[tuple, np.ndarray] = {}
    t0 = time.time()
    with get_context("spawn").Pool(args.jobs) as pool:
        for key, seed, err, pic in pool.imap_unordered(run_one, jobs):
            errors.setdefault(key, {})[seed] = err
            if pic is not None:
                pics[key] = pic
            print(f"  {key} seed {seed}: {err:.2f}%  ({time.time() - t0:.0f}s)", flush=True)

    steps = args.steps or 150
    print(f"\nseeds {args.seeds}, {args.epochs} x {steps} = {args.epochs * steps} steps, batch 32 labelled + 128 "
          f"unlabelled; test error % (mean ± std over seeds; per-seed values in brackets, in seed order)\n")
    for f, sc in ((f, sc) for f in args.factors for sc in args.scales):
        print(f"factor {f}, scale {sc}:\n")
        head = "| Model | " + " | ".join(f"Circles ({n}) ours | Circles ({n}) paper" for n in args.noises) + " |"
        print(head)
        print("|" + "---|" * (1 + 2 * len(args.noises)))
        for row, _, _ in rows:
            cells = []
            for n in args.noises:
                e = np.array([v for _, v in sorted(errors[(row, f, sc, n)].items())])
                per = ", ".join(f"{v:.1f}" for v in e)
                cells += [f"{e.mean():.2f} (± {e.std(ddof=0):.2f}) [{per}]", PAPER.get((row, n), "-")]
            print(f"| {row} | " + " | ".join(cells) + " |")
        print()
    os.makedirs(args.img_dir, exist_ok=True)
    import matplotlib.pyplot as plt

    for f, sc in ((f, sc) for f in args.factors for sc in args.scales):
        for n in args.noises:
            panel = np.concatenate([pics[(row, f, sc, n)] for row, _, _ in rows], axis=1)
            path = os.path.join(args.img_dir, f"circles_noise{n}_factor{f}_scale{sc:g}.png")
            plt.imsave(path, panel)
            print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
    main()
