"""`ssl-ray report`, `tensorboard`, `export`, `predict` and the listings (`methods`, `datasets`)."""
from __future__ import annotations

import json
import os
import sys

import click

from ..errors import SSLRayError
from . import _emit, main


# ---- report / tensorboard ----------------------------------------------------------------------------------
@main.command()
@click.argument("experiments", nargs=-1, required=True)
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "parquet", "json"]), default="md",
              show_default=True)
@click.option("--trials", is_flag=True, help="one row per trial instead of one per experiment: the searched "
              "hyperparameters, sorted by validation error")
@click.option("--all-columns", is_flag=True, help="with --trials: every column of results.parquet")
@click.option("--output", default=None, help="file to write (required for parquet)")
@click.option("--plot", is_flag=True, help="also draw the figures (learning curves, validation error against each "
              "searched hyperparameter, rungs, importance) and index.html into EXPERIMENT/figures")
@click.option("--plot-dir", default=None, help="with --plot: the folder for the figures instead (one sub-folder per "
              "experiment when several are given)")
def report(experiments, fmt, trials, all_columns, output, plot, plot_dir):
    """Compare finished experiments side by side (e.g. i2gan vs improvedgan); --plot draws their figures."""
    from ..data.files import check_output, write_output
    from ..tuning import results as R

    if output:
        check_output(output)  # a missing folder, a folder, a FIFO: refused before anything is read
    if all_columns and not trials:
        raise SSLRayError("--all-columns goes with --trials")
    if plot_dir and not plot:
        raise SSLRayError("--plot-dir goes with --plot")
    exps = list(experiments)
    names = [os.path.basename(os.path.normpath(e)) for e in exps]
    if plot_dir and len(set(names)) < len(names):
        raise SSLRayError("--plot-dir with experiments of the same folder name: plot them one at a time")
    rows = R.trial_table(exps, all_columns=all_columns) if trials else R.comparison(exps)
    if fmt == "parquet":
        if not output:
            raise SSLRayError("--format parquet needs --output FILE")
        R.write_parquet(rows, output)
        click.echo(f"wrote {output}")
    else:
        text = R.report_text(rows, fmt)
        if output:
            write_output(output, text + "\n")
            click.echo(f"wrote {output}")
        else:
            click.echo(text)
    if plot:  # the paths go to stderr where stdout holds a table in a machine format
        _plot(exps, plot_dir, err=fmt in ("csv", "json") and not output)


def _plot(experiments: list[str], plot_dir: str | None, err: bool) -> None:
    """report --plot: each experiment's figures (figures.write_figures), one path a line."""
    from ..tuning.figures import write_figures

    names = [os.path.basename(os.path.normpath(e)) for e in experiments]
    for exp, name in zip(experiments, names):
        out = None if plot_dir is None else plot_dir if len(experiments) == 1 else os.path.join(plot_dir, name)
        for path in write_figures(exp, out, echo=lambda line: click.echo(line, err=True)):
            click.echo(f"figure: {path}", err=err)


@main.command()
@click.argument("experiments", nargs=-1, required=True)
@click.option("--port", type=click.IntRange(0, 65535), default=6006, show_default=True,
              help="TCP port (0..65535; 0: any free one)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address TensorBoard listens on")
@click.option("--print-only", is_flag=True, help="print the tensorboard command instead of running it")
def tensorboard(experiments, port, host, print_only):
    """Open TensorBoard on one or several experiments (or train runs), with readable run names."""
    from pathlib import Path

    import shlex
    import subprocess
    import tempfile

    from ..tuning.tb import build_logdir

    import shutil
    import signal

    if print_only:  # one folder per set of experiments, rebuilt by each call: they do not pile up in /tmp
        import hashlib

        key = hashlib.sha1("\0".join(os.path.abspath(e) for e in experiments).encode()).hexdigest()[:12]
        logdir = os.path.join(tempfile.gettempdir(), f"ssl_ray_tb_{key}")
        shutil.rmtree(logdir, ignore_errors=True)
        os.makedirs(logdir)
    else:
        logdir = tempfile.mkdtemp(prefix="ssl_ray_tb_")
    try:
        build_logdir(list(experiments), logdir)
    except BaseException:
        shutil.rmtree(logdir, ignore_errors=True)
        raise
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--port", str(port), "--host", host,
           "--load_fast=false"]  # the Python loader: tb.py's HParams declaration is the one TensorBoard uses
    if print_only:  # the folder stays: the printed command reads it
        for run in sorted(p.relative_to(logdir).parent for p in Path(logdir).rglob("events.out.tfevents.*")):
            click.echo(f"run: {run}")
        click.echo(" ".join(shlex.quote(c) for c in cmd))
        click.echo(f"(links in {logdir}, rebuilt by the next --print-only of these experiments; delete it when done)",
                   err=True)
        return
    click.echo(f"TensorBoard on http://{host}:{port} (Ctrl-C to stop)", err=True)
    child = subprocess.Popen(cmd)

    def _stop(signum, frame):  # SIGTERM/SIGHUP: end TensorBoard too, then clean up below
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop)
    try:
        raise SystemExit(child.wait())
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
        shutil.rmtree(logdir, ignore_errors=True)


# ---- export / predict --------------------------------------------------------------------------------------
@main.command("export")
@click.argument("experiment")
@click.option("--output", default=None, help="folder for the model files (default EXPERIMENT/export; the "
              "model files of an earlier export there are replaced)")
@click.option("--trial", default=None, help="export this trial id instead of the best by validation error")
@click.option("--no-torchscript", is_flag=True, help="write only model.pt and model.json")
@click.option("--json", "as_json", is_flag=True, help="last line of stdout: one JSON object")
def export_cmd(experiment, output, trial, no_torchscript, as_json):
    """Export the best trial of a tune EXPERIMENT (or a train output) as model files for `ssl-ray predict`."""
    from ..export import export

    r = export(experiment, output=output, trial=trial, torchscript=not no_torchscript)
    src = r["source"]
    err = ", ".join(f"{k} {src[k]:.2f}%" for k in ("val_error", "test_error") if isinstance(src.get(k), (int, float)))
    human = (f"exported {r['method']} ({src['kind']}{' trial ' + src['trial_id'] if src['trial_id'] else ''}, "
             f"epoch {src['epoch']}{': ' + err if err else ''})\n" + "\n".join(f"  {f}" for f in r["files"]) +
             (f"\nnote: {src['note']}" if src.get("note") else "") +
             (f"\n  TorchScript {r['torchscript']}" if r["torchscript"] and "not" in r["torchscript"] else "") +
             f"\ninputs: {tuple(r['input']['shape'])} {r['input']['raw_dtype']}, {r['input']['to_float']}"
             f"\nuse: ssl-ray predict {r['output']} FILES...")
    _emit(r, as_json, human)


@main.command()
@click.argument("model")
@click.argument("files", nargs=-1, required=True)
@click.option("--probs", is_flag=True, help="also print the class probabilities")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--output", default=None, help="file to write instead of stdout (an existing file is replaced)")
@click.option("--invert", is_flag=True, help="images: invert grey levels (dark ink on white paper -> the "
              "bright-on-dark digits of the digits/MNIST datasets)")
def predict(model, files, probs, fmt, output, invert):
    """Predict classes with an exported MODEL (folder, model.pt or model.torchscript.pt) for image files
    (PNG, JPG, ...; converted to the model's channels and size), .npy/.npz arrays (N samples) or CSV tables
    (a header row; the label column is dropped, as train's csv dataset reads it)."""
    from ..export import predict as run_predict
    from ..export import predict_text
    from ..data.files import check_output, write_output

    if output:
        check_output(output)
    rows = run_predict(model, list(files), invert=invert)
    text = predict_text(rows, fmt, probs)
    if output:
        write_output(output, text + "\n")
        click.echo(f"wrote {output} ({len(rows)} predictions)", err=True)
    else:
        click.echo(text)


# ---- listings --------------------------------------------------------------------------------------------
@main.command()
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def methods(names, as_json):
    """List the methods and their hyperparameters (name, type, default, range, meaning)."""
    from ..config import describe, range_text
    from ..methods import get_method, list_methods

    classes = [get_method(n) for n in names] if names else list_methods()
    rows = [{"name": m.name, "paper": m.paper, "uses_labels": m.uses_labels,
             "hyperparameters": describe(m.Config)} for m in classes]
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        click.echo(f"{r['name']}: {r['paper']}")
        for h in r["hyperparameters"]:
            rng = range_text(h)
            click.echo(f"    {h['name']} ({h['type']}, default {h['default']!r}{', ' + rng if rng else ''}): {h['doc']}")
        click.echo("")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="print JSON")
def datasets(as_json):
    """List the datasets, their options and default validation sizes."""
    from ..data import list_datasets

    rows = [{"name": d.name, "doc": d.doc, "val_size": d.val_size, "options": d.options,
             "needs_files": d.needs_files} for d in list_datasets()]
    if as_json:
        click.echo(json.dumps(rows, default=str))
        return
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
        where = ("files under --data-root" if r["needs_files"] else
                 "your file: --data-opt path=FILE" if "path" in r["options"] else "built in")
        click.echo(f"{r['name']:<14} {r['doc']}\n{'':<14} val_size {r['val_size']}; options: {opts}; {where}")
