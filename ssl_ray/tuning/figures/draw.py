"""Drawing each figure (matplotlib's Agg renderer: no display, no pyplot state) from the data in data.py."""
from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...data import files as F

if TYPE_CHECKING:
    from matplotlib.figure import Figure

from .data import (BEST_COLOUR, CATEGORICAL_DISTS, DPI, LOG_DISTS, STATUS_COLOUR, Experiment, _epochs, _finite,
                   curves, rung_counts)


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
            config = textwrap.fill(f"({_config_text(exp, r)})", 60, break_long_words=False,
                                   break_on_hyphens=False)  # a configuration is wider than the figure
            ax.plot(x, y, color=BEST_COLOUR, linewidth=2.6, zorder=5, marker="o" if len(x) < 12 else None,
                    markersize=4, gid=r["trial_id"], label=f"best trial {r['trial_id']}: val {min(y):.2f} % at epoch "
                                        f"{r.get('epoch_of_best_val')}\n{config}")
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
                 + (f" ({exp.kind.final_configs})" if exp.kind.final_configs else "") + "; red ring: the best trial",
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
        title = (f"{exp.name}: which trials each {exp.stopped_word} rung kept\n(a bar past a dotted line: kept "
                 f"at that rung)")
    elif exp.kind.rungs_not_drawn:
        title = f"{exp.name}: epochs each trial ran ({exp.kind.rungs_not_drawn}: rungs not drawn)"
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
