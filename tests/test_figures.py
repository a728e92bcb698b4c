"""`ssl-ray report EXP --plot` (tuning/figures.py) and `report --trials` (results.trial_table) on a real search:
`ssl-ray tune` run once for the module (a local Ray instance: supervised on digits, 8 trials of 4 short epochs,
ASHA with rungs at epochs 1 and 2; ~20 s), then every figure's data compared with the experiment's own files.
One trial at a time (--max-concurrent 1): ASHA's decisions depend on the order in which trials reach a rung, and
the trials' errors are deterministic, so it stops the same trials on every run (4 of 8 here); two at a time (2
CPUs), the order follows the machine's timing, and once it stopped none (CI of 2026-12-03; with these errors
about 1 arrival order in 200 passes rung 1 without a stop)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ssl_ray.errors import SSLRayError
from ssl_ray.tuning import figures as G
from ssl_ray.tuning import results as R

SPACE = """\
method: supervised
dataset: {name: digits, labels: 30}
fixed: {steps_per_epoch: 4}
search:
  lr: {loguniform: [1.0e-4, 3.0e-1]}
  weight_decay: {uniform: [0.0, 1.0e-3]}
  batch_size: {choice: [16, 32]}
scheduler: {name: asha, max_epochs: 4, grace_epochs: 1, reduction_factor: 2}
num_samples: 8
"""
PNGS = ["learning_curves.png", "hyperparameters.png", "rungs.png", "importance.png"]


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A finished experiment made by `ssl-ray tune` (its Python entry, in a child process as a user runs it)."""
    root = tmp_path_factory.mktemp("figures")
    (root / "space.yaml").write_text(SPACE)
    env = {**os.environ, "SSL_RAY_CACHE": str(root / "cache")}
    r = subprocess.run([sys.executable, "-m", "ssl_ray.cli", "tune", "supervised", "--space", str(root / "space.yaml"),
                        "--storage", str(root / "runs"), "--name", "small", "--json", "--seed", "1", "--quiet",
                        "--max-concurrent", "1"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    exp = Path(summary["experiment"])
    assert summary["num_trials"] == 8 and summary["num_errored"] == 0
    assert summary["num_stopped_early"] >= 1 and summary["num_completed"] >= 1  # ASHA stopped someone (4 here)
    progress = [line for line in r.stderr.splitlines() if line.startswith("[tune ")]  # tuning/progress.py's line
    assert progress and ("trials 8/8 done (%d stopped early, 0 errored), 0 running" % summary["num_stopped_early"]
                         in progress[-1]), progress
    assert "Number of trials:" not in r.stderr  # not Ray's status table
    return exp, summary


@pytest.fixture(scope="module")
def drawn(search, tmp_path_factory):
    exp, _ = search
    out = tmp_path_factory.mktemp("drawn")
    lines: list[str] = []
    return G.write_figures(exp, out, echo=lines.append), out, lines


@pytest.mark.ray
def test_every_figure_is_a_png_of_sane_size(drawn):
    from PIL import Image

    paths, out, lines = drawn
    assert [p.name for p in paths] == PNGS + ["index.html"] and lines == []
    for name in PNGS:
        with Image.open(out / name) as im:
            assert im.format == "PNG"
            w, h = im.size
            assert 500 <= w <= 2000 and 250 <= h <= 1600, (name, im.size)
            colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
            assert colours is not None and len(colours) > 50  # drawn on, not a blank canvas
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 4 and "Optuna fANOVA" in page


@pytest.mark.ray
def test_learning_curves_are_history_parquet(search):
    exp_dir, summary = search
    exp = G.load(exp_dir)
    hist = pq.read_table(exp_dir / "history.parquet").to_pylist()
    rows = pq.read_table(exp_dir / "results.parquet").to_pylist()
    data = G.curves(exp)
    assert set(data) == {r["trial_id"] for r in rows}
    for r in rows:
        mine = sorted((h["epoch"], h["val_error"]) for h in hist if h["trial_id"] == r["trial_id"])
        assert data[r["trial_id"]] == ([e for e, _ in mine], [v for _, v in mine])
        assert len(mine) == r["epochs"] and (r["epochs"] < 4) == (r["status"] == "STOPPED")  # stopped: shorter
    # the drawn lines are those values; the best trial (summary.json's) is the thick red one
    fig = G.draw_curves(exp)
    lines = {ln.get_gid(): ln for ln in fig.axes[0].get_lines() if ln.get_gid()}
    assert set(lines) == set(data)
    for tid, (x, y) in data.items():
        assert list(lines[tid].get_xdata()) == x and list(lines[tid].get_ydata()) == y
    best = summary["best"]["trial_id"]
    assert exp.best == best and lines[best].get_color() == G.BEST_COLOUR
    assert lines[best].get_linewidth() > max(ln.get_linewidth() for t, ln in lines.items() if t != best)
    assert min(data[best][1]) == pytest.approx(summary["best"]["val_error"])


def _outside(fig) -> list[str]:
    """The legends and texts of `fig` that reach beyond its edges once drawn (a label cut off in the PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    r = canvas.get_renderer()
    w, h = fig.bbox.width, fig.bbox.height
    items = [lg for ax in fig.axes for lg in [ax.get_legend()] if lg] + list(fig.legends)
    items += [t for ax in fig.axes for t in [ax.title, ax.xaxis.label, ax.yaxis.label] if t.get_text()]
    out = []
    for it in items:
        b = it.get_window_extent(r)
        if b.x0 < -1 or b.y0 < -1 or b.x1 > w + 1 or b.y1 > h + 1:
            out.append(f"{type(it).__name__} {b.x0:.0f}..{b.x1:.0f} x {b.y0:.0f}..{b.y1:.0f} in {w:.0f} x {h:.0f}")
    return out


@pytest.mark.ray
def test_legends_and_titles_fit_in_the_picture(search):
    """The curves' legend names the best trial's whole configuration, and an experiment's default name is
    METHOD-DATASET-DATE-TIME: with the main job's five searched hyperparameters the legend ran off the PNG's right
    edge, and so did the rungs' title. Here the fixture's experiment under a default-length name, with its three
    searched hyperparameters and then with four more."""
    exp_dir, _ = search
    exp = G.load(exp_dir)
    exp.name = "i2gan-digits-20261203-115658"
    for draw in (G.draw_curves, G.draw_rungs, G.draw_hyperparameters):
        assert _outside(draw(exp)) == [], draw.__name__
    exp.searched = dict(exp.searched) | {f"hyperparameter_{i}": ("uniform", [0.0, 1.0]) for i in range(4)}
    for r in exp.rows:
        r.update({f"config/hyperparameter_{i}": 0.123456789 for i in range(4)})
    for draw in (G.draw_curves, G.draw_rungs, G.draw_hyperparameters):
        assert _outside(draw(exp)) == [], draw.__name__


@pytest.mark.ray
def test_hyperparameter_panels_use_the_space_axes_and_the_results(search):
    exp_dir, _ = search
    exp = G.load(exp_dir)
    assert exp.searched == {"lr": ("loguniform", [1e-4, 0.3]), "weight_decay": ("uniform", [0.0, 1e-3]),
                            "batch_size": ("choice", [16, 32])}
    rows = [r for r in pq.read_table(exp_dir / "results.parquet").to_pylist() if math.isfinite(r["best_val_error"])]
    fig = G.draw_hyperparameters(exp)
    panels = {c.get_gid(): (ax, c) for ax in fig.axes for c in ax.collections if c.get_gid()}
    assert set(panels) == {"lr", "weight_decay", "batch_size"}
    for k, scale in (("lr", "log"), ("weight_decay", "linear"), ("batch_size", "linear")):
        ax, points = panels[k]
        assert ax.get_xscale() == scale
        xy = points.get_offsets()
        assert list(xy[:, 1]) == [r["best_val_error"] for r in rows]
        if k != "batch_size":
            assert list(xy[:, 0]) == pytest.approx([r[f"config/{k}"] for r in rows], rel=1e-12)
    lo, hi = panels["lr"][0].get_xlim()
    assert lo < 1e-4 and 0.3 < hi < 0.5  # the searched range, a little margin
    ax, points = panels["batch_size"]  # one column per choice, the trials spread within +-0.2 of it
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "32"]
    for (x, _), r in zip(points.get_offsets(), rows):
        assert abs(x - [16, 32].index(r["config/batch_size"])) <= 0.2


@pytest.mark.ray
def test_rungs_are_ashas_and_count_the_trials_each_kept(search):
    exp_dir, _ = search
    exp = G.load(exp_dir)
    rows = pq.read_table(exp_dir / "results.parquet").to_pylist()
    assert exp.rungs == [1, 2] and exp.scheduler == "asha"
    counts = G.rung_counts(exp)
    assert counts == [(m, sum(r["epochs"] >= m for r in rows), sum(r["epochs"] > m for r in rows)) for m in (1, 2)]
    assert counts[0][1] == 8 and counts[0][2] < 8  # all reached the first rung, ASHA stopped some there or later
    for r in rows:  # ASHA stops a trial only at a rung
        assert r["status"] == "TERMINATED" or r["epochs"] in exp.rungs
    fig = G.draw_rungs(exp)
    bars = [p for p in fig.axes[0].patches if p.get_gid()]
    assert sorted((b.get_gid(), b.get_width()) for b in bars) == sorted((r["trial_id"], r["epochs"]) for r in rows)
    widths = [b.get_width() for b in sorted(bars, key=lambda b: b.get_y())]
    assert widths == sorted(widths, reverse=True)  # longest first
    assert [round(ln.get_xdata()[0]) for ln in fig.axes[0].get_lines()] == [1, 2]


@pytest.mark.ray
def test_importance_fanova_and_the_forest_fallback(search, monkeypatch):
    exp = G.load(search[0])
    method, imp = G.importance(exp)
    assert method == "Optuna fANOVA, 8 trials"
    assert set(imp) == {"lr", "weight_decay", "batch_size"}
    assert all(v >= 0 for v in imp.values()) and sum(imp.values()) == pytest.approx(1.0, abs=1e-6)
    assert G.importance(exp) == (method, imp)  # seeded
    monkeypatch.setitem(sys.modules, "optuna", None)  # as if optuna were not installed
    method, imp = G.importance(exp)
    assert method.startswith("random-forest permutation importance (optuna not installed")
    assert set(imp) == {"lr", "weight_decay", "batch_size"} and all(math.isfinite(v) for v in imp.values())


def test_importance_recovers_known_shares_on_the_searched_scale(tmp_path, monkeypatch):
    """40 trials whose error is 20 x [lr < 1e-3] + 20 x weight_decay / 1e-3 (+10), lr log-uniform in 1e-5..0.1,
    batch_size without effect. On lr's searched (log) scale the step splits the range in half: variance 100
    against weight_decay's 400 / 12, so fANOVA's shares are 0.75 and 0.25. (Fed on a plain scale, as optuna
    takes a float, lr's step would sit at 1 % of its range and get ~0.13.)"""
    import random

    rng = random.Random(0)
    rows, hist = [], []
    for i in range(40):
        lr, wd, bs = 10 ** rng.uniform(-5, -1), rng.uniform(0, 1e-3), rng.choice([16, 32])
        err = 10 + 20 * (lr < 1e-3) + 20 * wd / 1e-3
        rows.append({"trial_id": f"t{i}", "status": "TERMINATED", "stopped_early": False, "epochs": 1,
                     "best_val_error": err, "config/lr": lr, "config/weight_decay": wd, "config/batch_size": bs})
        hist.append({"trial_id": f"t{i}", "epoch": 1, "val_error": err})
    R.write_tables(str(tmp_path), rows, hist)
    R.write_summary(str(tmp_path), {"searched": ["lr", "weight_decay", "batch_size"],
                                    "scheduler": {"name": "fifo", "max_epochs": 1}})
    space = {"lr": {"loguniform": [1e-5, 0.1]}, "weight_decay": {"uniform": [0.0, 1e-3]},
             "batch_size": {"choice": [16, 32]}}
    (tmp_path / "ssl_ray_space.json").write_text(json.dumps({"search": space}))
    method, imp = G.importance(G.load(tmp_path))
    assert method == "Optuna fANOVA, 40 trials"
    assert imp["lr"] == pytest.approx(0.75, abs=0.08) and imp["weight_decay"] == pytest.approx(0.25, abs=0.08)
    assert 0 <= imp["batch_size"] < 0.02
    monkeypatch.setitem(sys.modules, "optuna", None)
    exp = G.load(tmp_path)
    _, imp = G.importance(exp)
    assert sorted(imp, key=lambda k: -imp[k]) == ["lr", "weight_decay", "batch_size"]
    assert abs(imp["batch_size"]) < 0.02
    for r in exp.rows:  # nothing to explain (fANOVA would raise on zero variance)
        r["best_val_error"] = 50.0
    assert G.importance(exp) is None
    assert G._importance_input(exp)[1] == "every trial has the same validation error (50 %)"


@pytest.mark.ray
def test_report_trials_table_is_the_searched_columns_by_validation_error(search):
    exp_dir, _ = search
    rows = pq.read_table(exp_dir / "results.parquet").to_pylist()
    table = R.trial_table([str(exp_dir)])
    assert list(table[0]) == list(R.TRIAL_COLUMNS) + ["lr", "weight_decay", "batch_size"]
    vals = [t["best_val_error"] for t in table]
    assert vals == sorted(vals) and len(table) == 8
    by_id = {r["trial_id"]: r for r in rows}
    for t in table:
        assert t["experiment"] == "small" and t["lr"] == by_id[t["trial_id"]]["config/lr"]
    every = R.trial_table([str(exp_dir)], all_columns=True)
    assert [t["trial_id"] for t in every] == [t["trial_id"] for t in table]
    assert set(every[0]) == {"experiment", *rows[0]}  # every column of results.parquet (34 for a method like i2gan)


def test_no_space_file_fifo_and_too_few_trials(tmp_path):
    """An experiment without ssl_ray_space.json (axes guessed from the values), FIFO (no rungs), 2 trials."""
    R.write_tables(str(tmp_path), [
        {"trial_id": "a", "status": "TERMINATED", "stopped_early": False, "epochs": 2, "best_val_error": 10.0,
         "test_error_at_best_val": 11.0, "epoch_of_best_val": 2, "config/lr": 0.01, "config/arch": "mlp"},
        {"trial_id": "b", "status": "ERROR", "stopped_early": False, "epochs": 1, "best_val_error": 30.0,
         "error": "DivergenceError: loss is nan", "test_error_at_best_val": 31.0, "epoch_of_best_val": 1,
         "config/lr": 0.1, "config/arch": "cnn"}],
        [{"trial_id": "a", "epoch": 1, "val_error": 20.0}, {"trial_id": "a", "epoch": 2, "val_error": 10.0},
         {"trial_id": "b", "epoch": 1, "val_error": 30.0}])
    R.write_summary(str(tmp_path), {"searched": ["lr", "arch"], "best": {"trial_id": "a"},
                                    "scheduler": {"name": "fifo", "max_epochs": 2}})
    exp = G.load(tmp_path)
    assert exp.searched == {"lr": (None, []), "arch": (None, [])} and exp.rungs == [] and exp.best == "a"
    assert G.importance(exp) is None
    lines: list[str] = []
    paths = G.write_figures(tmp_path, echo=lines.append)
    assert [p.name for p in paths] == ["learning_curves.png", "hyperparameters.png", "rungs.png", "index.html"]
    assert all(p.parent == tmp_path / "figures" for p in paths)
    assert lines == ["importance.png not drawn: it needs at least 3 trials with a validation error (2 here)"]
    assert "no rungs" in G.draw_rungs(exp).axes[0].get_title()
    table = R.trial_table([str(tmp_path)])
    assert [t["trial_id"] for t in table] == ["a", "b"] and table[1]["error"] == "DivergenceError: loss is nan"
    (tmp_path / "history.parquet").unlink()
    with pytest.raises(SSLRayError, match="has no history.parquet"):
        G.load(tmp_path)
    with pytest.raises(SSLRayError, match="reads a local experiment folder"):
        G.load("s3://bucket/exp")
    with pytest.raises(SSLRayError, match="is not a finished ssl-ray experiment"):
        G.load(tmp_path / "nothing")


@pytest.mark.ray
def test_report_plot_writes_the_pngs_and_prints_their_paths(search, tmp_path):
    """`ssl-ray report EXP --plot [--plot-dir DIR]` through click, on the module's real search."""
    from click.testing import CliRunner

    from ssl_ray.cli import main

    exp_dir, _ = search
    out = tmp_path / "figs"
    r = CliRunner().invoke(main, ["report", str(exp_dir), "--trials", "--plot", "--plot-dir", str(out)])
    assert r.exit_code == 0, r.output
    printed = [line[len("figure: "):] for line in r.output.splitlines() if line.startswith("figure: ")]
    assert printed == [str(out / n) for n in PNGS + ["index.html"]]
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert (out / "index.html").read_text().startswith("<!doctype html>")
    table = [line for line in r.output.splitlines() if line.startswith("| small |")]
    assert len(table) == 8  # the trials table came first, as without --plot
    # the default folder is EXP/figures; with --format csv the paths go to stderr, stdout stays a CSV
    r = CliRunner().invoke(main, ["report", str(exp_dir), "--format", "csv", "--plot"])
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("experiment,") and "figure:" not in r.stdout
    assert f"figure: {exp_dir / 'figures' / 'rungs.png'}" in r.stderr
    assert (exp_dir / "figures" / "importance.png").read_bytes()[:4] == b"\x89PNG"
    r = CliRunner().invoke(main, ["report", str(exp_dir / "nothing"), "--plot"])
    assert r.exit_code == 2 and "Traceback" not in r.output
