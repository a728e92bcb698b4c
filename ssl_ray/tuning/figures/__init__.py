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
from pathlib import Path
from typing import Callable

from ...data import files as F
from .. import results as R

from .data import (BEST_COLOUR, CATEGORICAL_DISTS, DPI, LOG_DISTS, SPACE_FILE, STATUS_COLOUR, Experiment,
                   _finite, _importance_input, curves, importance, load, rung_counts)
from .draw import _config_text, _row, _save, draw_curves, draw_hyperparameters, draw_importance, draw_rungs

__all__ = ["BEST_COLOUR", "CATEGORICAL_DISTS", "DPI", "LOG_DISTS", "SPACE_FILE", "STATUS_COLOUR", "Experiment",
           "curves", "draw_curves", "draw_hyperparameters", "draw_importance", "draw_rungs", "importance", "load",
           "rung_counts", "write_figures"]


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
