"""`ssl-ray tune` and `ssl-ray compare`."""
from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any

import click

from ..errors import SSLRayError
from ..tuning import schedulers
from ..tuning.resources import GPU_RULE
from . import _emit, _quiet_ray_analysis, _run_tune, main
from .common import (PERF_OPTIONS, WAIT_HELP, Opt, _apply, _check_address, _check_non_negative, _check_path_text,
                     _check_positive, _check_seed, _check_writable, _data_spec, data_options, perf_options)

if TYPE_CHECKING:
    from ..tuning.options import TuneOptions


# ---- tune -----------------------------------------------------------------------------------------------
TUNE_OPTIONS = [  # `ssl-ray tune`'s options after the data options, in --help order; then PERF_OPTIONS
    Opt(("--num-samples",), dict(type=int, default=None, help="trials to sample (default: the space's)"),
        "num_samples"),
    Opt(("--max-epochs",), dict(type=int, default=None, help="epochs of a trial that is never stopped"), "max_epochs"),
    Opt(("--grace-epochs",), dict(type=int, default=None, help="ASHA: epochs before a trial can be stopped"),
        "grace_epochs"),
    Opt(("--reduction-factor",), dict(type=int, default=None, help="ASHA: keep 1/factor of trials at each rung"),
        "reduction_factor"),
    Opt(("--scheduler",), dict(type=click.Choice(schedulers.names()), default=None,
                               help="default: the space's (asha); sha = synchronous successive halving; pbt = "
                                    "Population Based Training"), "scheduler"),
    Opt(("--perturbation-interval",), dict(type=int, default=None, help="PBT: epochs between exploit/explore "
                                           "decisions (default: the space's, else 4)"), "perturbation_interval"),
    Opt(("--search",), dict(type=click.Choice(["random", "optuna", "hyperopt", "bohb"]), default=None,
                            help="search algorithm (default: the space's `searcher`, else random); "
                                 "optuna/hyperopt/bohb are extras"), "search"),
    Opt(("--optuna-storage",), dict(default=None, metavar="URL", help="--search optuna: the study's storage "
                                    "(default sqlite:///EXPERIMENT/optuna.db; give it again with --resume)")),
    Opt(("--max-concurrent",), dict(type=int, default=None, help="cap on trials running at once (default: what "
                                    "the cluster's resources allow)"), "max_concurrent"),
    Opt(("--cpus-per-trial",), dict(type=float, default=1, show_default=True, help="CPUs per trial (per worker "
                                    "with --workers > 1); also the trial's torch threads"), "cpus_per_trial"),
    Opt(("--gpus-per-trial",), dict(type=float, default=None, help=f"GPUs per trial (per worker with --workers > 1); "
                                    f"default, as for `ssl-ray train`: {GPU_RULE}"), "gpus_per_trial"),
    Opt(("--wait-for-resources/--no-wait-for-resources", "wait_for_resources"), dict(default=None, help=WAIT_HELP),
        "wait_for_resources"),
    Opt(("--workers",), dict(type=int, default=1, show_default=True, help="data-parallel Ray Train workers per "
                             "trial"), "workers"),
    Opt(("--address",), dict(default=None, help="an existing Ray cluster (host:port or auto); default: local"),
        "address"),
    Opt(("--storage",), dict(default=None, help="results root: a local dir (default ./ssl_ray_runs/tune), s3://, "
                             "gs:// or an NFS path shared by all nodes"), "storage"),
    Opt(("--name",), dict(default=None, help="experiment name (default METHOD-DATASET-TIME)"), "name"),
    Opt(("--resume",), dict(is_flag=True, help="continue the interrupted experiment --storage/--name"), "resume"),
    Opt(("--confirm-seeds",), dict(type=int, default=0, show_default=True, help="retrain the best configuration "
                                   "with K new seeds and report test error mean +- std"), "confirm_seeds"),
    Opt(("--max-failures",), dict(type=int, default=0, show_default=True, help="retries of a crashed trial, from "
                                  "its last checkpoint"), "max_failures"),
    Opt(("--seed",), dict(type=int, default=0, show_default=True, help="seed of the searched trials"), "seed"),
    Opt(("--json", "as_json"), dict(is_flag=True, help="last line of stdout: one JSON summary")),
    Opt(("--quiet",), dict(is_flag=True, help="no trial table while it runs"), "progress", negate=True),
    Opt(("--mlflow",), dict(default=None, metavar="URI", help="log trials to MLflow (a tracking URI, e.g. "
                            "file:///abs/path/mlruns); extra: ssl-ray[mlflow]"), "mlflow"),
    Opt(("--wandb",), dict(default=None, metavar="PROJECT", help="log trials to a Weights & Biases project; extra: "
                           "ssl-ray[wandb]"), "wandb"),
    Opt(("--dry-run",), dict(is_flag=True, help="print the validated trial plan (trials, rungs, resources, epochs) "
                             "and exit without starting Ray")),
]
DATA_PARAMS = ("dataset", "data_root", "download", "labels", "val_size", "val_per_label", "data_opts")


def tune_options(params: dict[str, Any]) -> TuneOptions:
    """The TuneOptions of a `ssl-ray tune` command line (its keywords, as click passes them)."""
    from ..tuning.options import TuneOptions

    values: dict[str, Any] = {o.field: (not params[o.name]) if o.negate else params[o.name]
                              for o in TUNE_OPTIONS + PERF_OPTIONS if o.field}
    return TuneOptions(**values)


@main.command()
@click.argument("method")
@click.option("--space", "space_file", default=None, help="search-space YAML (default search_spaces/METHOD.yaml)")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="fix a hyperparameter on top of the space")
@data_options
@_apply(TUNE_OPTIONS)
@perf_options
def tune(method: str, space_file: str | None, sets: tuple[str, ...], as_json: bool, dry_run: bool,
         **params: Any) -> None:
    """Search METHOD's hyperparameters with Ray Tune + ASHA (validation error), then summarise."""
    from .. import config as C
    from ..tuning.options import check_name

    data = {k: params.pop(k) for k in DATA_PARAMS}
    optuna_storage = params.pop("optuna_storage")
    opts = tune_options(params)
    _check_address(opts.address)
    _check_path_text(opts.storage, "--storage")
    if opts.storage:
        from ..tuning.experiment import check_storage

        if "://" not in opts.storage:
            opts.storage = os.path.expanduser(opts.storage)  # '~/runs' from a config file or on a command line
        check_storage(opts.storage)
    if opts.name:
        check_name(opts.name)
    if space_file is not None:  # on both paths, a resumed search's typed --space included
        _read_space_first(space_file)
    if opts.resume:  # the experiment's own method, dataset, space and scheduler; typed options must agree
        from click.core import ParameterSource

        from ..tuning.experiment import resume_setup

        ctx = click.get_current_context()
        given = {k: v for k, v in ctx.params.items() if k not in ("method", "optuna_storage")
                 and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        typed = None  # a --space typed again: the space that command line describes must be the experiment's
        if space_file is not None:
            from ..tuning.tune import apply_options

            typed = apply_options(_compose_space(method, space_file, sets, data), opts)
        space, opts = resume_setup(method, given, opts.storage, opts.name, typed_space=typed)
        _check_extras(space, opts, optuna_storage)
        _search(space, opts, as_json, optuna_storage)
        return
    from ..tuning.spaces import check_searched  # imports torch (through the methods)
    from ..tuning.tune import apply_options

    space = _compose_space(method, space_file, sets, data)
    _check_positive(num_samples=opts.num_samples, max_epochs=opts.max_epochs, grace_epochs=opts.grace_epochs,
                    reduction_factor=opts.reduction_factor, perturbation_interval=opts.perturbation_interval,
                    cpus_per_trial=opts.cpus_per_trial, workers=opts.workers,
                    max_concurrent=opts.max_concurrent)
    if ((opts.gpus_per_trial is not None and (not math.isfinite(opts.gpus_per_trial) or opts.gpus_per_trial < 0))
            or opts.confirm_seeds < 0 or opts.max_failures < 0):
        raise SSLRayError("--gpus-per-trial, --confirm-seeds and --max-failures cannot be negative")
    if opts.gpus_per_trial is not None:
        from ..tuning.resources import check_gpu_split

        check_gpu_split(opts.workers, opts.gpus_per_trial, "--gpus-per-trial")
    _check_seed(opts.seed, opts.confirm_seeds)
    apply_options(space, opts)
    check_searched(space)
    _check_extras(space, opts, optuna_storage)
    from ..data import load_splits  # torch: imported after the space file was read (_read_space_first)

    load_splits(space.data, opts.seed)  # missing dataset, bad label count: error before any compute
    if dry_run:
        from ..tuning.plan import plan, plan_text

        p = plan(space, _planned_gpus(opts))
        text = plan_text(p)
        if opts.gpus_per_trial is None and opts.address:
            text += f"\nGPUs per worker: the default ({GPU_RULE}), decided when the search starts"
        p["rough_time"] = _rough_time(p, opts)
        text += "\n" + p["rough_time"]
        _emit(p, as_json, text)
        return
    if opts.storage and "://" not in opts.storage:
        _check_writable(opts.storage)
    elif not opts.storage:
        _check_writable(os.environ.get("SSL_RAY_RUNS", "ssl_ray_runs") + "/tune")
    _search(space, opts, as_json, optuna_storage)


def _compose_space(method: str, space_file: str | None, sets: tuple[str, ...], data: dict[str, Any]):
    """The space file (default search_spaces/METHOD.yaml) with --set and the data options on top; the scheduler
    and search options go on with tuning.tune.apply_options."""
    from .. import config as C
    from ..tuning.spaces import load_space

    space = load_space(space_file, method=method, sets=C.parse_set(sets))
    space.data = _data_spec(data["dataset"], data["data_root"], data["download"], data["labels"], data["val_size"],
                            data["data_opts"], base=space.data, val_per_label=data["val_per_label"])
    return space


def _read_space_first(space_file: str) -> None:
    """The space file read and composed before anything imports torch (load_space imports the methods): a
    device such as /dev/zero, a FIFO, a file over 1 MiB or a YAML alias bomb is refused in a second or two and
    about 200 MB, not after torch's 500 MB import. The same checks and words as load_space's; malformed YAML is
    left to load_space, which names the line."""
    from pathlib import Path

    from ..data.files import load_yaml, read_yaml_text
    from ..errors import ConfigError

    text = read_yaml_text(space_file, "search space", ConfigError)
    try:
        load_yaml(text, str(Path(space_file)), ConfigError)
    except SSLRayError:
        raise
    except Exception:  # a YAMLError, a constructor's ValueError...: load_space reports it with its line
        pass


def _check_extras(space, opts: TuneOptions, optuna_storage: str | None) -> None:
    """The searcher's and the trackers' packages, the MLflow URI and --optuna-storage: one line, exit 2, before
    Ray starts or anything is written (also under --dry-run)."""
    from ..tuning.searchers import check_packages
    from ..tuning.trackers import check_trackers

    check_packages(space.searcher)
    check_trackers(opts.mlflow, opts.wandb)
    if optuna_storage and space.searcher != "optuna":
        raise SSLRayError(f"--optuna-storage is for --search optuna (this search uses {space.searcher or 'random'})")


def _search(space, opts: TuneOptions, as_json: bool, optuna_storage: str | None) -> None:
    """run_tune and its summary; an Optuna search keeps its study in EXPERIMENT/optuna.db (or --optuna-storage)."""
    if space.searcher != "optuna":
        summary = _run_tune(space, opts, as_json)
    else:
        from ..tuning.searchers import optuna_study
        from ..tuning.tune import experiment_path

        storage, opts.name = experiment_path(opts, space)  # the name fixed now: the study is named after it
        with optuna_study(storage.rstrip("/") + "/" + opts.name, optuna_storage) as url:
            summary = _run_tune(space, opts, as_json)
        summary["optuna"] = {"study_name": opts.name, "storage": url}
    _emit(summary, as_json, _tune_text(summary))


def _rough_time(p: dict, opts: TuneOptions) -> str:
    """--dry-run's time estimate (progress.dry_run_estimate); trials at once: --max-concurrent, else this
    machine's CPUs / --cpus-per-trial for a local instance, else 1 (a cluster's size is not known here)."""
    from ..tuning.options import storage_root
    from ..tuning.progress import dry_run_estimate

    slots = opts.max_concurrent or (1 if opts.address else
                                    max(1, int((os.cpu_count() or 1) // (opts.cpus_per_trial * opts.workers))))
    return dry_run_estimate(p, storage_root(opts.storage), slots)


def _planned_gpus(opts: TuneOptions) -> TuneOptions:
    """The options as --dry-run shows them: default GPUs decided for a local instance (this machine's); on a
    cluster (--address) shown as 1 per worker, the default when it has or can add GPUs (the plan says so)."""
    import dataclasses

    from ..tuning.resources import local_state, default_gpus

    if opts.gpus_per_trial is not None:
        return opts
    gpus = 1.0 if opts.address else default_gpus(local_state(), "--gpus-per-trial")
    return dataclasses.replace(opts, gpus_per_trial=gpus)


def _tune_text(s: dict) -> str:
    lines = [f"\n{s['method']} on {s['dataset']} ({s['labels']} labels): {s['num_trials']} trials, "
             f"{s['num_stopped_early']} stopped early by ASHA, {s['num_errored']} errored, "
             f"{s['num_completed']} ran to the end" + (f", {s['num_interrupted']} interrupted"
                                                        if s.get("num_interrupted") else "") +
             f", in {s['seconds']:.0f}s"]
    b = s.get("best")
    if b:
        cfg = ", ".join(f"{k}={b['config'][k]:.4g}" if isinstance(b["config"][k], float) else f"{k}={b['config'][k]}"
                        for k in s.get("searched", []))
        lines.append(f"best: val error {b['val_error']:.2f}% (epoch {b['epochs']}), test error {b['test_error']:.2f}%"
                     f"  [{cfg}]")
    pbt = s.get("pbt")
    if pbt:
        n = pbt["exploits"]
        lines.append(f"PBT: {n} exploit{'' if n == 1 else 's'} (a trial continuing from a better one's checkpoint with "
                     f"mutated hyperparameters): {pbt['log']}; Ray's policy log: {pbt['policy_log']}")
    c = s.get("confirm")
    if c and c.get("test_error_mean") is not None:
        lines.append(f"confirmed with {len(c['seeds'])} seeds: test error {c['test_error_mean']:.2f} +- "
                     f"{c['test_error_std']:.2f}%")
    for tid, err in (s.get("errors") or {}).items():
        lines.append(f"trial {tid} failed: {err}")
    study = s.get("optuna")
    if study:
        lines.append(f"optuna study {study['study_name']}: optuna-dashboard {study['storage']}" if study["storage"]
                     else "optuna study kept in memory (an experiment in a bucket): --optuna-storage URL keeps it")
    lines.append(f"results: {s['results']}\ncompare: ssl-ray report {s['experiment']}   |   "
                 f"ssl-ray tensorboard {s['experiment']}")
    return "\n".join(lines)


# ---- compare ---------------------------------------------------------------------------------------------
@main.command()
@click.argument("methods_", metavar="METHODS...", nargs=-1, required=True)
@data_options
@click.option("--num-samples", type=int, default=8, show_default=True, help="trials per method (the same budget)")
@click.option("--max-epochs", type=int, default=20, show_default=True, help="epochs of a trial that is never stopped")
@click.option("--grace-epochs", type=int, default=2, show_default=True, help="ASHA: epochs before a trial can stop")
@click.option("--reduction-factor", type=int, default=3, show_default=True, help="ASHA: keep 1/factor at each rung")
@click.option("--scheduler", type=click.Choice([n for n in schedulers.names() if schedulers.get(n).in_compare]),
              default=schedulers.DEFAULT, show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True, help="seeds the best configuration of each method is "
              "retrained with (the same seeds, hence the same labelled splits, for every method)")
@click.option("--space", "spaces", multiple=True, metavar="METHOD=FILE", help="a search space for one method "
              "(default search_spaces/METHOD.yaml; repeatable)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the searched trials")
@click.option("--cpus-per-trial", type=float, default=1, show_default=True)
@click.option("--gpus-per-trial", type=float, default=None, help=f"default, as for `ssl-ray tune`: {GPU_RULE}")
@click.option("--address", default=None, help="an existing Ray cluster (host:port or auto); default: local")
@click.option("--storage", default=None, help="results root (default ./ssl_ray_runs/tune)")
@click.option("--name", default=None, help="comparison name; each method's experiment is NAME-METHOD")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
@click.option("--output", default=None, help="also write the table to this file")
@click.option("--quiet", is_flag=True, help="no trial table while it runs")
def compare(methods_, dataset, data_root, download, labels, val_size, val_per_label, data_opts, num_samples,
            max_epochs, grace_epochs, reduction_factor, scheduler, seeds, spaces, seed, cpus_per_trial,
            gpus_per_trial, address, storage, name, fmt, output, quiet):
    """Tune every METHOD with the same budget on the same data, retrain each best configuration with the same
    seeds, and print test error mean +- std per method (e.g. `ssl-ray compare supervised vat fixmatch`)."""
    from ..data import load_splits
    from ..data.files import check_output, write_output
    from ..tuning.compare import compare as run_compare
    from ..tuning.compare import plan_spaces
    from ..tuning.searchers import check_packages
    from ..tuning.spaces import check_searched
    from ..tuning.tune import TuneOptions

    _check_positive(num_samples=num_samples, max_epochs=max_epochs, grace_epochs=grace_epochs,
                    reduction_factor=reduction_factor, seeds=seeds, cpus_per_trial=cpus_per_trial)
    _check_non_negative(gpus_per_trial=gpus_per_trial)
    _check_seed(seed, seeds)
    _check_address(address)
    _check_path_text(storage, "--storage")
    if name is not None:
        from ..tuning.options import check_name

        check_name(name)
    space_files = {}
    for item in spaces:
        m, sep, path = item.partition("=")
        if not sep or not path:
            raise SSLRayError(f"--space expects METHOD=FILE, got {item!r}")
        space_files[m] = path
    data = _data_spec(dataset, data_root, download, labels, val_size, data_opts, val_per_label=val_per_label)
    for space in plan_spaces(list(methods_), data, space_files):  # a space's searcher without its package
        check_packages(space.searcher)
        check_searched(space, num_samples)
    load_splits(data, seed)  # missing dataset, bad label count: error before any compute
    if output:
        check_output(output)  # before hours of tuning, not after
    opts = TuneOptions(num_samples=num_samples, max_epochs=max_epochs, grace_epochs=grace_epochs,
                       reduction_factor=reduction_factor, scheduler=scheduler, cpus_per_trial=cpus_per_trial,
                       gpus_per_trial=gpus_per_trial, address=address, storage=storage, seed=seed,
                       progress=not quiet)
    _quiet_ray_analysis()
    result = run_compare(list(methods_), data, opts, seeds=seeds, spaces=space_files, name=name)
    text = {"md": result["markdown"], "csv": result["csv"].rstrip("\n"),
            "json": json.dumps(result["rows"], default=str)}[fmt]
    if output:
        write_output(output, text + "\n")
    click.echo(text)
