"""Reproduce the two-circles table of Ma et al. (WISE 2019): VAT (eps 0.1, 1.0) vs advgen (lambda 1.0).

Two circles (scikit-learn make_circles), 2 classes, 8 labelled points, a 1500-point unlabelled pool
(1700 training points minus the default 200-point validation split), test on 1000 fresh points,
classifier MLP 2-100-50-2. Prints a markdown table of test error % (mean +- std over seeds, last epoch)
beside the paper's numbers and writes one decision-boundary picture per (factor, noise): the three
models side by side for seed 0 (test points; red crosses = misclassified).

    python benchmarks/circles_table.py --seeds 5 --epochs 10 --factors 0.5

The factor (inner radius / outer radius) is not given in the paper; pass several to see how much
the geometry decides.
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
    from ssl_ray.engine.plots import decision_boundary

    row, method, cfg, factor, noise, seed, epochs, steps = job
    spec = RunSpec(method, DataSpec("circles", labels=8, options={"noise": noise, "factor": factor}), epochs=epochs,
                   seed=seed, config={"steps_per_epoch": steps, **cfg})
    tr = Trainer(spec, progress=False)
    m = tr.fit()
    pic = None
    if seed == 0:
        s = tr.stream
        pic = decision_boundary(tr.method.predict, s.x_lab.numpy(), s.y_lab.numpy(), s.x_unl.numpy(),
                                tr.x_test.numpy(), tr.y_test.numpy(),
                                title=f"{row}, noise {noise}, factor {factor}: test error {m['test_error']:.2f}%")
    return (row, factor, noise), seed, m["test_error"], pic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10, help="epochs of --steps optimiser steps each")
    ap.add_argument("--steps", type=int, default=100, help="optimiser steps per epoch")
    ap.add_argument("--noises", type=float, nargs="+", default=[0.01, 0.06])
    ap.add_argument("--factors", type=float, nargs="+", default=[0.5])
    ap.add_argument("--jobs", type=int, default=2, help="parallel processes (one thread each)")
    ap.add_argument("--img-dir", default="docs/img")
    args = ap.parse_args()

    jobs = [(row, method, cfg, f, n, s, args.epochs, args.steps)
            for f in args.factors for n in args.noises for row, method, cfg in ROWS for s in range(args.seeds)]
    errors: dict[tuple, dict[int, float]] = {}
    pics: dict[tuple, np.ndarray] = {}
    t0 = time.time()
    with get_context("spawn").Pool(args.jobs) as pool:
        for key, seed, err, pic in pool.imap_unordered(run_one, jobs):
            errors.setdefault(key, {})[seed] = err
            if pic is not None:
                pics[key] = pic
            print(f"  {key} seed {seed}: {err:.2f}%  ({time.time() - t0:.0f}s)", flush=True)

    print(f"\n{args.seeds} seeds, {args.epochs} x {args.steps} steps, batch 32 labelled + 128 unlabelled; "
          f"test error % (mean ± std over seeds; per-seed values in brackets, seed 0 first)\n")
    for f in args.factors:
        print(f"factor {f}:\n")
        head = "| Model | " + " | ".join(f"Circles ({n}) ours | Circles ({n}) paper" for n in args.noises) + " |"
        print(head)
        print("|" + "---|" * (1 + 2 * len(args.noises)))
        for row, _, _ in ROWS:
            cells = []
            for n in args.noises:
                e = np.array([v for _, v in sorted(errors[(row, f, n)].items())])
                per = ", ".join(f"{v:.1f}" for v in e)
                cells += [f"{e.mean():.2f} (± {e.std(ddof=0):.2f}) [{per}]", PAPER.get((row, n), "-")]
            print(f"| {row} | " + " | ".join(cells) + " |")
        print()
    os.makedirs(args.img_dir, exist_ok=True)
    import matplotlib.pyplot as plt

    for f in args.factors:
        for n in args.noises:
            panel = np.concatenate([pics[(row, f, n)] for row, _, _ in ROWS], axis=1)
            path = os.path.join(args.img_dir, f"circles_noise{n}_factor{f}.png")
            plt.imsave(path, panel)
            print(f"wrote {path} ({os.path.getsize(path) // 1024} KB)")


if __name__ == "__main__":
    main()
