"""`ssl-ray compare M1 M2 ...`: the same search budget for every method on the same data, then a table.

For each method: its default search space (search_spaces/<method>.yaml) moved to the comparison's dataset and
labels, searched with the same number of trials and epochs (`ssl-ray tune`: run_tune, ASHA by default), then
its best configuration (by validation error) retrained with the same K seeds (`--confirm-seeds K`: seeds
seed+1 .. seed+K, each with its own labelled split, the same for every method). The table reports test error
mean +- std over those seeds per method. Nothing here trains by itself: it is run_tune, once per method, and
a table made from the summaries run_tune writes (summary.json, results.parquet: `ssl-ray report` reads them).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data import DataSpec
from ..errors import SSLRayError
from .spaces import load_space
from .tune import TuneOptions, experiment_path, run_tune

COLUMNS = ("method", "trials", "best_val_error", "test_error_mean", "test_error_std", "seeds", "test_errors",
           "best_config", "experiment")


def plan_spaces(methods: list[str], data: DataSpec, spaces: dict[str, str] | None = None) -> list:
    """Every method's space on the comparison's data (a space file per method from `spaces`, else its
    default). Validates them all before anything runs."""
    if len(set(methods)) != len(methods):
        raise SSLRayError(f"compare: a method is named twice in {', '.join(methods)}")
    out = []
    for m in methods:
        space = load_space((spaces or {}).get(m), method=m)
        space.data = copy.deepcopy(data)
        out.append(space)
    return out


def compare(methods: list[str], data: DataSpec, opts: TuneOptions, *, seeds: int = 2,
            spaces: dict[str, str] | None = None, name: str | None = None) -> dict[str, Any]:
    """Tune each method with the same budget (opts.num_samples trials, opts.max_epochs epochs), confirm its best
    configuration with `seeds` seeds, and return {"rows": [...], "experiments": {...}, "markdown", "csv"}."""
    if seeds < 1:
        raise SSLRayError("compare needs at least one confirmation seed (--seeds)")
    todo = plan_spaces(methods, data, spaces)
    base = name or f"compare-{data.name}-{data.labels}"
    storage, _ = experiment_path(replace(opts, name=base), todo[0])
    rows, summaries = [], {}
    for space in todo:
        o = replace(opts, name=f"{base}-{space.method}", confirm_seeds=seeds)
        summary = run_tune(space, o)
        summaries[space.method] = summary
        rows.append(row(space.method, summary))
    result: dict[str, Any] = {"dataset": data.name, "labels": data.labels, "num_samples": opts.num_samples,
              "max_epochs": opts.max_epochs, "seeds": seeds, "storage": storage, "rows": rows,
              "experiments": {m: s["experiment"] for m, s in summaries.items()}}
    markdown, csv_text = to_markdown(result), to_csv(rows)
    result["markdown"], result["csv"] = markdown, csv_text
    if "://" not in storage:
        folder = Path(storage) / base
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "compare.md").write_text(markdown + "\n", encoding="utf-8")
        (folder / "compare.csv").write_text(csv_text, encoding="utf-8")
        (folder / "compare.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
        result["table"] = str(folder / "compare.md")
    return result


def row(method: str, summary: dict[str, Any]) -> dict[str, Any]:
    """One table row from run_tune's summary (its `confirm` entry holds the seeds' test errors)."""
    best = summary.get("best") or {}
    conf = summary.get("confirm") or {}
    errs = [float(e) for e in conf.get("test_errors", [])]
    cfg = best.get("config") or {}
    return {"method": method, "trials": summary.get("num_trials"),
            "best_val_error": best.get("val_error"),
            "test_error_mean": statistics.fmean(errs) if errs else None,
            "test_error_std": statistics.stdev(errs) if len(errs) > 1 else (0.0 if errs else None),
            "seeds": len(errs), "test_errors": errs,
            "best_config": ", ".join(f"{k}={_fmt(cfg.get(k))}" for k in summary.get("searched", [])),
            "experiment": summary.get("experiment")}


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _pm(r: dict[str, Any]) -> str:
    if r["test_error_mean"] is None:
        return "-"
    return f"{r['test_error_mean']:.2f} +- {r['test_error_std']:.2f}"


def to_markdown(result: dict[str, Any]) -> str:
    head = (f"{result['dataset']}, {result['labels']} labels: {result['num_samples']} trials x up to "
            f"{result['max_epochs']} epochs per method, best configuration retrained with {result['seeds']} seeds")
    lines = [head, "", "| method | test error % (mean +- std) | seeds | best val error % | trials | best config |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        val = "-" if r["best_val_error"] is None else f"{r['best_val_error']:.2f}"
        lines.append(f"| {r['method']} | {_pm(r)} | {r['seeds']} | {val} | {r['trials']} | {r['best_config']} |")
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS))
    w.writeheader()
    for r in rows:
        w.writerow({**r, "test_errors": " ".join(f"{e:.4g}" for e in r["test_errors"])})
    return buf.getvalue()
