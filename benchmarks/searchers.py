"""TPE (Optuna, `--search optuna`) against random sampling (`--search random`) on one cheap space, with the same
budget and several seeds (each seed: the same labelled split and training seed for both searchers).

    PYTHONPATH=. python benchmarks/searchers.py --seeds 0 1 2 --trials 20 --out /tmp/searchers

The space: supervised on digits (50 labels), FIFO (every trial trains its full 4 epochs, so the searchers
differ only in what they propose), three knobs: lr, weight_decay (log scales) and batch_size.
Prints a Markdown table: best validation error after k trials (mean +- std over seeds), the test error of
the best trial, and the median validation error of all trials (how much of the budget went to good regions).
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

SPACE = """\
method: supervised
dataset: {name: digits, labels: 50}
search:
  lr: {loguniform: [1.0e-5, 1.0e-1]}
  weight_decay: {loguniform: [1.0e-6, 1.0e-1]}
  batch_size: {choice: [16, 32, 64, 128]}
scheduler: {name: fifo, max_epochs: 4}
"""


def run(searcher: str, seed: int, trials: int, out: str) -> list[dict]:
    import pyarrow.parquet as pq

    from ssl_ray.tuning.spaces import parse_space
    from ssl_ray.tuning.tune import TuneOptions, run_tune

    name = f"{searcher}-seed{seed}"
    done = Path(out) / name / "results.parquet"
    if not done.exists():  # a finished run is read back, not repeated
        space = parse_space(SPACE, source="benchmark")
        run_tune(space, TuneOptions(num_samples=trials, search=searcher, seed=seed, storage=out, name=name,
                                    progress=False, max_concurrent=2))
    rows = pq.read_table(done).to_pylist()
    assert len(rows) == trials, f"{done}: {len(rows)} trials, expected {trials}"
    # in the order proposed: Tune's trial folders are <trainable>_<id>_<index>_...
    return sorted(rows, key=lambda r: int(Path(r["path"]).name.split("_")[3]))


def fmt(xs: list[float]) -> str:
    return f"{statistics.fmean(xs):.2f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--out", default="/tmp/ssl_ray_searchers")
    a = ap.parse_args()
    from ssl_ray.tuning.cluster import init_ray

    init_ray(None, num_cpus=2)
    res: dict[str, dict[int, list[dict]]] = {"random": {}, "optuna": {}}
    t0 = time.time()
    for seed in a.seeds:
        for name in res:
            res[name][seed] = run(name, seed, a.trials, a.out)
    ks = sorted({max(1, a.trials // 4), a.trials // 2, a.trials})
    head = ["searcher"] + [f"best val error after {k} trials (%)" for k in ks] + [
        "test error of the best trial (%)", "median val error of all trials (%)"]
    print(f"\n{len(a.seeds)} seeds {a.seeds}, {a.trials} trials each, {time.time() - t0:.0f}s\n")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, by_seed in res.items():
        cells = [name]
        for k in ks:
            cells.append(fmt([min(r["best_val_error"] for r in rows[:k]) for rows in by_seed.values()]))
        best = [min(rows, key=lambda r: r["best_val_error"]) for rows in by_seed.values()]
        cells.append(fmt([b["test_error_at_best_val"] for b in best]))
        cells.append(fmt([statistics.median(r["best_val_error"] for r in rows) for rows in by_seed.values()]))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
