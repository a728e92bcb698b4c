"""Figures of a finished experiment (`ssl-ray report EXP --plot`), drawn from its own files with matplotlib's Agg
renderer (no display, no pyplot state, no Ray): results.parquet, history.parquet, summary.json and
ssl_ray_space.json (the searched distributions and the scheduler).

write_figures(EXP, OUT) writes into OUT (default EXP/figures):
- learning_curves.png: every trial's validation error per epoch (history.parquet); the best trial (summary.json's,
  by validation error) drawn thick in red; a trial the scheduler stopped ends early with an x; the scheduler's
  rungs as dotted vertical lines.
- hyperparameters.png: each trial's best validation error against each searched hyperparameter, one panel each;
  a log axis for the log-searched ones (loguniform, qloguniform), one column per value for choice/grid; the
  axis spans the searched range; colour = epochs the trial ran (a trial stopped at the first rung has had
  less time); the best trial ringed in red.
- rungs.png: which trials each rung kept: one bar per trial, its length the epochs it ran, sorted; a dotted line
  per rung (ASHA's or SHA's decision epochs, plan.asha_rungs, as Tune uses them), labelled with how many trials
  reached it and how many went past it.
- importance.png: how much each searched hyperparameter explains the best validation error across trials:
  Optuna's fANOVA (FanovaImportanceEvaluator, seeded, importances summing to 1) when optuna is installed (the
  `optuna` and `test` extras), else the permutation importance of a scikit-learn random forest (the mean loss
  of R^2 when one hyperparameter's values are shuffled). The figure's title names the one used. Fed with every
  trial that has a finite best validation error, the ones ASHA stopped included (they are most of a search;
  their error is at fewer epochs, which is what ASHA judged them on). A log-searched hyperparameter enters as
  its logarithm: fANOVA averages over each range on the scale it is given, and optuna does not take logs (on
  tests/test_figures.py's search lr's share was 0.21 on the plain scale, 0.63 on the log scale; a known 0.75 /
  0.25 split is recovered on the log scale, 0.13 / 0.87 on the plain one). Skipped, with one line, when fewer
  than 3 trials have one, or all the same.
- index.html: the PNGs (embedded) with what each shows and the trials table (`report --trials`'s columns), one
  file to open or send.
Each figure is drawn by a draw_* function (a matplotlib Figure, for tests and notebooks) from the data functions
curves, rung_counts and importance; write_figures saves them.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..data import files as F
from ..errors import SSLRayError
from . import results as R

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
        return {"asha": "ASHA", "sha": "SHA", "bohb": "BOHB"}.get(self.scheduler, "the scheduler")


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _epochs(row: dict[str, Any]) -> int:
    return int(row["epochs"]) if _finite(row.get("epochs")) else 0


def _positive_int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def load(experiment_dir: str | Path) -> Experiment:
    """The experiment at `experiment_dir` (a local folder), read and checked as `ssl-ray report` reads it."""
    from .plan import asha_rungs

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
    name = "bohb" if doc.get("searcher") == "bohb" else str(sched.get("name", "asha"))
    max_e, grace, rf = (_positive_int(sched.get(k)) for k in ("max_epochs", "grace_epochs", "reduction_factor"))
    rungs = asha_rungs(max_e, grace, rf) if name in ("asha", "sha") and max_e and grace and rf and rf > 1 else []
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


# ---- drawing ---------------------------------------------------------------------------------------------
def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig, path: Path) -> Path:
    F.write_output(path, lambda tmp: fig.savefig(tmp, format="png"), "--plot-dir")
    return path


def _error_axis(ax, values: list[float], label: str = "validation error (%)") -> None:
    """A log axis when the errors span more than a factor 8 (a search's 2 % and 80 % on one readable axis),
    ticks at 1, 2, 5 x 10^k written as plain numbers."""
    v = [x for x in values if _finite(x)]
    ax.set_ylabel(label)
    if v and min(v) > 0 and max(v) / min(v) > 8:
        ax.set_yscale("log")
        _plain_log_ticks(ax.yaxis, max(v) / min(v))
    ax.grid(True, which="major", alpha=0.3)


def _plain_log_ticks(axis, span: float) -> None:
    """Ticks of a log axis written as plain numbers (0.002, 5, 20): at 1, 2, 5 x 10^k over more than two decades,
    more per decade over fewer (a search's best 2.5 % gets a tick near it)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = ((1.0, 2.0, 5.0) if span > 100 else (1.0, 2.0, 3.0, 5.0) if span > 12 else (1.0, 2.0, 3.0, 5.0, 7.0)
            if span > 4 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0))
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _config_text(exp: Experiment, row: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(exp.value(row, k))}" for k in exp.searched)


def _row(exp: Experiment, trial_id: str | None) -> dict[str, Any] | None:
    return next((r for r in exp.rows if r["trial_id"] == trial_id), None)


def _status_label(exp: Experiment, status: str) -> str:
    return {"TERMINATED": f"ran to the end ({exp.max_epochs} epochs)" if exp.max_epochs else "ran to the end",
            "STOPPED": f"stopped by {exp.stopped_word}", "ERROR": "failed",
            "INTERRUPTED": "interrupted (unfinished)"}.get(status, status.lower())


def _rung_lines(exp: Experiment, ax, label: bool = True) -> None:
    for i, m in enumerate(exp.rungs):
        ax.axvline(m, color="0.4", linestyle=":", linewidth=1, zorder=0,
                   label=f"{exp.stopped_word} rungs (epochs {', '.join(map(str, exp.rungs))})" if label and i == 0
                   else None)


def draw_curves(exp: Experiment) -> Figure:
    from matplotlib.ticker import MaxNLocator

    data = curves(exp)
    fig = _figure(8.5, 5.0)
    ax = fig.add_subplot()
    seen: set[str] = set()
    for r in sorted(exp.rows, key=lambda r: r["trial_id"] == exp.best):  # the best one drawn last, on top
        x, y = data[r["trial_id"]]
        if not x:
            continue
        status = r["status"]
        if r["trial_id"] == exp.best:
            ax.plot(x, y, color=BEST_COLOUR, linewidth=2.6, zorder=5, marker="o" if len(x) < 12 else None,
                    markersize=4, gid=r["trial_id"], label=f"best trial {r['trial_id']}: val {min(y):.2f} % at epoch "
                                        f"{r.get('epoch_of_best_val')} ({_config_text(exp, r)})")
            continue
        colour = STATUS_COLOUR.get(status, "tab:purple")
        label = _status_label(exp, status) if status not in seen else None
        seen.add(status)
        ax.plot(x, y, color=colour, linewidth=1.1, alpha=0.75, marker="o" if len(x) < 12 else None, markersize=2.5,
                label=label, gid=r["trial_id"])
        if status != "TERMINATED":  # where the trial ended early
            ax.plot(x[-1], y[-1], linestyle="none", marker="x" if status == "STOPPED" else "X", color=colour,
                    markersize=8, markeredgewidth=2)
    _rung_lines(exp, ax)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if exp.max_epochs:
        ax.set_xlim(0.5, exp.max_epochs + 0.5)
    _error_axis(ax, [v for _, ys in data.values() for v in ys])
    n_stopped = sum(r["status"] == "STOPPED" for r in exp.rows)
    ax.set_title(f"{exp.name}: validation error per epoch, {len(exp.rows)} trials, {n_stopped} stopped by "
                 f"{exp.stopped_word}", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below: never over a curve
    return fig


def _categorical_positions(values: list[Any], choices: list[Any]) -> tuple[list[float], list[Any]]:
    """x positions for a choice/grid hyperparameter: one column per value (in the space's order), the trials of
    a column spread a little so that they do not hide each other."""
    levels = list(choices) + sorted({v for v in values if v not in choices}, key=str)
    idx = [levels.index(v) for v in values]
    x = [0.0] * len(values)
    for level in set(idx):
        members = [i for i, j in enumerate(idx) if j == level]
        for n, i in enumerate(members):
            x[i] = level + (0.0 if len(members) == 1 else -0.18 + 0.36 * n / (len(members) - 1))
    return x, levels


def draw_hyperparameters(exp: Experiment) -> Figure:
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import MaxNLocator

    names = list(exp.searched)
    ncols = {0: 1, 1: 1, 2: 2, 4: 2}.get(len(names), 3)
    nrows = max(1, math.ceil(len(names) / ncols))
    fig = _figure(4.0 * ncols + 1.0, 3.4 * nrows + 0.6)
    rows = [r for r in exp.rows if _finite(r.get("best_val_error"))]
    y = [r["best_val_error"] for r in rows]
    top = max([_epochs(r) for r in exp.rows] + [exp.max_epochs or 1])
    norm, cmap = Normalize(vmin=0, vmax=top), "viridis"
    axes: list[Any] = []
    for i, k in enumerate(names):
        ax = fig.add_subplot(nrows, ncols, i + 1, sharey=axes[0] if axes else None)
        axes.append(ax)
        dist, args = exp.searched[k]
        vals = [exp.value(r, k) for r in rows]
        if dist in CATEGORICAL_DISTS or not all(_finite(v) for v in vals):
            x, levels = _categorical_positions(vals, args if dist in CATEGORICAL_DISTS else [])
            ax.set_xticks(range(len(levels)), [_short(v) for v in levels])
            ax.set_xlim(-0.6, len(levels) - 0.4)
        else:
            x = [float(v) for v in vals]
            lo_hi = [a for a in args[:2] if _finite(a)] if dist else []
            lo, hi = (lo_hi if len(lo_hi) == 2 and lo_hi[0] < lo_hi[1] else [min(x), max(x)])
            log = dist in LOG_DISTS and lo > 0
            if log:
                ax.set_xscale("log")
                _plain_log_ticks(ax.xaxis, hi / lo)
            if lo < hi:  # the searched range, so one sees where in it the trials landed
                pad = (hi / lo) ** 0.04 if log else None
                ax.set_xlim(*((lo / pad, hi * pad) if pad else (lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))))
        ax.scatter(x, y, c=[_epochs(r) for r in rows], cmap=cmap, norm=norm, s=36, edgecolors="0.2", linewidths=0.5,
                   zorder=3, gid=k)
        b = next((j for j, r in enumerate(rows) if r["trial_id"] == exp.best), None)
        if b is not None:
            ax.scatter([x[b]], [y[b]], s=170, facecolors="none", edgecolors=BEST_COLOUR, linewidths=2, zorder=4)
        ax.set_xlabel(f"{k}  ({dist}{args})" if dist else k, fontsize=9)
        _error_axis(ax, y, "best validation error (%)" if i % ncols == 0 else "")
    if not names:
        fig.add_subplot().text(0.5, 0.5, "nothing was searched", ha="center", va="center")
    else:
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label="epochs the trial ran", shrink=0.9)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    fig.suptitle(f"{exp.name}: each trial's best validation error against its searched hyperparameters"
                 + (" (PBT: the final values)" if exp.scheduler == "pbt" else "") + "; red ring: the best trial",
                 fontsize=10)
    return fig


def draw_rungs(exp: Experiment) -> Figure:
    from matplotlib.ticker import MaxNLocator

    order = sorted(exp.rows, key=lambda r: (-_epochs(r), r["best_val_error"] if _finite(r.get("best_val_error"))
                                            else math.inf))
    n = len(order)
    fig = _figure(8.5, min(14.0, 1.6 + 0.26 * n))
    ax = fig.add_subplot()
    seen: set[str] = set()
    for i, r in enumerate(order):
        best = r["trial_id"] == exp.best
        status = r["status"]
        label = "best trial" if best else (_status_label(exp, status) if status not in seen else None)
        if not best:
            seen.add(status)
        ax.barh(i, _epochs(r), color=BEST_COLOUR if best else STATUS_COLOUR.get(status, "tab:purple"), height=0.7,
                label=label, gid=r["trial_id"])
    ax.set_yticks(range(n), [f"{r['trial_id']}  {r['best_val_error']:.1f} %" if _finite(r.get("best_val_error"))
                             else r["trial_id"] for r in order], fontsize=7 if n <= 40 else 5)
    ax.invert_yaxis()
    ax.set_xlabel("epochs the trial ran")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if exp.max_epochs:
        ax.set_xlim(0, exp.max_epochs * 1.02)
    ax.set_ylabel("trial  (best validation error)")
    for m, reached, kept in rung_counts(exp):
        ax.axvline(m, color="0.2", linestyle=":", linewidth=1.2)
        ax.annotate(f"rung {m}: {reached} reached, {kept} kept", xy=(m, 0), xycoords=("data", "axes fraction"),
                    xytext=(3, 3), textcoords="offset points", rotation=90, fontsize=7, va="bottom", ha="left",
                    bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none", "pad": 1})
    if exp.rungs:
        title = (f"{exp.name}: which trials each {exp.stopped_word} rung kept (a bar past a dotted line: kept "
                 f"at that rung)")
    elif exp.scheduler == "bohb":
        title = f"{exp.name}: epochs each trial ran (BOHB's HyperBand brackets: rungs not drawn)"
    else:
        title = f"{exp.name}: epochs each trial ran (scheduler {exp.scheduler}: no rungs)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    return fig


def draw_importance(exp: Experiment, got: tuple[str, dict[str, float]]) -> Figure:
    method, imp = got
    names = sorted(imp, key=lambda k: imp[k])
    fig = _figure(7.0, 1.4 + 0.45 * len(names))
    ax = fig.add_subplot()
    ax.barh(range(len(names)), [imp[k] for k in names], color="tab:blue", height=0.6)
    ax.set_yticks(range(len(names)), names)
    for i, k in enumerate(names):
        ax.annotate(f"{imp[k]:.2f}", xy=(max(imp[k], 0), i), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=8)
    fanova = method.startswith("Optuna")
    ax.set_xlabel("share of the variance explained (fANOVA, sums to 1)" if fanova
                  else "mean loss of R^2 when the hyperparameter is shuffled")
    ax.set_xlim(0, max(1.0 if fanova else 0.0, max(imp.values(), default=0) * 1.15) or 1.0)
    ax.set_title(f"{exp.name}: importance for the best validation error\n{method}", fontsize=10)
    return fig


# ---- all of them -----------------------------------------------------------------------------------------
CAPTIONS = {
    "learning_curves.png": "Validation error per epoch of every trial (history.parquet). The best trial is thick "
                           "and red; a trial stopped early ends with an x; dotted lines are the rungs.",
    "hyperparameters.png": "Each trial's best validation error against each searched hyperparameter (log axis "
                           "for log-searched ones; the axis spans the searched range); colour: epochs run; red "
                           "ring: the best trial.",
    "rungs.png": "Epochs each trial ran, sorted; a bar that passes a dotted rung line was kept at that rung.",
    "importance.png": "How much each searched hyperparameter explains the best validation error across trials.",
}


def write_figures(experiment_dir: str | Path, out_dir: str | Path | None = None, *,
                  echo: Callable[[str], None] | None = None) -> list[Path]:
    """Draw the figures of the experiment at `experiment_dir` into `out_dir` (default EXP/figures), and
    index.html bundling them; return the files written. `echo` gets one line for a figure that is skipped."""
    exp = load(experiment_dir)
    out = F.output_folder(out_dir if out_dir is not None else exp.path / "figures", "--plot-dir")
    written = [_save(draw_curves(exp), out / "learning_curves.png"),
               _save(draw_hyperparameters(exp), out / "hyperparameters.png"), _save(draw_rungs(exp), out / "rungs.png")]
    got = importance(exp)
    if got is None:
        if echo:
            echo(f"importance.png not drawn: {_importance_input(exp)[1]}")
    else:
        written.append(_save(draw_importance(exp, got), out / "importance.png"))
    written.append(_write_html(exp, out / "index.html", written, got))
    return written


def _write_html(exp: Experiment, path: Path, pngs: list[Path], got) -> Path:
    rows = R.trial_table([str(exp.path)])
    keys = list(rows[0]) if rows else []
    table = ("<table><tr>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>"
             + "".join("<tr>" + "".join(f"<td>{html.escape('' if r[k] is None else R._fmt(r[k]))}</td>" for k in keys)
                       + "</tr>" for r in rows) + "</table>")
    best = _row(exp, exp.best)
    head = (f"best trial {best['trial_id']}: validation error {best['best_val_error']:.2f} % at epoch "
            f"{best['epoch_of_best_val']}, test error there {best['test_error_at_best_val']:.2f} % "
            f"({html.escape(_config_text(exp, best))})" if best and _finite(best.get("best_val_error"))
            and _finite(best.get("test_error_at_best_val")) else "no trial has a validation error")
    parts = [f"<h1>{html.escape(exp.name)}</h1><p>{len(exp.rows)} trials, scheduler {html.escape(exp.scheduler)}; "
             f"{head}</p>"]
    for p in pngs:
        caption = CAPTIONS[p.name] + (f" Method: {got[0]}." if p.name == "importance.png" and got else "")
        data = base64.b64encode(p.read_bytes()).decode()
        parts.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{p.name}\">"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append(f"<h2>Trials, by validation error</h2>{table}")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto} img{max-width:100%} "
             "table{border-collapse:collapse;font-size:12px} td,th{border:1px solid #ccc;padding:2px 6px}")
    doc = (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(exp.name)}</title>"
           f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    return F.write_output(path, doc, "--plot-dir")
