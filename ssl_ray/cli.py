"""The `ssl-ray` command line: commands only; the logic lives in the package."""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from .errors import SSLRayError
from .tuning.resources import GPU_RULE  # plain Python: importing it starts nothing

if TYPE_CHECKING:
    from .tuning.options import TuneOptions

F = TypeVar("F", bound=Callable[..., Any])
WAIT_HELP = ("with --address: a request larger than the cluster has now waits for its autoscaler to add nodes "
             "(default when the cluster can grow: a launcher config or an autoscaler is seen, or nothing says it "
             "cannot) instead of being refused; --no-wait-for-resources refuses at once")


class _Group(click.Group):
    """Every SSLRayError (bad input, missing data, unreachable cluster) becomes one line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SSLRayError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="ssl-ray")
def main() -> None:
    """Run and tune semi-supervised learning methods with Ray Train and Ray Tune."""


# ---- shared options -----------------------------------------------------------------------------------
def data_options(f):
    f = click.option("--dataset", default=None, help="dataset name (`ssl-ray datasets`); default: digits")(f)
    f = click.option("--data-root", default=None, help="where dataset files live (default $SSL_RAY_DATA or "
                     "~/.cache/ssl_ray/data)")(f)
    f = click.option("--download", is_flag=True, help="download the dataset if absent (torchvision datasets)")(f)
    f = click.option("--labels", type=int, default=None, help="labelled training examples, class-balanced "
                     "(default 50)")(f)
    f = click.option("--val-size", type=int, default=None, help="validation examples held out of training "
                     "(default: per dataset)")(f)
    f = click.option("--val-per-label", type=float, default=None, help="label-frugal model selection: a validation "
                     "set of this many examples per training label (e.g. 1.0; overrides --val-size)")(f)
    f = click.option("--data-opt", "data_opts", multiple=True, metavar="KEY=VALUE",
                     help="dataset option, e.g. noise=0.06 for circles (repeatable)")(f)
    return f


@dataclass(frozen=True)
class Opt:
    """One command-line option: click's declarations and keywords, and the TuneOptions field it sets (None: an
    option of the command that is not one; `negate`: the flag turns the field off)."""

    decls: tuple[str, ...]
    kwargs: dict[str, Any]
    field: str | None = None
    negate: bool = False

    @property
    def name(self) -> str:  # the keyword the command receives
        return str(click.Option(list(self.decls), **self.kwargs).name)


def _apply(opts: list[Opt]) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        for o in reversed(opts):  # click lists options in the order their decorators are written
            f = click.option(*o.decls, **o.kwargs)(f)
        return f

    return decorate


PERF_OPTIONS = [  # in --help order
    Opt(("--no-resident-data", "host_data"), dict(is_flag=True, help="on a GPU, keep the dataset on the host "
        "and copy each batch (default: resident on the device)"), "data_resident", negate=True),
    Opt(("--compile", "compile_"), dict(is_flag=True, help="torch.compile the method's models"), "compile"),
    Opt(("--amp",), dict(is_flag=True, help="mixed precision: bfloat16 autocast in the training steps"), "amp"),
]
perf_options = _apply(PERF_OPTIONS)


def _data_spec(dataset, data_root, download, labels, val_size, data_opts, base=None, val_per_label=None):
    from .config import parse_set
    from .data import DataSpec

    spec = base or DataSpec()
    if dataset and dataset != spec.name:  # another dataset than the space's: its options and split size do not apply
        spec.options, spec.val_size = {}, None
    if dataset:
        spec.name = dataset
    if data_root:
        spec.root = data_root
    if download:
        spec.download = True
    if labels is not None:
        spec.labels = labels
    if val_size is not None:
        spec.val_size = val_size
    if val_per_label is not None:
        spec.val_per_label = val_per_label
    if data_opts:
        opts = parse_set(data_opts)
        spec.options = {**spec.options, **opts}
    path = (spec.options or {}).get("path")
    if isinstance(path, str) and path and "://" not in path:  # your own file (npz, csv): trials run elsewhere
        spec.options = {**spec.options, "path": os.path.abspath(os.path.expanduser(path))}
    return spec


def _quiet_ray_analysis() -> None:
    """Ray's ResultGrid warns "Failed to fetch metrics for N trial(s)" for runs without Tune's own result files
    (the --confirm-seeds runs: ssl-ray reads its results from its own files, results.parquet and summary.json),
    once per method under `compare`: noise to a user, so that logger (Ray 2.60's) shows only errors."""
    import logging

    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)


def _run_tune(space, opts, as_json: bool) -> dict:
    """run_tune; with --json, Tune's live trial table goes to stderr so that stdout holds only the JSON."""
    from .tuning.tune import run_tune

    _quiet_ray_analysis()

    if not as_json:
        return run_tune(space, opts)
    with contextlib.redirect_stdout(sys.stderr):
        return run_tune(space, opts)


def _emit(summary: dict, as_json: bool, human: str) -> None:
    if as_json:
        click.echo(human, err=True)
        click.echo(json.dumps(summary, default=str))
    else:
        click.echo(human)


# ---- train ----------------------------------------------------------------------------------------------
@main.command()
@click.argument("method")
@data_options
@click.option("--epochs", type=int, default=20, show_default=True, help="training epochs")
@click.option("--batch-size", type=int, default=None, help="T, samples per batch (sets the batch_size "
              "hyperparameter)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the labelled split, the weights "
              "and the noise")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="any hyperparameter of the method "
              "(repeatable; `ssl-ray methods` lists them)")
@click.option("--address", default=None, help="an existing Ray cluster (host:port, auto); default: a local "
              "instance")
@click.option("--workers", type=int, default=1, show_default=True, help="data-parallel Ray Train workers")
@click.option("--cpus-per-worker", type=float, default=1, show_default=True)
@click.option("--gpus-per-worker", type=float, default=None, help=f"default: {GPU_RULE}; fewer GPUs than "
              "workers, or a fraction of a GPU with several workers, is refused")
@click.option("--wait-for-resources/--no-wait-for-resources", "wait_for_resources", default=None,
              help=WAIT_HELP)
@click.option("--max-failures", type=int, default=0, show_default=True, help="restarts from the last "
              "checkpoint after a worker failure")
@click.option("--output", default=None, help="run directory (TensorBoard files, checkpoints, result.json); with "
              "--storage, the run's name inside it")
@click.option("--storage", default=None, help="where the run goes on a cluster: s3://BUCKET/PATH, gs://... or a "
              "folder every node mounts; the run is STORAGE/NAME (NAME: --output, default METHOD-DATASET-TIME). "
              "Needed by a run on several nodes")
@click.option("--json", "as_json", is_flag=True, help="last line of stdout: one JSON object with the results")
@click.option("--resume", is_flag=True, help="continue the interrupted run in --output from its last checkpoint "
              "(same options; --epochs may grow)")
@click.option("--checkpoint-every", type=int, default=None, help="checkpoint every K epochs (0: by time only, see "
              "--checkpoint-seconds; default: 1 with --max-failures, whose restarts resume from it, else 0); the "
              "last epoch is always checkpointed")
@click.option("--checkpoint-seconds", type=float, default=30.0, show_default=True, help="checkpoint at the end of "
              "an epoch when this many seconds passed since the last checkpoint (0: off)")
@click.option("--ray-train", "ray_train", is_flag=True, default=None, help="run one worker through Ray Train too "
              "(default: one local worker trains in this process, without Ray)")
@perf_options
def train(method, dataset, data_root, download, labels, val_size, val_per_label, data_opts, epochs, batch_size,
          seed, sets, address, workers, cpus_per_worker, gpus_per_worker, wait_for_resources, max_failures, output,
          storage, as_json, resume, checkpoint_every, checkpoint_seconds, ray_train, amp, compile_, host_data):
    """Train METHOD once and print its validation and test error.

    One local worker trains in this process; --workers N > 1, --address or --max-failures run through
    Ray Train. Ctrl-C records the run as interrupted (exit 130); --resume continues it."""
    from . import config as C
    from .engine.spec import RunSpec
    from .errors import DivergenceError
    from .methods import get_method
    from .tuning.preflight import preflight
    from .tuning.train import default_output, run_train

    get_method(method)
    overrides = C.parse_set(sets)
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    data = _data_spec(dataset, data_root, download, labels, val_size, data_opts, val_per_label=val_per_label)
    _check_positive(epochs=epochs, workers=workers, cpus_per_worker=cpus_per_worker)
    _check_non_negative(gpus_per_worker=gpus_per_worker, max_failures=max_failures,
                        checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)
    _check_seed(seed)
    if gpus_per_worker is not None:
        from .tuning.resources import check_gpu_split

        check_gpu_split(workers, gpus_per_worker, "--gpus-per-worker")
    if checkpoint_every is None:
        checkpoint_every = 1 if max_failures else 0
    if resume and not output:
        raise SSLRayError("--resume needs --output: the folder of the run to continue" +
                          (" (its name inside --storage)" if storage else ""))
    spec = RunSpec(method, data, epochs=epochs, seed=seed, config=overrides, amp=amp, compile=compile_,
                   data_resident=not host_data, test_every=0, checkpoint_every=checkpoint_every,
                   checkpoint_seconds=checkpoint_seconds)
    preflight(spec)  # absent or corrupt dataset, too few/many labels, config x dataset: error before any compute
    out = _train_output(storage, output, default_output("train", f"{method}-{data.name}"))
    _check_writable(out)
    try:
        summary = run_train(spec, output=out, workers=workers, cpus_per_worker=cpus_per_worker,
                            gpus_per_worker=gpus_per_worker, address=address, max_failures=max_failures,
                            resume=resume, ray_train=ray_train, shared=storage is not None,
                            wait_for_resources=wait_for_resources)
    except KeyboardInterrupt:
        r = _read_result(out)
        ck = (f"last checkpoint: epoch {r['checkpoint_epoch']}" if r.get("checkpoint") else "no checkpoint yet")
        click.echo(f"\ninterrupted after {r.get('epochs', 0)} epoch(s) ({ck}); continue with the same command "
                   f"and --resume --output {os.path.abspath(out)}", err=True)
        raise click.exceptions.Exit(130)
    except DivergenceError as e:
        click.echo(f"error: training diverged: {e} (lower the learning rate?)", err=True)
        raise click.exceptions.Exit(1)
    human = (f"\n{method} on {data.name} ({data.labels} labels, seed {seed}): "
             f"val error {_pct(summary['val_error'])}, test error {_pct(summary['test_error'])} after "
             f"{summary['epochs']} epochs in {summary['seconds']:.1f}s\n"
             f"output: {summary['output']}  (ssl-ray tensorboard {summary['output']})")
    _emit(summary, as_json, human)


def _train_output(storage: str | None, output: str | None, default: str) -> str:
    """The run's folder: --output (or the default under $SSL_RAY_RUNS); with --storage, STORAGE/NAME."""
    if storage is None:
        return output or default
    from .tuning.experiment import check_storage

    if output and ("://" in output or os.path.isabs(os.path.expanduser(output)) or ".." in output.split("/")):
        raise SSLRayError(f"--output {output!r} with --storage: give the run's name inside the storage (e.g. "
                          f"--output run1), not a path of its own")
    check_storage(storage)
    root = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    return root.rstrip("/") + "/" + (output or os.path.basename(default))


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def _read_result(out: str) -> dict:
    try:
        with open(os.path.join(out, "result.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _check_positive(**values: float | None) -> None:
    for k, v in values.items():
        if v is not None and not (v > 0 and math.isfinite(v)):  # click's FLOAT accepts nan and inf
            raise SSLRayError(f"--{k.replace('_', '-')} must be positive, got {v}")


def _check_non_negative(**values: float | None) -> None:
    for k, v in values.items():
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise SSLRayError(f"--{k.replace('_', '-')} cannot be negative, got {v}")


SEED_LIMIT = 2 ** 32  # NumPy/Ray seeding accept [0, 2**32); the trainer derives larger seeds from it


def _check_seed(seed: int, extra: int = 0) -> None:
    if not 0 <= seed < SEED_LIMIT - extra:
        raise SSLRayError(f"--seed must be in [0, {SEED_LIMIT - 1 - extra}]" + (
            f" with --confirm-seeds {extra}" if extra else "") + f", got {seed}")


def _check_writable(path: str) -> None:
    from pathlib import Path

    if "://" in path:
        return
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".ssl_ray_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SSLRayError(f"cannot write to {path}: {e.strerror or e}") from None


# ---- tune -----------------------------------------------------------------------------------------------
TUNE_OPTIONS = [  # `ssl-ray tune`'s options after the data options, in --help order; then PERF_OPTIONS
    Opt(("--num-samples",), dict(type=int, default=None, help="trials to sample (default: the space's)"),
        "num_samples"),
    Opt(("--max-epochs",), dict(type=int, default=None, help="epochs of a trial that is never stopped"), "max_epochs"),
    Opt(("--grace-epochs",), dict(type=int, default=None, help="ASHA: epochs before a trial can be stopped"),
        "grace_epochs"),
    Opt(("--reduction-factor",), dict(type=int, default=None, help="ASHA: keep 1/factor of trials at each rung"),
        "reduction_factor"),
    Opt(("--scheduler",), dict(type=click.Choice(["asha", "sha", "fifo", "pbt"]), default=None,
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
    from .tuning.options import TuneOptions

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
    from . import config as C
    from .data import load_splits
    from .tuning.options import check_name
    from .tuning.spaces import load_space
    from .tuning.tune import apply_options

    data = {k: params.pop(k) for k in DATA_PARAMS}
    optuna_storage = params.pop("optuna_storage")
    opts = tune_options(params)
    if opts.storage:
        from .tuning.experiment import check_storage

        if "://" not in opts.storage:
            opts.storage = os.path.expanduser(opts.storage)  # '~/runs' from a config file or on a command line
        check_storage(opts.storage)
    if opts.name:
        check_name(opts.name)
    if opts.resume:  # the experiment's own method, dataset, space and scheduler; typed options must agree
        from click.core import ParameterSource

        from .tuning.experiment import resume_setup

        ctx = click.get_current_context()
        given = {k: v for k, v in ctx.params.items() if k not in ("method", "optuna_storage")
                 and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
        space, opts = resume_setup(method, given, opts.storage, opts.name)
        _check_extras(space, opts, optuna_storage)
        _search(space, opts, as_json, optuna_storage)
        return
    space = load_space(space_file, method=method, sets=C.parse_set(sets))
    space.data = _data_spec(data["dataset"], data["data_root"], data["download"], data["labels"], data["val_size"],
                            data["data_opts"], base=space.data, val_per_label=data["val_per_label"])
    _check_positive(num_samples=opts.num_samples, max_epochs=opts.max_epochs, grace_epochs=opts.grace_epochs,
                    reduction_factor=opts.reduction_factor, perturbation_interval=opts.perturbation_interval,
                    cpus_per_trial=opts.cpus_per_trial, workers=opts.workers,
                    max_concurrent=opts.max_concurrent)
    if ((opts.gpus_per_trial is not None and (not math.isfinite(opts.gpus_per_trial) or opts.gpus_per_trial < 0))
            or opts.confirm_seeds < 0 or opts.max_failures < 0):
        raise SSLRayError("--gpus-per-trial, --confirm-seeds and --max-failures cannot be negative")
    if opts.gpus_per_trial is not None:
        from .tuning.resources import check_gpu_split

        check_gpu_split(opts.workers, opts.gpus_per_trial, "--gpus-per-trial")
    _check_seed(opts.seed, opts.confirm_seeds)
    apply_options(space, opts)
    _check_extras(space, opts, optuna_storage)
    load_splits(space.data, opts.seed)  # missing dataset, bad label count: error before any compute
    if dry_run:
        from .tuning.plan import plan, plan_text

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


def _check_extras(space, opts: TuneOptions, optuna_storage: str | None) -> None:
    """The searcher's and the trackers' packages, the MLflow URI and --optuna-storage: one line, exit 2, before
    Ray starts or anything is written (also under --dry-run)."""
    from .tuning.searchers import check_packages
    from .tuning.trackers import check_trackers

    check_packages(space.searcher)
    check_trackers(opts.mlflow, opts.wandb)
    if optuna_storage and space.searcher != "optuna":
        raise SSLRayError(f"--optuna-storage is for --search optuna (this search uses {space.searcher or 'random'})")


def _search(space, opts: TuneOptions, as_json: bool, optuna_storage: str | None) -> None:
    """run_tune and its summary; an Optuna search keeps its study in EXPERIMENT/optuna.db (or --optuna-storage)."""
    if space.searcher != "optuna":
        summary = _run_tune(space, opts, as_json)
    else:
        from .tuning.searchers import optuna_study
        from .tuning.tune import experiment_path

        storage, opts.name = experiment_path(opts, space)  # the name fixed now: the study is named after it
        with optuna_study(storage.rstrip("/") + "/" + opts.name, optuna_storage) as url:
            summary = _run_tune(space, opts, as_json)
        summary["optuna"] = {"study_name": opts.name, "storage": url}
    _emit(summary, as_json, _tune_text(summary))


def _rough_time(p: dict, opts: TuneOptions) -> str:
    """--dry-run's time estimate (progress.dry_run_estimate); trials at once: --max-concurrent, else this
    machine's CPUs / --cpus-per-trial for a local instance, else 1 (a cluster's size is not known here)."""
    from .tuning.options import storage_root
    from .tuning.progress import dry_run_estimate

    slots = opts.max_concurrent or (1 if opts.address else
                                    max(1, int((os.cpu_count() or 1) // (opts.cpus_per_trial * opts.workers))))
    return dry_run_estimate(p, storage_root(opts.storage), slots)


def _planned_gpus(opts: TuneOptions) -> TuneOptions:
    """The options as --dry-run shows them: default GPUs decided for a local instance (this machine's); on a
    cluster (--address) shown as 1 per worker, the default when it has or can add GPUs (the plan says so)."""
    import dataclasses

    from .tuning.resources import local_state, default_gpus

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
    from .data.files import check_output, write_output
    from .tuning import results as R

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
    from .tuning.figures import write_figures

    names = [os.path.basename(os.path.normpath(e)) for e in experiments]
    for exp, name in zip(experiments, names):
        out = None if plot_dir is None else plot_dir if len(experiments) == 1 else os.path.join(plot_dir, name)
        for path in write_figures(exp, out, echo=lambda line: click.echo(line, err=True)):
            click.echo(f"figure: {path}", err=err)


@main.command()
@click.argument("experiments", nargs=-1, required=True)
@click.option("--port", type=int, default=6006, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="address TensorBoard listens on")
@click.option("--print-only", is_flag=True, help="print the tensorboard command instead of running it")
def tensorboard(experiments, port, host, print_only):
    """Open TensorBoard on one or several experiments (or train runs), with readable run names."""
    from pathlib import Path

    import shlex
    import subprocess
    import tempfile

    from .tuning.tb import build_logdir

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
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--port", str(port), "--host", host]
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
    from .export import export

    r = export(experiment, output=output, trial=trial, torchscript=not no_torchscript)
    src = r["source"]
    err = ", ".join(f"{k} {src[k]:.2f}%" for k in ("val_error", "test_error") if isinstance(src.get(k), (int, float)))
    human = (f"exported {r['method']} ({src['kind']}{' trial ' + src['trial_id'] if src['trial_id'] else ''}, "
             f"epoch {src['epoch']}{': ' + err if err else ''})\n" + "\n".join(f"  {f}" for f in r["files"]) +
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
    from .export import predict as run_predict
    from .export import predict_text
    from .data.files import check_output, write_output

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
    from .config import describe, range_text
    from .methods import get_method, list_methods

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
    from .data import list_datasets

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


# ---- compare ---------------------------------------------------------------------------------------------
@main.command()
@click.argument("methods_", metavar="METHODS...", nargs=-1, required=True)
@data_options
@click.option("--num-samples", type=int, default=8, show_default=True, help="trials per method (the same budget)")
@click.option("--max-epochs", type=int, default=20, show_default=True, help="epochs of a trial that is never stopped")
@click.option("--grace-epochs", type=int, default=2, show_default=True, help="ASHA: epochs before a trial can stop")
@click.option("--reduction-factor", type=int, default=3, show_default=True, help="ASHA: keep 1/factor at each rung")
@click.option("--scheduler", type=click.Choice(["asha", "sha", "fifo"]), default="asha", show_default=True)
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
    from .data import load_splits
    from .data.files import check_output, write_output
    from .tuning.compare import compare as run_compare
    from .tuning.compare import plan_spaces
    from .tuning.searchers import check_packages
    from .tuning.tune import TuneOptions

    _check_positive(num_samples=num_samples, max_epochs=max_epochs, grace_epochs=grace_epochs,
                    reduction_factor=reduction_factor, seeds=seeds, cpus_per_trial=cpus_per_trial)
    _check_non_negative(gpus_per_trial=gpus_per_trial)
    _check_seed(seed, seeds)
    space_files = {}
    for item in spaces:
        m, sep, path = item.partition("=")
        if not sep or not path:
            raise SSLRayError(f"--space expects METHOD=FILE, got {item!r}")
        space_files[m] = path
    data = _data_spec(dataset, data_root, download, labels, val_size, data_opts, val_per_label=val_per_label)
    for space in plan_spaces(list(methods_), data, space_files):  # a space's searcher without its package
        check_packages(space.searcher)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
