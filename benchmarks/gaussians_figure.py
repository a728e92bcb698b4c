"""Reproduce the VCAGAN paper's Gaussian-clusters figures (Figs. 2-4) at a budget that fits a CPU.

Four 2-D Gaussian clusters (centres (-2,2), (2,1), (0,-2), (1,-1), probabilities 0.1/0.4/0.2/0.3,
sigma 0.3); d_z 16, d_c 8, G and D with 4 hidden layers of 512 units, Adam lr 1e-3 betas (0, 0.99),
batch 32, R1 weight 1, equalized learning rate (the paper's settings), for

- vcagan with lambda_creg in {0.1, 1, 10} (paper Fig. 4: 4 / 3 / 1 active categories);
- gan (vanilla, uniform 8-category prior; Fig. 2) and infogan (uniform d_c 8, Fig. 3 right, and the
  "optimal" 4-category prior 0.1/0.2/0.3/0.4, Fig. 3 left);

over several seeds. The paper trains 50 epochs x 1000 steps; pass --epochs/--steps to choose the budget
(the table header states it). Prints a markdown table and writes one picture per configuration (first seed)
and the raw per-run metrics as JSON (with --progress-dir also after every epoch, so that a run cut off
by a time limit still reports how far it got: --from-progress prints that table).

    python benchmarks/gaussians_figure.py --epochs 2 --steps 500 --seeds 0 1 2 --jobs 3
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

CONFIGS = {
    "vcagan_creg0.1": ("vcagan", {"lambda_creg": 0.1}),
    "vcagan_creg1": ("vcagan", {"lambda_creg": 1.0}),
    "vcagan_creg10": ("vcagan", {"lambda_creg": 10.0}),
    # The paper's EMA decay 0.999 cannot take a category from 1/8 below 1% within 1000 steps
    # (0.125 * 0.999^1000 = 0.046); decay 0.99 lets a short run reach the prior's fixed point E_x[Q(x)].
    "vcagan_creg0.1_decay0.99": ("vcagan", {"lambda_creg": 0.1, "prior_decay": 0.99}),
    "vcagan_creg1_decay0.99": ("vcagan", {"lambda_creg": 1.0, "prior_decay": 0.99}),
    "vcagan_creg10_decay0.99": ("vcagan", {"lambda_creg": 10.0, "prior_decay": 0.99}),
    "gan_uniform8": ("gan", {}),
    "infogan_uniform8": ("infogan", {}),
    "infogan_optimal4": ("infogan", {"d_c": 4, "prior": "0.1,0.2,0.3,0.4"}),
}


def run_one(name: str, seed: int, epochs: int, steps: int, img_dir: str | None,
            progress_dir: str | None = None) -> dict:
    import torch

    torch.set_num_threads(1)
    from ssl_ray.data import DataSpec
    from ssl_ray.engine.loop import RunSpec, Trainer

    method, cfg = CONFIGS[name]
    t0 = time.time()
    tr = Trainer(RunSpec(method, DataSpec("gaussians"), epochs=epochs, seed=seed,
                         config={**cfg, "steps_per_epoch": steps}), progress=False)
    hist = []

    def report(m: dict, _ckpt) -> None:
        hist.append({k: m[k] for k in ("epoch", "active_categories", "gen_off_cluster")})
        if progress_dir:  # after every epoch: a run cut off by a time limit still shows how far it got
            with open(os.path.join(progress_dir, f"{name}_seed{seed}.json"), "w") as f:
                json.dump({"name": name, "seed": seed, "seconds": time.time() - t0, "metrics": m,
                           "history": hist, "partial": m["epoch"] < epochs}, f, indent=1)

    last = tr.fit(report=report)
    if img_dir:
        from PIL import Image

        tr.method.eval()
        img = tr.method.pictures(tr.x_val, tr.y_val)["generated"]
        Image.fromarray(img).save(os.path.join(img_dir, f"gaussians_{name}.png"), optimize=True)
    return {"name": name, "seed": seed, "seconds": time.time() - t0, "metrics": last, "history": hist}


def mean_std(v: list[float]) -> str:
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return f"{m:.2f} ± {s:.2f}"


def active_prior(m: dict) -> str:
    p = sorted((m[k] for k in m if k.startswith("prior_") and k[6:].isdigit()), reverse=True)
    return "[" + ", ".join(f"{v:.3f}" for v in p if v >= 0.01) + "]"


def shares(ms: list[dict]) -> str:
    """Seed-mean share of the on-cluster generated points at each true cluster."""
    return "/".join(f"{sum(m[f'gen_share_{k}'] for m in ms) / len(ms):.2f}" for k in range(4))


def table(results: list[dict], epochs: int, steps: int) -> str:
    lines = [f"Budget: {epochs} epochs x {steps} steps = {epochs * steps} steps per run "
             f"(paper: 50 x 1000 = 50000), batch 32.", "",
             "| config | seeds | epochs reached (per seed) | P(C) categories >= 1% (per seed) "
             "| categories given >= 1% of real val points "
             "(per seed) | P(C) >= 1%, sorted (per seed) | off-cluster % "
             "| on-cluster share per true cluster (truth 0.1/0.4/0.2/0.3), seed mean "
             "| share TV distance | test clustering error % | test NMI |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in CONFIGS:
        rs = sorted((r for r in results if r["name"] == name), key=lambda r: r["seed"])
        if not rs:
            continue
        ms = [r["metrics"] for r in rs]
        act = [m["active_categories"] for m in ms]
        real = [m["real_active_categories"] for m in ms if "real_active_categories" in m]
        lines.append(
            f"| {name} | {len(rs)} | {', '.join(str(int(m['epoch'])) for m in ms)} "
            f"| {mean_std(act)} ({', '.join(str(int(a)) for a in act)}) "
            f"| {(mean_std(real) + ' (' + ', '.join(str(int(a)) for a in real) + ')') if real else 'n/a'} "
            f"| {'; '.join(active_prior(m) for m in ms)} "
            f"| {mean_std([100 * m['gen_off_cluster'] for m in ms])} "
            f"| {shares(ms)} "
            f"| {mean_std([m['gen_share_tv'] for m in ms])} "
            f"| {mean_std([m['test_error'] for m in ms])} | {mean_std([m['test_nmi'] for m in ms])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=500, help="steps per epoch (paper: 1000)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--configs", nargs="+", default=[c for c in CONFIGS if "decay" not in c], choices=list(CONFIGS))
    ap.add_argument("--jobs", type=int, default=3, help="parallel runs (one CPU thread each)")
    ap.add_argument("--img-dir", default="docs/img")
    ap.add_argument("--json", default="/tmp/gaussians_figure.json", help="where the per-run metrics go")
    ap.add_argument("--table-only", action="store_true", help="print the table of an existing --json file")
    ap.add_argument("--progress-dir", default=None, help="write each run's metrics there after every epoch")
    ap.add_argument("--from-progress", action="store_true",
                    help="print the table from the per-epoch files in --progress-dir (runs may be unfinished)")
    a = ap.parse_args()
    if a.from_progress:
        import glob

        rs = []
        for fn in sorted(glob.glob(os.path.join(a.progress_dir, "*.json"))):
            with open(fn) as f:
                rs.append(json.load(f))
        print(table(rs, a.epochs, a.steps))
        return
    if a.table_only:
        with open(a.json) as f:
            d = json.load(f)
        print(table(d["results"], d["epochs"], d["steps"]))
        return
    os.makedirs(a.img_dir, exist_ok=True)
    if a.progress_dir:
        os.makedirs(a.progress_dir, exist_ok=True)
    jobs = [(n, s) for s in a.seeds for n in a.configs]
    results = []
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        futs = [ex.submit(run_one, n, s, a.epochs, a.steps, a.img_dir if s == a.seeds[0] else None,
                          a.progress_dir) for n, s in jobs]
        for f in futs:
            r = f.result()
            results.append(r)
            with open(a.json, "w") as f:  # after every run: a partial table survives an interruption
                json.dump({"epochs": a.epochs, "steps": a.steps, "results": results}, f, indent=1)
            print(f"done {r['name']} seed {r['seed']} in {r['seconds']:.0f}s: active "
                  f"{r['metrics']['active_categories']:.0f}, off-cluster {100 * r['metrics']['gen_off_cluster']:.1f}%",
                  file=sys.stderr, flush=True)
    print(table(results, a.epochs, a.steps))


if __name__ == "__main__":
    main()
