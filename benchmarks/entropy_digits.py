"""Clustering and locality penalties (method `entropy`) on scikit-learn digits: ablation and R/T sweep.

Parts (each prints a markdown table and can save its raw numbers as JSON):
- select: picks beta (for CE+MEL+NBEL) and gamma (for CE+Loc) by validation error on a tuning seed
  (never the test set), since the paper gives no values;
- table: supervised vs CE on R/T batches vs CE+MEL vs CE+MEL+NBEL vs CE+Loc vs all, test error
  mean +- std over seeds;
- sweep: CE+MEL (alpha = 0.8) for R/T in {0.25, ..., 0.9} (the paper's Fig. 1 left);
- plot: the sweep as a PNG, with the supervised baseline from a table JSON;
- loc: CE + MEL + Loc (no NBEL) with loc_mode top and weighted;
- cams: CE + MEL with gamma = 0 and gamma > 0 (seed = the first of --seeds): CAM pictures and J_L.

Every run uses conv_small (CAMs need a conv net), batch T = 100, the same number of optimiser steps,
and reports the last epoch's test error (no early stopping). The supervised baseline sees R = round(T R/T)
labelled samples per step, as many as the SSL runs.

    python benchmarks/entropy_digits.py --part table --out table.json   # runs select first
    python benchmarks/entropy_digits.py --part sweep --out sweep.json
    python benchmarks/entropy_digits.py --part plot --inputs table.json sweep.json --plot docs/img/entropy_rt_sweep.png
    python benchmarks/entropy_digits.py --part loc --gamma 0.01
    python benchmarks/entropy_digits.py --part cams --gamma 0.01
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from ssl_ray.data import DataSpec
from ssl_ray.data.splits import batch_composition
from ssl_ray.engine.loop import RunSpec, Trainer

RATIOS = (0.25, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def run(args, method: str, seed: int, config: dict) -> dict:
    cfg = {"arch": "conv_small", "steps_per_epoch": args.steps, **config}
    spec = RunSpec(method, DataSpec("digits", labels=args.labels), epochs=args.epochs, seed=seed, config=cfg)
    t0 = time.time()
    m = Trainer(spec, progress=False).fit()
    print(f"  {method} seed={seed} {config}: val {m['val_error']:.2f}% test {m['test_error']:.2f}% "
          f"({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    return {"val": m["val_error"], "test": m["test_error"]}


def supervised_config(args, ratio: float) -> dict:
    r, _ = batch_composition(args.batch, ratio)
    return {"batch_size": r, "labeled_ratio": 1.0}


def ssl_config(args, ratio: float, **weights) -> dict:
    return {"batch_size": args.batch, "labeled_ratio": ratio, "alpha": 0.0, "beta": 0.0, "gamma": 0.0, **weights}


def mean_std(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.2f} ± {sd:.2f}"


def select(args) -> tuple[float, float, list[str]]:
    """beta and gamma by validation error on the tuning seed(s)."""
    lines = ["| variant | value | val error (%) |", "|---|---|---|"]
    best = {}
    for name, key, values, base in (("CE+MEL+NBEL", "beta", args.beta_grid, {"alpha": args.alpha}),
                                    ("CE+Loc", "gamma", args.gamma_grid, {})):
        scores = {}
        for v in values:
            vals = [run(args, "entropy", s, ssl_config(args, args.ratio, **base, **{key: v}))["val"]
                    for s in args.tune_seeds]
            scores[v] = statistics.mean(vals)
            lines.append(f"| {name} | {key} = {v:g} | {scores[v]:.2f} |")
        best[key] = min(scores, key=scores.get)
    return best["beta"], best["gamma"], lines


def table(args) -> dict:
    beta, gamma = args.beta, args.gamma
    sel_lines: list[str] = []
    if beta is None or gamma is None:
        b, g, sel_lines = select(args)
        beta = b if beta is None else beta
        gamma = g if gamma is None else gamma
    a = args.alpha
    variants = [
        ("supervised (R labelled per step)", "supervised", supervised_config(args, args.ratio)),
        ("CE on R/T batches (alpha = beta = gamma = 0)", "entropy", ssl_config(args, args.ratio)),
        (f"CE + MEL (alpha = {a:g})", "entropy", ssl_config(args, args.ratio, alpha=a)),
        (f"CE + MEL + NBEL (beta = {beta:g})", "entropy", ssl_config(args, args.ratio, alpha=a, beta=beta)),
        (f"CE + Loc (gamma = {gamma:g})", "entropy", ssl_config(args, args.ratio, gamma=gamma)),
        ("CE + MEL + NBEL + Loc", "entropy", ssl_config(args, args.ratio, alpha=a, beta=beta, gamma=gamma)),
    ]
    rows = []
    for label, method, cfg in variants:
        res = [run(args, method, s, cfg) for s in args.seeds]
        rows.append({"variant": label, "method": method, "config": cfg, "test": [r["test"] for r in res],
                     "val": [r["val"] for r in res]})
    out = [f"R/T = {args.ratio:g}, T = {args.batch}, {args.labels} labels, {args.epochs} x {args.steps} steps, "
           f"seeds {args.seeds}", ""]
    if sel_lines:
        out += [f"Selection on validation (seeds {args.tune_seeds}):", "", *sel_lines, ""]
    out += ["| variant | test error (%) | val error (%) |", "|---|---|---|"]
    out += [f"| {r['variant']} | {mean_std(r['test'])} | {mean_std(r['val'])} |" for r in rows]
    print("\n".join(out))
    return {"part": "table", "beta": beta, "gamma": gamma, "rows": rows, "args": vars(args)}


def loc(args) -> None:
    """CE + MEL + Loc without NBEL, for both loc_mode values (gamma from --gamma, default 0.01)."""
    gamma = args.gamma if args.gamma is not None else 0.01
    out = [f"R/T = {args.ratio:g}, T = {args.batch}, {args.labels} labels, {args.epochs} x {args.steps} steps, "
           f"seeds {args.seeds}", "", "| variant | test error (%) | val error (%) |", "|---|---|---|"]
    for mode in ("top", "weighted"):
        res = [run(args, "entropy", s, ssl_config(args, args.ratio, alpha=args.alpha, gamma=gamma, loc_mode=mode))
               for s in args.seeds]
        out.append(f"| CE + MEL + Loc (gamma = {gamma:g}, loc_mode = {mode}) | {mean_std([r['test'] for r in res])} | "
                   f"{mean_std([r['val'] for r in res])} |")
    print("\n".join(out))


def sweep(args) -> dict:
    rows = []
    for ratio in args.ratios:
        res = [run(args, "entropy", s, ssl_config(args, ratio, alpha=args.alpha)) for s in args.seeds]
        rows.append({"ratio": ratio, "test": [r["test"] for r in res], "val": [r["val"] for r in res]})
    out = [f"CE + MEL, alpha = {args.alpha:g}, T = {args.batch}, {args.labels} labels, {args.epochs} x {args.steps} "
           f"steps, seeds {args.seeds}", "", "| R/T | R | test error (%) | val error (%) |", "|---|---|---|---|"]
    out += [f"| {r['ratio']:g} | {batch_composition(args.batch, r['ratio'])[0]} | {mean_std(r['test'])} | "
            f"{mean_std(r['val'])} |" for r in rows]
    print("\n".join(out))
    return {"part": "sweep", "rows": rows, "args": vars(args)}


def plot(args) -> None:
    from ssl_ray.nn.plots import new_figure

    parts = {d["part"]: d for d in (json.load(open(p)) for p in args.inputs)}
    sw = parts["sweep"]["rows"]
    fig, ax = new_figure(5, 3.5)
    xs = [r["ratio"] for r in sw]
    ax.errorbar(xs, [statistics.mean(r["test"]) for r in sw],
                yerr=[statistics.stdev(r["test"]) if len(r["test"]) > 1 else 0 for r in sw],
                marker="o", color="tab:red", capsize=3, label="CE + MEL (alpha = 0.8)")
    if "table" in parts:
        sup = parts["table"]["rows"][0]
        m = statistics.mean(sup["test"])
        r = sup["config"]["batch_size"]
        ax.axhline(m, color="tab:blue", ls="--", label=f"supervised ({r} labelled per step)")
    ax.set_xlabel("R/T (labelled share of each batch)")
    ax.set_ylabel("test error (%)")
    ax.set_title("digits: test error vs R/T (mean ± std over seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=90)
    print(f"wrote {args.plot}")


@torch.no_grad()
def cam_statistics(tr: Trainer) -> tuple[float, float]:
    """On the validation images: the mean Frobenius norm of the top-class CAM (its scale) and the mean
    J_L / ||C||_F (scale-free: how spread the map is; a single-pixel map of an N x N grid scores 2N + 2)."""
    from ssl_ray.data import to_float
    from ssl_ray.methods.entropy import locality_penalty

    net = tr.method.net
    net.eval()
    logits, c = net.cam(to_float(tr.x_val))
    top = c[torch.arange(len(c)), logits.argmax(1)]
    norm = top.flatten(1).norm(dim=1)
    return float(norm.mean()), float((locality_penalty(top) / norm).mean())


def cams(args) -> None:
    """CE + MEL with and without the locality penalty: CAM pictures of 8 validation images and J_L."""
    import shutil
    import tempfile
    from pathlib import Path

    gamma = args.gamma if args.gamma is not None else 0.01
    lines = ["| run | J_L (train, last epoch) | mean ‖C‖_F (val) | mean J_L / ‖C‖_F (val) | val error (%) | "
             "test error (%) | picture |", "|---|---|---|---|---|---|---|"]
    for g in (0.0, gamma):
        cfg = {"arch": "conv_small", "steps_per_epoch": args.steps, "batch_size": args.batch,
               "labeled_ratio": args.ratio, "alpha": args.alpha, "gamma": g}
        spec = RunSpec("entropy", DataSpec("digits", labels=args.labels), epochs=args.epochs, seed=args.seeds[0],
                       config=cfg)
        tmp = tempfile.mkdtemp(prefix="entropy_cams_")
        tr = Trainer(spec, progress=False, log_dir=tmp)
        m = tr.fit()
        scale, shape = cam_statistics(tr)
        dest = Path(args.plot_dir) / f"entropy_cam_gamma{g:g}.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "pictures" / "cam.png", dest)
        shutil.rmtree(tmp, ignore_errors=True)
        lines.append(f"| CE + MEL (alpha = {args.alpha:g}), gamma = {g:g} | {m['loss_loc']:.1f} | {scale:.2f} | "
                     f"{shape:.2f} | {m['val_error']:.2f} | {m['test_error']:.2f} | {dest} |")
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("select", "table", "sweep", "plot", "cams", "loc"), required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tune-seeds", type=int, nargs="+", default=[100])
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=50, help="optimiser steps per epoch (the same for every run)")
    p.add_argument("--labels", type=int, default=50)
    p.add_argument("--batch", type=int, default=100, help="T")
    p.add_argument("--ratio", type=float, default=0.8, help="R/T of the table")
    p.add_argument("--ratios", type=float, nargs="+", default=list(RATIOS))
    p.add_argument("--alpha", type=float, default=0.8)
    p.add_argument("--beta", type=float, default=None, help="default: selected on validation")
    p.add_argument("--gamma", type=float, default=None, help="default: selected on validation")
    p.add_argument("--beta-grid", type=float, nargs="+", default=[0.1, 1.0])
    p.add_argument("--gamma-grid", type=float, nargs="+", default=[0.001, 0.01])
    p.add_argument("--out", help="save the raw numbers as JSON")
    p.add_argument("--inputs", nargs="+", help="JSON files for --part plot")
    p.add_argument("--plot", default="docs/img/entropy_rt_sweep.png")
    p.add_argument("--plot-dir", default="docs/img", help="where --part cams writes its pictures")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.part == "plot":
        plot(args)
        return
    if args.part in ("cams", "loc"):
        cams(args) if args.part == "cams" else loc(args)
        return
    if args.part == "select":
        print("\n".join(select(args)[2]))
        return
    result = table(args) if args.part == "table" else sweep(args)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
