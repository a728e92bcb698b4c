"""advgen on digits/50 at the CLI's budget: which knob, if any, makes it beat the classifier alone.

Runs the same Trainer as `ssl-ray train advgen --seed S --set KEY=VALUE` (20 epochs of 9 steps) for each
variant below and prints, per variant and seed, the last epoch's test error and the final L_reconst / L_adv
(the figures in docs/results-defaults.md, advgen bullet).

    python benchmarks/advgen_digits_probe.py [--seeds 1 2] [--epochs 20]
"""
from __future__ import annotations

import argparse

import torch

from ssl_ray.data import DataSpec
from ssl_ray.engine.loop import RunSpec, Trainer

VARIANTS: list[dict] = [
    {}, {"alpha": 0.0}, {"lambda_rec": 3.0}, {"lambda_rec": 10.0}, {"lambda_rec": 30.0}, {"lambda_rec": 100.0},
    {"alpha": 0.1}, {"alpha": 0.3}, {"lr_g": 5e-3}, {"lr_g": 1e-2}, {"stopgrad_clean": False},
]


def run(method: str, seed: int, cfg: dict, epochs: int) -> list[dict]:
    hist: list[dict] = []
    tr = Trainer(RunSpec(method, DataSpec("digits", labels=50), epochs=epochs, seed=seed, config=cfg),
                 progress=False)
    tr.fit(lambda m, c: hist.append(m))
    return hist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("| variant | " + " | ".join(f"seed {s}: test % (L_reconst, L_adv)" for s in a.seeds) + " |")
    print("|---|" + "---|" * len(a.seeds))
    rows = [("supervised", {})] + [("advgen", v) for v in VARIANTS]
    for method, cfg in rows:
        cells = []
        for s in a.seeds:
            h = run(method, s, cfg, a.epochs)[-1]
            extra = f" ({h['loss_rec']:.2f}, {h['loss_adv']:.2f})" if "loss_rec" in h else ""
            cells.append(f"{h['test_error']:.2f}{extra}")
        name = method + (" " + " ".join(f"{k}={v}" for k, v in cfg.items()) if cfg else " (defaults)")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
