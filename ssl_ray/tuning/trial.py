"""One trial of `ssl-ray tune`: Tune's function trainable and what a trial is given (its SPEC_KEY entry and the
resources Tune reserves for it).

One trial = one run of engine.worker.run_worker. A single-worker trial runs the training loop in the trial's own
process (no Train worker group: RAY.md measured ~17 s of start-up per group); an N-worker trial launches its own
TorchTrainer inside the trial function, the Ray 2.x pattern (RAY.md), its metrics flowing back to Tune through
TuneReportCallback. Ray-specific lines are numbered [1]..[4] (tune.py: [5], [6]).
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any

from ..engine.spec import RunSpec
from ..engine.worker import Restored, run_worker
from . import schedulers
from .options import SPEC_KEY, TuneOptions, hparams
from .spaces import SearchSpace
from .train_ray import torch_trainer

DRIVER_ONLY: dict[str, float] = {"cpu": 0, "memory": 1 << 20}


def trial_fn(config: dict[str, Any]) -> None:
    """Tune's function trainable: one worker (engine.worker.run_worker) reporting once per epoch, or an N-worker
    trial's TorchTrainer."""
    import contextlib

    import ray.tune

    meta = config[SPEC_KEY]
    spec = RunSpec.from_dict({**meta["spec"], "config": {**meta["spec"]["config"], **hparams(config)}})
    if meta["workers"] > 1:
        return _trial_data_parallel(spec, meta)
    trial_dir = ray.tune.get_context().get_trial_dir()  # [1] this trial's directory

    note: dict[str, Any] = {}  # Restored.record() of a fallback: kept in every result row of this attempt

    def report(metrics: dict[str, Any], ckpt_dir: str | None) -> None:
        from ray.tune import Checkpoint

        ray.tune.report({**metrics, **note},
                        checkpoint=Checkpoint.from_directory(ckpt_dir) if ckpt_dir else None)  # [3]

    # [2] resume after a crash (--max-failures), or continue an earlier attempt (ssl-ray tune --resume); the
    # trial's folder holds the record of a divergence, which a retry would repeat: it then fails at once
    resume = meta.get("resume") or {}
    ckpts = [ray.tune.get_checkpoint()] + ([ray.tune.Checkpoint(resume["checkpoint"])] if resume else [])
    with contextlib.ExitStack() as stack:
        shown: dict[str, str] = {}  # a local copy of a checkpoint in a bucket -> the checkpoint's own path

        def local(c) -> str:
            d = str(stack.enter_context(c.as_directory()))
            shown[d] = str(c.path)
            return d

        def restored(r: Restored) -> None:
            r = r.named(shown)
            if r.skipped:
                print(r.line(), file=sys.stderr, flush=True)
                note.update(r.record())

        folders = [trial_dir] + [local(c) for c in ckpts if c is not None]
        older = (local(c) for c in kept_before(resume["checkpoint"])) if resume else ()
        run_worker(spec, "cuda" if meta["gpus"] > 0 else "cpu", report, folders, threads=meta["cpus"],
                   gpus=meta["gpus"], log_dir=os.path.join(trial_dir, "tensorboard"), progress=False,
                   marker_dir=trial_dir, fallbacks=older, restored=restored)


def kept_before(path: str) -> list[Any]:
    """The checkpoints kept before the one at `path` in its trial's folder (local or in a bucket), newest first
    (ray.tune.Checkpoint each): what a resumed trial falls back to when that one cannot be loaded. Tune keeps the
    best-validation ones besides the latest (Kind.checkpoint_config); a folder numbered after `path` (written
    after the last result the experiment recorded, or cut short) is left out: the history a resume keeps ends at
    `path`'s epoch."""
    import re

    import pyarrow.fs as pafs
    import ray.tune

    c = ray.tune.Checkpoint(path)
    parent, name = c.path.rstrip("/").rsplit("/", 1)
    try:
        infos = c.filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
    except OSError:
        return []
    names = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and re.fullmatch(r"checkpoint_\d+", i.base_name) and i.base_name < name), reverse=True)
    return [ray.tune.Checkpoint(f"{parent}/{n}", filesystem=c.filesystem) for n in names]


def _trial_data_parallel(spec: RunSpec, meta: dict[str, Any]) -> None:
    """[4] An N-worker trial: a TorchTrainer launched inside the Tune trial (Train V2 + Tune interop)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_dir = ray.tune.get_context().get_trial_dir()
    # one Train run per plan entry: a resumed attempt finds its predecessor's run there and continues it
    trainer = torch_trainer(spec, log_dir=os.path.join(trial_dir, "tensorboard"), workers=meta["workers"],
                            cpus_per_worker=meta["cpus"], gpus_per_worker=meta["gpus"], progress=False,
                            name=f"train-{meta['index']:05d}", storage_path=meta["storage"],
                            max_failures=meta["max_failures"], callbacks=[TuneReportCallback()])
    trainer.fit()


def trial_meta(space: SearchSpace, o: TuneOptions, storage: str, *, seed: int, config: dict[str, Any],
               searched: list[str] | None = None) -> dict[str, Any]:
    """A trial's config entry SPEC_KEY: the run it trains (its searched values are the rest of the config) and
    the resources it runs on."""
    s = space.scheduler
    return {"spec": RunSpec(space.method, space.data, epochs=s.max_epochs, seed=seed,
                            config=config, amp=o.amp, compile=o.compile, data_resident=o.data_resident,
                            searched=list(searched or []),
                            checkpoint_every=schedulers.get(s.name).checkpoint_every(s)).to_dict(),
            "workers": o.workers, "cpus": o.cpus_per_trial, "gpus": o.gpus_per_trial,
            "storage": storage, "max_failures": o.max_failures}


def trial_resources(o: TuneOptions) -> dict[str, float]:
    """What Tune reserves for one trial."""
    if o.workers > 1:
        # The trial only drives its TorchTrainer, which reserves the workers' resources; a CPU-free bundle
        # (1 MiB of memory) keeps the trial from holding a CPU its own workers then wait for.
        return DRIVER_ONLY
    return {"cpu": o.cpus_per_trial, "gpu": o.gpus_per_trial or 0.0}  # decided by run_tune (trial_gpus)


def preflight_plan(space: SearchSpace, plan: list[dict[str, Any]], seed: int) -> None:
    """Build the method for every distinct planned configuration against the dataset's shape (no training):
    a config x dataset error is one line before any trial runs, not a traceback from inside a trial."""
    from .preflight import preflight

    seen = set()
    for hp in plan:
        key = json.dumps(hp, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            preflight(RunSpec(space.method, space.data, epochs=1, seed=seed, config={**space.fixed, **hp}))


