"""`ssl-ray train`."""
from __future__ import annotations

import os

import click

from ..errors import SSLRayError
from ..tuning.resources import GPU_RULE
from . import _emit, main
from .common import (WAIT_HELP, _check_address, _check_non_negative, _check_path_text, _check_positive, _check_seed,
                     _check_writable, _data_spec, _pct, _read_result, data_options, perf_options)


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
    Ray Train. Ctrl-C (exit 130) or SIGTERM (exit 143) records the run as interrupted; --resume continues it."""
    from .. import config as C
    from ..engine.spec import RunSpec
    from ..errors import DivergenceError
    from ..methods import get_method
    from ..tuning.preflight import preflight
    from ..tuning.train import default_output, run_train

    get_method(method)
    overrides = C.parse_set(sets)
    if batch_size is not None:
        overrides["batch_size"] = batch_size
    data = _data_spec(dataset, data_root, download, labels, val_size, data_opts, val_per_label=val_per_label)
    _check_positive(epochs=epochs, workers=workers, cpus_per_worker=cpus_per_worker)
    _check_non_negative(gpus_per_worker=gpus_per_worker, max_failures=max_failures,
                        checkpoint_every=checkpoint_every, checkpoint_seconds=checkpoint_seconds)
    _check_seed(seed)
    _check_address(address)
    _check_path_text(output, "--output")
    _check_path_text(storage, "--storage")
    if gpus_per_worker is not None:
        from ..tuning.resources import check_gpu_split

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
    from ..tuning.experiment import check_storage

    if output and ("://" in output or os.path.isabs(os.path.expanduser(output)) or ".." in output.split("/")):
        raise SSLRayError(f"--output {output!r} with --storage: give the run's name inside the storage (e.g. "
                          f"--output run1), not a path of its own")
    check_storage(storage)
    root = storage if "://" in storage else os.path.abspath(os.path.expanduser(storage))
    return root.rstrip("/") + "/" + (output or os.path.basename(default))
