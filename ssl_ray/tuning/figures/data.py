"""The data of the figures: an experiment read from its files, and what each figure shows (curves, rung counts,
importance). No drawing here."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ...data import files as F
from ...errors import SSLRayError
from .. import results as R

SPACE_FILE = "ssl_ray_space.json"  # experiment.SPACE_FILE (experiment.py is the driver's module; not imported here)
LOG_DISTS = ("loguniform", "qloguniform")
CATEGORICAL_DISTS = ("choice", "grid")
STATUS_COLOUR = {"TERMINATED": "tab:blue", "STOPPED": "0.55", "ERROR": "black", "INTERRUPTED": "tab:orange"}
BEST_COLOUR = "tab:red"
DPI = 110


@dataclass
class Experiment:
    """What the figures are drawn from, read from one experiment folder."""

    path: Path
    name: str
    rows: list[dict[str, Any]]                  # results.parquet, one per trial
    histories: dict[str, list[dict[str, Any]]]  # history.parquet by trial id, in epoch order
    searched: dict[str, tuple[str | None, list[Any]]]  # name -> (distribution, its arguments); None: not known
    scheduler: str                              # asha, sha, fifo, pbt, or bohb (the searcher's own HyperBand)
    max_epochs: int | None
    rungs: list[int]                            # the epochs at which the scheduler decided
    best: str | None                            # the best trial's id

    def value(self, row: dict[str, Any], name: str) -> Any:
        return row.get(f"config/{name}")

    @property
    def stopped_word(self) -> str:
        return self.kind.label or "the scheduler"

    @property
    def kind(self) -> Any:
        """The scheduler's Kind (schedulers/); a name this ssl-ray does not know: the base Kind (no label, no
        rungs)."""
        from .. import schedulers
        from ..schedulers.base import Kind

        try:
            return schedulers.get(self.scheduler)
        except Exception:  # noqa: BLE001 - an experiment from another ssl-ray: drawn without rungs
            return Kind()


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _epochs(row: dict[str, Any]) -> int:
    return int(row["epochs"]) if _finite(row.get("epochs")) else 0


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def load(experiment_dir: str | Path) -> Experiment:
    """The experiment at `experiment_dir` (a local folder), read and checked as `ssl-ray report` reads it."""
    from .. import schedulers

    if "://" in str(experiment_dir):
        raise SSLRayError(f"--plot reads a local experiment folder, not {experiment_dir}: copy it here first")
    p = Path(experiment_dir)
    summary, rows = R.load_experiment(str(p))
    if not (p / R.HISTORY).exists():
        raise SSLRayError(f"{p} has no {R.HISTORY}: `ssl-ray tune ... --resume` rewrites it from the trials' files")
    F.regular_file(p / R.HISTORY, "history table")
    try:
        histories = R.read_histories(str(p))
    except (OSError, ValueError, KeyError, TypeError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise SSLRayError(f"{p / R.HISTORY} is damaged ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
                          f"{R._REPAIR}") from None
    raw = F.read_json(p / SPACE_FILE, "search space", damaged=R._REPAIR) if (p / SPACE_FILE).exists() else {}
    doc: dict[str, Any] = raw if isinstance(raw, dict) else {}
    space: dict[str, Any] = doc["search"] if isinstance(doc.get("search"), dict) else {}
    searched: dict[str, tuple[str | None, list[Any]]] = {}
    for k in summary.get("searched") or list(space):
        d = space.get(k)
        if isinstance(d, dict) and len(d) == 1 and isinstance(next(iter(d.values())), list):
            dist, args = next(iter(d.items()))
            searched[k] = (str(dist), list(args))
        else:
            searched[k] = (None, [])
    sched: dict[str, Any] = next((d for d in (doc.get("scheduler"), summary.get("scheduler")) if isinstance(d, dict)),
                                 {})
    brought = schedulers.brought_by(doc.get("searcher"))
    name = brought.name if brought else str(sched.get("name", schedulers.DEFAULT))
    max_e, grace, rf = (_positive_int(sched.get(k)) for k in ("max_epochs", "grace_epochs", "reduction_factor"))
    try:
        kind = schedulers.get(name)
    except Exception:  # noqa: BLE001 - a name this ssl-ray does not know: no rungs
        kind = None
    settings = SimpleNamespace(max_epochs=max_e, grace_epochs=grace, reduction_factor=rf)
    rungs = kind.rungs(settings) if kind is not None and max_e and grace and rf and rf > 1 else []
    best = (summary.get("best") or {}).get("trial_id")
    ids = {r["trial_id"] for r in rows}
    if best not in ids:
        ok = [r for r in rows if _finite(r.get("best_val_error"))]
        best = min(ok, key=lambda r: r["best_val_error"])["trial_id"] if ok else None
    return Experiment(path=p, name=p.resolve().name, rows=rows, histories=histories, searched=searched,
                      scheduler=name, max_epochs=max_e, rungs=rungs, best=best)


# ---- the data of each figure (what the tests compare with the files) --------------------------------------
def curves(exp: Experiment) -> dict[str, tuple[list[int], list[float]]]:
    """Each trial's (epochs, validation errors) as history.parquet holds them, epochs without one left out."""
    out = {}
    for r in exp.rows:
        hist = [h for h in exp.histories.get(r["trial_id"], []) if _finite(h.get("val_error"))]
        out[r["trial_id"]] = ([int(h["epoch"]) for h in hist], [float(h["val_error"]) for h in hist])
    return out


def rung_counts(exp: Experiment) -> list[tuple[int, int, int]]:
    """(rung epoch, trials that reached it, trials that went past it) per rung: a trial that ran more epochs
    than a rung was kept there."""
    return [(m, sum(_epochs(r) >= m for r in exp.rows), sum(_epochs(r) > m for r in exp.rows)) for m in exp.rungs]


def _importance_input(exp: Experiment) -> tuple[list[dict[str, Any]], str | None]:
    """The trials importance is computed from, and why there is none (None: there is)."""
    rows = [r for r in exp.rows if _finite(r.get("best_val_error"))
            and all(exp.value(r, k) is not None for k in exp.searched)]
    if not exp.searched:
        return rows, "nothing was searched"
    if len(rows) < 3:
        return rows, f"it needs at least 3 trials with a validation error ({len(rows)} here)"
    if len({r["best_val_error"] for r in rows}) == 1:
        return rows, f"every trial has the same validation error ({rows[0]['best_val_error']:g} %)"
    return rows, None


def importance(exp: Experiment) -> tuple[str, dict[str, float]] | None:
    """(method, {hyperparameter: importance}) for the best validation error, or None when there is nothing to
    explain (_importance_input says why). Optuna's fANOVA where optuna is installed, else a random forest's
    permutation importance (module docstring); log-searched hyperparameters enter as their logarithm."""
    rows, why = _importance_input(exp)
    if why:
        return None
    names = list(exp.searched)
    try:
        import optuna  # noqa: F401
    except ImportError:
        return ("random-forest permutation importance (optuna not installed: `pip install optuna` for fANOVA)",
                _forest_importance(exp, rows, names))
    return f"Optuna fANOVA, {len(rows)} trials", _fanova_importance(exp, rows, names)


def _optuna_distribution(dist: str | None, args: list[Any], seen: list[Any]):
    """Optuna's distribution for a searched hyperparameter, wide enough to hold every value the trials saw."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    numbers = all(_finite(v) for v in seen)
    if dist in CATEGORICAL_DISTS or not numbers:
        return CategoricalDistribution(sorted(set(seen), key=lambda v: (str(type(v)), v)))
    bounds = [a for a in args[:2] if _finite(a)]
    lo, hi = min(seen + bounds), max(seen + bounds)
    if all(isinstance(v, int) for v in seen) and dist in ("randint", "qrandint", None):
        return IntDistribution(int(lo), int(hi))
    return FloatDistribution(float(lo), float(hi))


def _is_log(exp: Experiment, name: str) -> bool:
    dist, args = exp.searched[name]
    return dist in LOG_DISTS and all(_finite(a) and a > 0 for a in args[:2])


def _scale(exp: Experiment, name: str, v: Any) -> Any:
    return math.log(v) if _is_log(exp, name) and _finite(v) and v > 0 else v


def _scaled_space(exp: Experiment, name: str) -> tuple[str | None, list[Any]]:
    dist, args = exp.searched[name]
    return ("uniform", [math.log(a) for a in args[:2]]) if _is_log(exp, name) else (dist, args)


def _fanova_importance(exp: Experiment, rows: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    # fANOVA averages over each hyperparameter's range on the scale it is given (optuna does not take logs): a
    # log-searched one enters as its logarithm, the scale it was drawn on (lr in 1e-4..0.3 on a plain scale would
    # be judged mostly over 0.03..0.3, where no log-uniform draw goes)
    params = [{k: _scale(exp, k, exp.value(r, k)) for k in names} for r in rows]
    dists = {k: _optuna_distribution(*_scaled_space(exp, k), [p[k] for p in params]) for k in names}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # "A new study created in memory" is not news here
    try:
        study = optuna.create_study(direction="minimize")
        study.add_trials([optuna.trial.create_trial(params=p, distributions=dists, value=float(r["best_val_error"]))
                          for p, r in zip(params, rows)])
        got = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0), normalize=True)
    finally:
        optuna.logging.set_verbosity(verbosity)
    return {k: float(got.get(k, 0.0)) for k in names}


def _forest_importance(exp: Experiment, rows: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    import numpy as np
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import permutation_importance

    cols: list[list[float]] = []
    for k in names:
        dist, _ = exp.searched[k]
        vals = [exp.value(r, k) for r in rows]
        if dist in CATEGORICAL_DISTS or not all(_finite(v) for v in vals):
            levels = sorted({str(v) for v in vals})
            cols.append([float(levels.index(str(v))) for v in vals])
        else:
            cols.append([float(_scale(exp, k, v)) for v in vals])
    x = np.array(cols, dtype=float).T
    y = np.array([r["best_val_error"] for r in rows], dtype=float)
    forest = RandomForestRegressor(n_estimators=200, random_state=0).fit(x, y)
    got = permutation_importance(forest, x, y, n_repeats=20, random_state=0)
    return {k: float(v) for k, v in zip(names, got.importances_mean)}
