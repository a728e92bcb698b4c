"""Data-parallel throughput: 1 vs N Ray Train workers on this machine (CPU/gloo, or GPUs when present).

Runs `ssl-ray train`'s code path (ssl_ray.tuning.train.run_train) for each worker count on the same method,
dataset and per-worker batch, in one process, one after the other, and prints the steady-state global
samples/s (of the last epoch, after warm-up) and the scaling ratio.

    python benchmarks/scaling.py --method supervised --dataset digits --workers 1 2 --epochs 6
"""
from __future__ import annotations

import argparse
import tempfile

from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="supervised")
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=256, help="per worker")
    ap.add_argument("--steps", type=int, default=60, help="steps per epoch")
    ap.add_argument("--arch", default="conv_small")
    ap.add_argument("--set", dest="sets", nargs="*", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    from ssl_ray.config import parse_set
    from ssl_ray.tuning.train import run_train

    rows = []
    for w in args.workers:
        cfg = {"batch_size": args.batch_size, "steps_per_epoch": args.steps, "arch": args.arch, **parse_set(args.sets)}
        spec = RunSpec(args.method, DataSpec(args.dataset, labels=100), epochs=args.epochs, seed=0, config=cfg)
        with tempfile.TemporaryDirectory() as out:
            s = run_train(spec, output=out, workers=w, progress=False, ray_train=True)  # 1 worker too: like for like
        rows.append((w, s["metrics"]["samples_per_second"], s["seconds"]))
        print(f"workers={w}: last-epoch global samples/s {s['metrics']['samples_per_second']:.0f}, "
              f"wall {s['seconds']:.1f}s (incl. worker-group start)", flush=True)
    base = rows[0][1]
    print("\n| workers | global samples/s | scaling vs 1 worker | wall s (incl. start-up) |")
    print("|---|---|---|---|")
    for w, sps, wall in rows:
        print(f"| {w} | {sps:.0f} | {sps / base:.2f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
