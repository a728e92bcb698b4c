"""Which checkpoint `ssl-ray export` ships, and the figures it is reported with (issue 28: the exported model is
the reported one).

A tune experiment: the trial's epoch `report` names (results.parquet's epoch_of_best_val, with its
best_val_error and test_error_at_best_val; summary.json's best when there is no table). Tune keeps, per trial,
the checkpoints of lowest validation error and the latest one (schedulers/base.py Kind.checkpoint_config), so
that epoch's checkpoint is there, in any attempt folder of the trial (a resumed trial continues in a new Tune
trial folder). Where it is not (PBT checkpoints only at its decision epochs; an experiment from before the
tie-broken score), the kept checkpoint of lowest validation error (the first of equals) is shipped and
`note` says both epochs with their validation and test errors.

A train run keeps only its last checkpoint: that is shipped, with the last epoch's errors from result.json;
`note` states the run's best validation error and the test error there when they are not the shipped ones.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..data import files as F
from ..errors import SSLRayError


def _inside(path: Path, root: Path) -> Path:
    """`path` when it, links followed, lies inside `root`; an error otherwise (export reads only the folder given)."""
    real, base = path.resolve(), root.resolve()
    if real != base and base not in real.parents:
        raise SSLRayError(f"{path} leads outside {root} (to {real}); export reads only files inside the folder "
                          f"it is given")
    return path


def _index(p: Path) -> int:
    tail = p.name.rsplit("_", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def checkpoints(d: Path, root: Path) -> list[Path]:
    """The checkpoint folders (checkpoint*/state.pt) under `d`, in the order they were written."""
    found = [_inside(p, root).parent for p in d.rglob("state.pt") if p.parent.name.startswith("checkpoint")]
    return sorted(found, key=lambda p: (_index(p), p.stat().st_mtime))


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _pct(v: Any) -> str:
    return "?" if _num(v) is None else f"{v:.2f} %"


# ---- a tune experiment -----------------------------------------------------------------------------------
def attempt_folders(exp: Path, tid: str) -> list[tuple[Path, int]]:
    """(folder, epoch it continued from) of every attempt of trial `tid`'s plan entry (the trial and the Tune
    trials a --resume continued it in), earliest first; the trial's own folder(s) when its record does not say."""
    from ..tuning import experiment

    records = experiment.load_records(exp)
    rec = records.get(tid) if isinstance(records, dict) else None
    if isinstance(rec, dict) and isinstance(rec.get("index"), int) and not isinstance(rec.get("index"), bool):
        same = [(exp / r["dir"], int(_num((r.get("resume") or {}).get("from_epoch")) or 0)
                 if isinstance(r.get("resume"), dict) else 0) for r in records.values()
                if isinstance(r, dict) and r.get("index") == rec["index"] and isinstance(r.get("dir"), str)
                and (exp / r["dir"]).is_dir()]
        if same:
            return sorted(same, key=lambda a: a[1])
    return [(d, 0) for d in experiment.trial_folders(exp, tid)]


def kept_checkpoints(attempts: list[tuple[Path, int]], root: Path) -> dict[int, Path]:
    """{epoch: checkpoint folder} of the checkpoints the attempts kept. The epoch comes from Tune's rows
    (checkpoint_dir_name), else from the checkpoint itself; an attempt's epochs after the one the next attempt
    continued from were run again there (as the history report reads), so its checkpoints of them are left out."""
    from ..engine import checkpoint
    from ..tuning import experiment

    rows = [[r for r in experiment.result_rows(None, str(d / "result.json")) if _num(r.get("epoch")) is not None]
            for d, _ in attempts]
    # where each attempt really continued from: its record's epoch, or earlier when its first row says so (a
    # resume that fell back to an older checkpoint)
    starts = []
    for k, (_, start) in enumerate(attempts):
        first = int(rows[k][0]["epoch"]) if k and rows[k] else None
        starts.append(start if first is None else min(start, first - 1))
    out: dict[int, Path] = {}
    for k, (d, _) in enumerate(attempts):
        until = starts[k + 1] if k + 1 < len(attempts) else math.inf
        names = {r["checkpoint_dir_name"]: int(r["epoch"]) for r in rows[k]
                 if isinstance(r.get("checkpoint_dir_name"), str)}
        for ck in checkpoints(_inside(d, root), root):
            epoch = names.get(ck.name)
            if epoch is None:
                try:
                    epoch = int(checkpoint.load(ck)["epoch"])
                except (SSLRayError, KeyError, TypeError, ValueError):
                    continue
            if epoch <= until:
                out[epoch] = ck
    return out


def _history(exp: Path, tid: str, attempts: list[tuple[Path, int]]) -> list[dict[str, Any]]:
    """The trial's per-epoch rows as report reads them (history.parquet), else merged from its attempts' rows."""
    from ..tuning import experiment
    from ..tuning.results import HISTORY, read_histories

    if (exp / HISTORY).is_file():
        try:
            rows = read_histories(str(exp)).get(tid)
        except (OSError, ValueError, KeyError):
            rows = None
        if rows:
            return rows
    merged: dict[int, dict[str, Any]] = {}
    for d, start in attempts:
        merged = {e: r for e, r in merged.items() if e <= start}
        for r in experiment.result_rows(None, str(d / "result.json")):
            if _num(r.get("epoch")) is not None:
                merged[int(r["epoch"])] = r
    return [merged[e] for e in sorted(merged)]


def reported(exp: Path, tid: str, summary: dict[str, Any]) -> dict[str, Any] | None:
    """What `report` shows for trial `tid`: {epoch, val_error, test_error} at its best validation epoch."""
    from ..tuning.results import RESULTS, load_experiment

    if (exp / RESULTS).is_file():
        _, rows = load_experiment(str(exp))
        row = next((r for r in rows if r.get("trial_id") == tid), None)
        if row is not None and isinstance(row.get("epoch_of_best_val"), int):
            return {"epoch": row["epoch_of_best_val"], "val_error": _num(row.get("best_val_error")),
                    "test_error": _num(row.get("test_error_at_best_val"))}
    best = summary.get("best") or {}
    if best.get("trial_id") == tid and isinstance(best.get("epochs"), int):
        return {"epoch": best["epochs"], "val_error": _num(best.get("val_error")),
                "test_error": _num(best.get("test_error"))}
    return None


def pick(kept: dict[int, Path], history: list[dict[str, Any]], rep: dict[str, Any] | None) -> tuple[int, Path]:
    """(epoch, checkpoint) to ship: the reported epoch's when kept; else the kept one of lowest validation
    error, the first of equals as report counts (the last kept one when the history has no validation errors)."""
    if rep is not None and rep.get("epoch") in kept:
        return rep["epoch"], kept[rep["epoch"]]
    val = {int(h["epoch"]): h["val_error"] for h in history
           if _num(h.get("epoch")) is not None and _num(h.get("val_error")) is not None
           and math.isfinite(h["val_error"])}
    scored = [e for e in kept if e in val]
    epoch = min(scored, key=lambda e: (val[e], e)) if scored else max(kept)
    return epoch, kept[epoch]


def tune_note(epoch: int, at: dict[str, Any], rep: dict[str, Any] | None, kept: list[int]) -> str | None:
    """Both figures, when the shipped epoch is not the one report shows."""
    if rep is None or rep.get("epoch") == epoch:
        return None
    return (f"report shows epoch {rep.get('epoch')} (validation error {_pct(rep.get('val_error'))}, test error "
            f"{_pct(rep.get('test_error'))}), whose checkpoint was not kept (kept: epochs "
            f"{', '.join(map(str, sorted(kept)))}); exported epoch {epoch} (validation error "
            f"{_pct(at.get('val_error'))}, test error {_pct(at.get('test_error'))})")


# ---- a train run ---------------------------------------------------------------------------------------------
def train_figures(res: dict[str, Any], epoch: int) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(errors at the shipped epoch, the run's best-validation figures, note) of a train run's result.json:
    the last epoch's errors are result.json's val_error/test_error (when its last epoch is the checkpoint's)."""
    metrics = res.get("metrics")
    last = _num((metrics if isinstance(metrics, dict) else {}).get("epoch", res.get("epochs")))
    at = ({"val_error": _num(res.get("val_error")), "test_error": _num(res.get("test_error"))}
          if last is not None and int(last) == epoch else {})
    best = {"epoch": None, "val_error": _num(res.get("best_val_error")),
            "test_error": _num(res.get("test_error_at_best_val"))}
    same = (at and best["val_error"] == at.get("val_error") and best["test_error"] == at.get("test_error"))
    note = None if same or best["val_error"] is None else (
        f"a train run keeps only its last checkpoint: exported epoch {epoch} (validation error "
        f"{_pct(at.get('val_error'))}, test error {_pct(at.get('test_error'))}); the run's best validation error "
        f"{_pct(best['val_error'])} was reached earlier (test error there {_pct(best['test_error'])})")
    return at, best, note
