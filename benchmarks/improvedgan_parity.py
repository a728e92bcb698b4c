"""ImprovedGAN parity: `ssl-ray train improvedgan` against the independent port of the reference
(benchmarks/improvedgan_port.py, which imports nothing from ssl_ray) on the same data, split, labels and steps.

  python benchmarks/improvedgan_parity.py split --seeds 1 2 3 --dir runs/parity     # ssl-ray's splits -> .npz
  python benchmarks/improvedgan_port.py --data runs/parity/split_1.npz --seed 1 --steps 2100 \\
      --out runs/parity/port_1.json                                                   # one per seed
  ssl-ray train improvedgan --dataset mnist5k --labels 100 --seed 1 --json \\
      --output runs/parity/sslray_1 > runs/parity/sslray_1.json                      # one per seed
  python benchmarks/improvedgan_parity.py table --seeds 1 2 3 --dir runs/parity     # the table

(port_S.json run with `--adam torch` as porttorch_S.json adds the bisection column: torch.optim.Adam's eps.)
I2GAN the same way: `ssl-ray train i2gan ... > DIR/sslray_i2gan_S.json`, the port with `--tau 2 --n-fake 200
--fm-norm l1 --out DIR/port_i2gan_S.json` (i2gan's defaults), then `table --tag _i2gan`.

The split of seed S is the one `ssl-ray train ... --seed S` trains on (ssl_ray.data.load_splits): 100
class-balanced labels, the unlabelled pool (the 3,500 training images left after the 500-image validation split,
labels included), mnist5k's fixed 1,000-image test set. 2,100 steps = the CLI's 20 epochs of 105 steps = 60
passes of the reference's loop over the 3,500-image pool.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics

import numpy as np


def write_splits(seeds: list[int], out_dir: str, labels: int) -> None:
    from ssl_ray.data import DataSpec, load_splits

    os.makedirs(out_dir, exist_ok=True)
    for s in seeds:
        sp = load_splits(DataSpec("mnist5k", labels=labels), s)
        x, y = np.asarray(sp.raw.x_train), np.asarray(sp.raw.y_train)
        path = os.path.join(out_dir, f"split_{s}.npz")
        np.savez_compressed(path, x_lab=x[sp.lab_idx], y_lab=y[sp.lab_idx], x_unl=x[sp.unl_idx],
                            x_test=np.asarray(sp.raw.x_test), y_test=np.asarray(sp.raw.y_test))
        print(f"{path}: {len(sp.lab_idx)} labelled, {len(sp.unl_idx)} unlabelled, {len(sp.raw.y_test)} test")


def _last_json(path: str) -> dict | None:
    """The file's JSON object (the port's --out), or its last line that is one (ssl-ray train --json)."""
    if not os.path.exists(path):
        return None
    text = open(path, encoding="utf-8").read()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lines = [ln for ln in text.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1]) if lines else None


def table(seeds: list[int], out_dir: str, tag: str = "") -> None:
    cols: dict[str, list] = {"ssl-ray (warm-up EMA)": [], "port, warm-up EMA": [], "port, reference EMA": [],
                             "port, raw": [], "port --adam torch, warm-up EMA": []}
    for s in seeds:
        ours = _last_json(os.path.join(out_dir, f"sslray{tag}_{s}.json"))
        port = _last_json(os.path.join(out_dir, f"port{tag}_{s}.json"))
        port_t = _last_json(os.path.join(out_dir, f"porttorch{tag}_{s}.json"))  # the same with --adam torch
        vals = [ours and ours["test_error"], port and port["test_error_ema_warmup"],
                port and port["test_error_ema_reference"], port and port["test_error_raw"],
                port_t and port_t["test_error_ema_warmup"]]
        for k, v in zip(cols, vals):
            cols[k].append(v)
    print("| seed | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for i, s in enumerate(seeds):
        print(f"| {s} | " + " | ".join("-" if c[i] is None else f"{c[i]:.2f}" for c in cols.values()) + " |")
    means = []
    for c in cols.values():
        v = [x for x in c if x is not None]
        means.append(f"{statistics.mean(v):.2f} +- {statistics.stdev(v):.2f}" if len(v) > 1 else "-")
    print("| mean +- sd | " + " | ".join(means) + " |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=("split", "table"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--dir", default="runs/parity")
    ap.add_argument("--labels", type=int, default=100)
    ap.add_argument("--tag", default="", help="table of sslray<TAG>_S.json against port<TAG>_S.json (e.g. _i2gan)")
    a = ap.parse_args()
    write_splits(a.seeds, a.dir, a.labels) if a.what == "split" else table(a.seeds, a.dir, a.tag)
