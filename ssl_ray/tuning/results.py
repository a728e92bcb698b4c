"""Results you can compare: results.parquet (one row per trial), history.parquet (one row per trial and
epoch), summary.json, and the tables of `ssl-ray report`."""
from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from .. import config as C
from ..data import files as F
from ..errors import SSLRayError
from ..methods import get_method

RESULTS, HISTORY, SUMMARY = "results.parquet", "history.parquet", "summary.json"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


# Ray's error for a trial whose worker process ended under it (SIGKILL, the OOM killer, a segfault): ten lines
# and a 500-character paragraph of possible causes; said in one line instead
_WORKER_DIED = re.compile(r"worker process has died\. Worker exit type: (\w+)")
_WORKER_PID = re.compile(r"^\s*pid: (\d+)\s*$", re.M)


def _worker_died(text: str) -> str | None:
    m = _WORKER_DIED.search(text)
    if m is None:
        return None
    pid = _WORKER_PID.search(text)
    return (f"the trial's worker process{f' (pid {pid.group(1)})' if pid else ''} died: killed, out of memory or "
            f"crashed (Ray: ActorDiedError, exit type {m.group(1)})")


def _reason(error: Any) -> str | None:
    """One line saying why a trial failed, from its error.txt (the exception's last line, else Ray's)."""
    if error is None:
        return None
    died = _worker_died(str(error))
    if died is not None:
        return died
    text = str(error).strip().splitlines()
    for line in reversed(text):
        line = line.strip()
        if line and not line.startswith(("File ", "^", "~")):
            head, sep, rest = line.partition(": ")
            if sep and "." in head and " " not in head:  # "ssl_ray.errors.DivergenceError: ..." -> short name
                line = head.rsplit(".", 1)[-1] + ": " + rest
            return line[:500]
    return text[-1][:500] if text else repr(error)


def summarize(exp: str, space, trials: list[dict[str, Any]], *, max_epochs: int, seconds: float,
              interrupted: bool = False, ray_init_seconds: float | None = None) -> dict[str, Any]:
    """Build the tables from the experiment's own files (experiment.collect: one entry per planned trial),
    write them next to the experiment, return the JSON summary."""
    cls = get_method(space.method)
    rows, history = [], []
    for t in trials:
        hp, hist, trial_id = t["config"], t["history"], t["trial_id"]
        m = hist[-1] if hist else {}
        vals = [h.get("val_error") for h in hist if _num(h.get("val_error")) is not None]
        epochs = int(max([_num(h.get("epoch")) or 0 for h in hist] or [0]))
        status = t["status"]
        full = C.to_dict(C.build(cls.Config, {**space.fixed, **hp}))
        best_i = min(range(len(hist)), key=lambda i: hist[i].get("val_error", math.inf)
                     if _num(hist[i].get("val_error")) is not None else math.inf) if vals else None
        row = {"trial_id": trial_id, "status": status, "stopped_early": status == "STOPPED",
               "error": _reason(t["error"]), "epochs": epochs,
               "val_error": _num(m.get("val_error")), "test_error": _num(m.get("test_error")),
               "best_val_error": min(vals) if vals else None,
               "test_error_at_best_val": _num(hist[best_i].get("test_error")) if best_i is not None else None,
               "epoch_of_best_val": int(hist[best_i].get("epoch", 0)) if best_i is not None else None,
               "seconds": t["seconds"], "path": t["path"]}
        row.update({f"config/{k}": v for k, v in full.items()})
        rows.append(row)
        for h in hist:
            hr = {"trial_id": trial_id, "epoch": int(_num(h.get("epoch")) or 0)}
            hr.update({k: _num(v) for k, v in h.items() if _num(v) is not None and k not in ("epoch",)
                       and not k.startswith("config")})
            history.append(hr)
    ok = [r for r in rows if r["best_val_error"] is not None and math.isfinite(r["best_val_error"])]
    best = min(ok, key=lambda r: r["best_val_error"]) if ok else None
    summary = {
        "experiment": exp, "method": space.method, "dataset": space.data.name, "labels": space.data.labels,
        "interrupted": interrupted,
        "num_trials": len(rows), "num_stopped_early": sum(r["stopped_early"] for r in rows),
        "num_errored": sum(r["status"] == "ERROR" for r in rows),
        "num_completed": sum(r["status"] == "TERMINATED" for r in rows),
        "num_interrupted": sum(r["status"] == "INTERRUPTED" for r in rows),
        "scheduler": vars(space.scheduler), "searched": list(space.search), "seconds": round(seconds, 1),
        "seconds_ray_init": None if ray_init_seconds is None else round(ray_init_seconds, 2),
        "best": None if best is None else {
            "trial_id": best["trial_id"], "config": {k[7:]: v for k, v in best.items() if k.startswith("config/")},
            "val_error": best["best_val_error"], "test_error": best["test_error_at_best_val"],
            "epochs": best["epoch_of_best_val"], "epochs_run": best["epochs"]},
        "errors": {r["trial_id"]: r["error"] for r in rows if r["error"]},
        "results": exp.rstrip("/") + "/" + RESULTS, "history": exp.rstrip("/") + "/" + HISTORY,
    }
    write_tables(exp, rows, history)
    write_summary(exp, summary)
    return summary


def write_tables(exp: str, rows: list[dict], history: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, base = _fs(exp)
    for name, data in ((RESULTS, rows), (HISTORY, history)):
        table = pa.Table.from_pylist(_uniform(data))
        tmp = f"{base}/.{name}.tmp"
        pq.write_table(table, tmp, filesystem=fs)
        fs.move(tmp, f"{base}/{name}")  # complete files only, even if the driver dies mid-write


def _uniform(rows: list[dict]) -> list[dict]:
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    return [{k: r.get(k) for k in keys} for r in rows]


def write_summary(exp: str, summary: dict[str, Any]) -> None:
    fs, base = _fs(exp)
    with fs.open_output_stream(f"{base}/{SUMMARY}") as f:
        f.write(json.dumps(summary, indent=2, default=str).encode())


def _fs(path: str):
    import pyarrow.fs as pafs

    if "://" in path:
        fs, base = pafs.FileSystem.from_uri(path)
        return fs, base
    Path(path).mkdir(parents=True, exist_ok=True)
    return pafs.LocalFileSystem(), str(Path(path).resolve())


# ---- reading experiments back (ssl-ray report / tensorboard / export) --------------------------------------
_REPAIR = "; `ssl-ray tune ... --resume` rewrites it from the trials' files"
_NUMBER = (int, float)
# what report and export read from summary.json, and the types they need (None is allowed for each)
_SUMMARY_FIELDS: dict[str, tuple[type, ...]] = {"best": (dict,), "confirm": (dict,), "searched": (list,),
                                                "errors": (dict,)}
_BEST_FIELDS: dict[str, tuple[type, ...]] = {"trial_id": (str,), "config": (dict,), "val_error": _NUMBER,
                                             "test_error": _NUMBER, "epochs": (int,)}
_CONFIRM_FIELDS: dict[str, tuple[type, ...]] = {"test_error_mean": _NUMBER, "test_error_std": _NUMBER,
                                                "seeds": (list,)}


_WORDS: dict[tuple[type, ...], str] = {(dict,): "an object", (list,): "a list", (str,): "a string",
                                       _NUMBER: "a number", (int,): "an integer"}


def _check_fields(doc: dict, fields: dict[str, tuple[type, ...]], where: Path, prefix: str = "") -> None:
    for k, types in fields.items():
        v = doc.get(k)
        if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
            raise SSLRayError(f"{where} is damaged ({prefix}{k}: expected {_WORDS[types]} or null, got "
                              f"{type(v).__name__}){_REPAIR}")


def read_summary(exp: str | Path) -> dict[str, Any]:
    """summary.json, checked: a JSON object whose fields report and export read have the types they need."""
    f = Path(exp) / SUMMARY
    summary = F.read_json(f, "summary", damaged=_REPAIR)
    if not isinstance(summary, dict):
        raise SSLRayError(f"{f} is damaged (not a JSON object){_REPAIR}")
    _check_fields(summary, _SUMMARY_FIELDS, f)
    _check_fields(summary.get("best") or {}, _BEST_FIELDS, f, "best.")
    _check_fields(summary.get("confirm") or {}, _CONFIRM_FIELDS, f, "confirm.")
    confirm = summary.get("confirm") or {}
    if confirm.get("test_error_mean") is not None and confirm.get("test_error_std") is None:
        raise SSLRayError(f"{f} is damaged (confirm: a test_error_mean without its test_error_std){_REPAIR}")
    if not all(isinstance(k, str) for k in summary.get("searched") or []):
        raise SSLRayError(f"{f} is damaged (searched: expected a list of names){_REPAIR}")
    return summary


def _check_schema(schema, where: Path) -> None:
    """results.parquet has the columns every ssl-ray experiment writes, with their types (another Parquet file
    would otherwise be reported as an experiment of len(rows) trials)."""
    import pyarrow as pa

    def text(t): return pa.types.is_string(t) or pa.types.is_large_string(t)
    def number(t): return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)

    need = {"trial_id": (text, "text"), "status": (text, "text")}
    typed = {"stopped_early": (lambda t: pa.types.is_boolean(t) or pa.types.is_null(t), "true/false"),
             **{k: (number, "numbers") for k in ("epochs", "val_error", "test_error", "best_val_error",
                                                   "test_error_at_best_val", "epoch_of_best_val", "seconds")}}
    names = set(schema.names)
    missing = [k for k in need if k not in names]
    if missing:
        raise SSLRayError(f"{where} is not an ssl-ray results table: no column {missing[0]!r} (it has "
                          f"{', '.join(schema.names[:8])}{', ...' if len(schema.names) > 8 else ''})")
    for k, (ok, want) in {**need, **typed}.items():
        if k in names and not ok(schema.field(k).type):
            raise SSLRayError(f"{where} is not an ssl-ray results table: column {k!r} holds {schema.field(k).type}, "
                              f"not {want}")


def load_experiment(path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import pyarrow.parquet as pq

    p = Path(path)
    if not (p / RESULTS).exists():
        raise SSLRayError(f"{path} is not a finished ssl-ray experiment (no {RESULTS}); run `ssl-ray tune` or "
                          f"`ssl-ray tune ... --resume` to complete it")
    summary = read_summary(p) if (p / SUMMARY).exists() else {}
    F.regular_file(p / RESULTS, "results table")
    try:
        _check_schema(pq.read_schema(p / RESULTS), p / RESULTS)
        rows = pq.read_table(p / RESULTS).to_pylist()
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise SSLRayError(f"{p / RESULTS} is damaged ({str(e).splitlines()[0]}){_REPAIR}") from None
    return summary, rows


def read_histories(exp: str) -> dict[str, list[dict[str, Any]]]:
    """Every trial's per-epoch rows (history.parquet), by trial id, in epoch order (the benchmarks read these)."""
    import pyarrow.parquet as pq

    out: dict[str, list[dict[str, Any]]] = {}
    for r in pq.read_table(Path(exp) / HISTORY).to_pylist():
        out.setdefault(r["trial_id"], []).append(r)
    return {t: sorted(rs, key=lambda r: r["epoch"]) for t, rs in out.items()}


def comparison(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for path in paths:
        s, rows = load_experiment(path)
        conf = s.get("confirm") or {}
        best = s.get("best") or {}
        out.append({
            "experiment": os.path.basename(os.path.normpath(path)), "method": s.get("method"),
            "dataset": s.get("dataset"), "labels": s.get("labels"), "trials": len(rows),
            "stopped_early": sum(bool(r.get("stopped_early")) for r in rows),
            "errored": sum(r.get("status") == "ERROR" for r in rows),
            "best_val_error": best.get("val_error"), "test_error": best.get("test_error"),
            "confirm_test_error": (f"{conf['test_error_mean']:.2f} +- {conf['test_error_std']:.2f} "
                                   f"({len(conf.get('seeds') or [])} seeds)") if conf.get("test_error_mean") is not None
            else None,
            "best_config": ", ".join(f"{k}={_fmt(best.get('config', {}).get(k))}" for k in s.get("searched", [])),
        })
    return out


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(nothing to compare)"
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "|".join("---" for _ in keys) + "|"]
    for r in rows:
        lines.append("| " + " | ".join("" if r[k] is None else _fmt(r[k]) for k in keys) + " |")
    return "\n".join(lines)


def trial_rows(paths: list[str]) -> list[dict[str, Any]]:
    """One row per trial of the finished experiments at `paths`, each led by its experiment's folder name."""
    rows = []
    for path in paths:
        _, rs = load_experiment(path)
        rows += [{"experiment": os.path.basename(os.path.normpath(path)), **r} for r in rs]
    return rows


# ---- `ssl-ray report --trials` (issue 28; also the figures package's HTML table) ------------------------
TRIAL_COLUMNS = ("experiment", "trial_id", "status", "epochs", "best_val_error", "test_error_at_best_val",
                 "epoch_of_best_val")


def _val_key(r: dict[str, Any]) -> float:
    v = _num(r.get("best_val_error"))
    return v if v is not None and math.isfinite(v) else math.inf


def trial_table(paths: list[str], all_columns: bool = False) -> list[dict[str, Any]]:
    """`report --trials`: each experiment's trials (experiments in the order given) sorted by best validation
    error, trials without one last. Columns: TRIAL_COLUMNS, the failure reason where a trial has one, then the
    searched hyperparameters (summary.json's `searched`) under their own names; all_columns: every column of
    results.parquet, as trial_rows."""
    out = []
    for path in paths:
        summary, rs = load_experiment(path)
        name = os.path.basename(os.path.normpath(path))
        searched = summary.get("searched") or []
        error = any(r.get("error") for r in rs)
        for r in sorted(rs, key=_val_key):
            if all_columns:
                out.append({"experiment": name, **r})
                continue
            row = {k: (name if k == "experiment" else r.get(k)) for k in TRIAL_COLUMNS}
            if error:
                row["error"] = r.get("error")
            row.update({(k if k not in row else f"config/{k}"): r.get(f"config/{k}") for k in searched})
            out.append(row)
    return out


def to_csv(rows: list[dict[str, Any]]) -> str:
    """CSV with a column for every key of any row (empty where a row lacks it)."""
    import csv
    import io

    buf = io.StringIO()
    table = _uniform(rows)
    w = csv.DictWriter(buf, fieldnames=list(table[0]) if table else [])
    w.writeheader()
    w.writerows(table)
    return buf.getvalue()


def write_parquet(rows: list[dict[str, Any]], path: str) -> None:
    """The rows as a Parquet file at `path`, written atomically (files.write_output: a folder, FIFO or an
    unwritable place is refused; an existing file is replaced)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(_uniform(rows))
    F.write_output(path, lambda tmp: pq.write_table(table, tmp))


def report_text(rows: list[dict[str, Any]], fmt: str) -> str:
    """The rows of `ssl-ray report` as text: md, csv or json (parquet is a file: write_parquet)."""
    if fmt == "json":
        return json.dumps(rows, default=str, indent=1)
    if fmt == "csv":
        return to_csv(rows)
    if fmt == "md":
        return to_markdown(rows)
    raise SSLRayError(f"unknown report format {fmt!r}; text formats: md, csv, json")
