"""An experiment's own files, and `--resume` rebuilt from them: nothing under --storage is ever unpickled.

What ssl-ray writes in <storage>/<name>/ (JSON, read back with json.loads only):
- ssl_ray_space.json: the validated search space, the options of the run, and the *plan*: every trial's
  hyperparameters, drawn once at the start from the space with --seed. A resume reads the method, dataset,
  space, scheduler and plan from here, never from the command line.
- ssl_ray_pbt.json (scheduler pbt only): every PBT exploit, which plan entry cloned which at which epochs, and
  the config before and after (tuning/schedulers/pbt.py).
- ssl_ray_trials/<trial id>.json: one record per Tune trial, written by the driver as trials start and end (only
  that trial's file: records.py): the plan index it runs, its folder, its status (RUNNING, TERMINATED, ERROR), its
  hyperparameters (the last ones: PBT changes them as it runs), and, for a resumed trial, the checkpoint and epoch
  it continued from; all of them in ssl_ray_trials.json when a search ends. A trial's results not yet in the
  storage's result.json are in <trial>/ssl_ray_rows/ (one file per result).
Ray Tune writes per trial folder: params.json, result.json (one JSON line per epoch), error.txt and
checkpoint_NNNNNN/state.pt (loaded with torch.load(weights_only=True)). Ray's own tuner.pkl, params.pkl,
error.pkl and experiment_state-*.json (which embeds cloudpickled objects) are never read by ssl-ray.

A resume starts a fresh Tune run of the plan's unfinished entries: each continues in a new Tune trial from
the last checkpoint of its previous attempt; finished entries (ran to the end, stopped by ASHA, errored) are
kept as they were and not run again. A PBT search cannot be resumed (resume_setup says why).
"""
from __future__ import annotations

import dataclasses
import json
import os
import threading
from pathlib import Path
from typing import Any

from ..data import files as F
from ..errors import SSLRayError
from .options import TuneOptions, check_name, plan_key, storage_root
from .storage import fs_of, make_dirs, read_json, read_text, write_json

__all__ = ["FINISHED", "INTERRUPT", "SPACE_FILE", "TRIALS_FILE", "TRIAL_DIR", "check_storage", "collect", "fs_of",
           "load", "make_dirs", "make_plan", "plan_key", "read_json", "read_text", "result_rows", "resume_setup",
           "trial_folders", "write_json"]

SPACE_FILE, TRIALS_FILE = "ssl_ray_space.json", "ssl_ray_trials.json"
FINISHED = ("TERMINATED", "ERROR")
INTERRUPT = threading.Event()  # set by the driver's SIGINT handler (tune.py)


# ---- the plan ---------------------------------------------------------------------------------------------
def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def make_plan(space, seed: int, num_samples: int | None = None) -> list[dict[str, Any]]:
    """Every trial's hyperparameters, as Ray's BasicVariantGenerator would draw them (num_samples x grid),
    seeded: the same space, seed and num_samples give the same plan, and a larger num_samples extends it."""
    import numpy as np
    from ray.tune.search.variant_generator import generate_variants

    rng = np.random.RandomState(seed % (2 ** 32))
    plan = []
    for _ in range(num_samples or space.num_samples):
        for _, cfg in generate_variants(space.param_space(), random_state=rng):
            plan.append({k: _plain(v) for k, v in cfg.items()})
    return plan


# ---- reading an experiment back --------------------------------------------------------------------------
def result_rows(fs, path: str) -> list[dict[str, Any]]:
    """The rows of a trial's result.json (one JSON object per epoch; a line cut by a crash is skipped); [] when
    there is none. `fs`: a pyarrow filesystem, None for a local path. A local file is read as every file from a
    folder ssl-ray is given (data/files.read_bytes: a regular file, of bounded size)."""
    import pyarrow.fs as pafs

    if fs is None or isinstance(fs, pafs.LocalFileSystem):
        text = F.read_bytes(path, "trial record").decode("utf-8", "replace") if os.path.lexists(path) else None
    else:
        text = read_text(fs, path)
    rows = []
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut by a crash
        if isinstance(row, dict):
            rows.append(row)
    return rows


TRIAL_DIR = "trial_fn_{trial_id}_{index}"
"""A trial's folder in the experiment: <trainable>_<Tune's trial id>_<plan index> (hooks.trial_dirname)."""


def trial_folders(exp: str | Path, trial_id: str) -> list[Path]:
    """The folders of Tune trial `trial_id` in the local experiment `exp`: the one ssl_ray_trials.json records,
    else (an experiment without records) the folders named after it (TRIAL_DIR)."""
    base = Path(exp)
    records = load_records(base)
    rec = records.get(trial_id) if isinstance(records, dict) else None
    if isinstance(rec, dict) and isinstance(rec.get("dir"), str) and (base / rec["dir"]).is_dir():
        return [base / rec["dir"]]
    head = TRIAL_DIR.split("{trial_id}")[0]
    return sorted(d for d in base.iterdir() if d.is_dir() and d.name.startswith(f"{head}{trial_id}_"))


def load_records(base: Path) -> Any:
    """The trial records of a local experiment folder (records.load), None when it has none."""
    import pyarrow.fs as pafs

    from . import records as R

    try:
        return R.load(pafs.LocalFileSystem(), str(base)) or None
    except ValueError as e:
        raise SSLRayError(f"{base}: trial records damaged ({e})") from None


def collect(exp: str, doc: dict[str, Any], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per plan index: its config (the planned one, or the last one its trial recorded: PBT mutates
    it), merged per-epoch history over its attempts, status, error, last checkpoint and folders. Status:
    TERMINATED/STOPPED/ERROR when finished (TERMINATED also when its last checkpoint is at max_epochs, whatever
    the record says), else INTERRUPTED."""
    from . import records as R

    fs, base = fs_of(exp)
    max_epochs = int(doc["scheduler"]["max_epochs"])
    by_index: dict[int, list[tuple[str, dict]]] = {}
    for tid, rec in records.items():
        if isinstance(rec, dict) and isinstance(rec.get("index"), int):
            by_index.setdefault(rec["index"], []).append((tid, rec))
    out = []
    for i, hp in enumerate(doc["plan"]):
        attempts = by_index.get(i, [])
        hist: dict[int, dict] = {}
        ckpt, ckpt_epoch, error, seconds, status, path = None, 0, None, 0.0, None, None
        for tid, rec in attempts:
            d = f"{base}/{rec.get('dir')}"
            start = int((rec.get("resume") or {}).get("from_epoch", 0))
            rows = R.rows_of_trial(fs, d, result_rows(fs, f"{d}/result.json"),
                                   finished=rec.get("status") in FINISHED)  # completed from the row files
            if rows and isinstance(rows[0].get("epoch"), (int, float)):  # an older kept checkpoint was loaded when
                start = min(start, int(rows[0]["epoch"]) - 1)  # the named one could not be (worker.newest_loadable)
            hist = {e: r for e, r in hist.items() if e <= start}  # epochs after the checkpoint were run again
            for r in rows:
                if isinstance(r.get("epoch"), (int, float)):
                    hist[int(r["epoch"])] = r
                if r.get("checkpoint_dir_name") and isinstance(r.get("epoch"), (int, float)):
                    ckpt, ckpt_epoch = f"{d}/{r['checkpoint_dir_name']}", int(r["epoch"])
            if rows and isinstance(rows[-1].get("time_total_s"), (int, float)):
                seconds += rows[-1]["time_total_s"]
            status, path = rec.get("status"), d
            if isinstance(rec.get("config"), dict):
                hp = rec["config"]
            error = (read_text(fs, f"{d}/error.txt") or "").strip() or "error" if status == "ERROR" else None
        epochs = max(hist, default=0)
        if status == "TERMINATED":
            status = "TERMINATED" if epochs >= max_epochs else "STOPPED"
        elif status != "ERROR":
            # a trial that saved its last epoch's checkpoint and was cut off before Tune recorded its end (a
            # Ctrl-C in between) has finished: there is nothing left to run, and a resumed trial with no epoch to
            # run would report nothing (Tune then fails it for the missing metric)
            status = "TERMINATED" if ckpt is not None and ckpt_epoch >= max_epochs else "INTERRUPTED"
        out.append({"index": i, "trial_id": attempts[0][0] if attempts else plan_key(i), "config": hp,
                    "history": [hist[e] for e in sorted(hist)], "status": status, "error": error,
                    "checkpoint": ckpt, "checkpoint_epoch": ckpt_epoch, "seconds": seconds, "path": path})
    return out


def load(exp: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The saved space document and the trial records of the experiment at `exp`."""
    fs, base = fs_of(exp)
    doc = read_json(fs, f"{base}/{SPACE_FILE}")
    if doc is None:
        raise SSLRayError(f"nothing to resume at {exp}: no {SPACE_FILE} there (check --storage and --name; "
                          f"experiments made before ssl-ray kept a plan cannot be resumed)")
    if not isinstance(doc, dict) or not isinstance(doc.get("plan"), list) or "method" not in doc:
        raise SSLRayError(f"{exp}/{SPACE_FILE} has no trial plan: made by an older ssl-ray, or damaged; "
                          f"it cannot be resumed")
    from . import records as R

    try:
        records = R.load(fs, base)
    except ValueError:
        raise SSLRayError(f"{exp}/{TRIALS_FILE} is damaged (not a mapping)") from None
    return doc, records


# ---- --resume: the experiment's settings, checked against the command line ------------------------------------
RUNTIME_OPTIONS = {"address", "max_concurrent", "max_failures", "confirm_seeds", "as_json", "quiet", "storage",
                   "name", "resume", "download", "mlflow", "wandb", "wait_for_resources"}
"""Options a resume may change: where and how fast it runs, not what it computes."""
OPTION_FIELDS = {"cpus_per_trial": "cpus_per_trial", "gpus_per_trial": "gpus_per_trial", "workers": "workers",
                 "seed": "seed", "amp": "amp", "compile_": "compile"}
SCHEDULER_FIELDS = {"scheduler": "name", "max_epochs": "max_epochs", "grace_epochs": "grace_epochs",
                    "reduction_factor": "reduction_factor", "perturbation_interval": "perturbation_interval"}
DATA_FIELDS = {"dataset": "name", "labels": "labels", "val_size": "val_size", "val_per_label": "val_per_label"}


def _flag(name: str) -> str:
    return "--" + name.rstrip("_").replace("_", "-")


def resume_setup(method: str, given: dict[str, Any], storage: str | None, name: str | None,
                 typed_space: Any = None):
    """The search space and TuneOptions of the experiment --storage/--name, from its own files. Options given
    on the command line (`given`: only those typed) must agree with it, except where and how fast it runs
    (RUNTIME_OPTIONS) and a larger --num-samples (an extension: more trials appended to the plan; the
    finished ones are kept as they were). Anything else is refused with one line, before any file is touched.
    typed_space: with a --space typed (`given["space_file"]`), the space that command line composes (the file,
    --set, the data, scheduler and search options: what the original command ran), compared part by part."""
    from .spaces import parse_space

    root, exp, doc = _saved_experiment(method, storage, name)
    text = json.dumps({k: doc.get(k) for k in ("method", "dataset", "fixed", "search", "scheduler", "num_samples",
                                               "searcher")})
    try:
        space = parse_space(text, source=f"{exp}/{SPACE_FILE}", method=method)
    except SSLRayError as e:
        raise SSLRayError(f"{exp}/{SPACE_FILE} is damaged or from another ssl-ray: {e}") from None
    saved = _Saved(doc, space, f"the experiment at {exp}", given, typed_space)
    for k, v in given.items():
        if k not in RUNTIME_OPTIONS and v is not None and v != ():
            saved.check(k, v)
    return space, _resumed_options(doc, given, space, root, name)


def _saved_experiment(method: str, storage: str | None, name: str | None) -> tuple[str, str, dict[str, Any]]:
    """(storage root, experiment, its ssl_ray_space.json) of the experiment to resume, refused when it is another
    method's or its scheduler keeps state Ray does not save."""
    from . import schedulers

    if not name:
        raise SSLRayError("--resume needs --name: the experiment to continue (a folder inside --storage)")
    check_name(name)
    root = storage_root(storage)
    exp = root.rstrip("/") + "/" + name
    doc, _ = load(exp)
    where = f"the experiment at {exp}"
    if method != doc["method"]:
        raise SSLRayError(f"{where} is a {doc['method']} search, not {method}: resume it with "
                          f"`ssl-ray tune {doc['method']} --name {name} --resume`")
    kind = (doc.get("scheduler") or {}).get("name")
    if kind in schedulers.names(chosen_by_name=False):  # one it does not know: parse_space says so
        schedulers.get(kind).refuse_resume(where)  # PBT, SHA and BOHB keep state Ray does not save
    return root, exp, doc


class _Saved:
    """A saved experiment's settings, against which each option typed with --resume is checked."""

    def __init__(self, doc: dict[str, Any], space: Any, where: str, given: dict[str, Any], typed_space: Any = None):
        self.doc, self.space, self.where, self.given = doc, space, where, given
        self.typed_space = typed_space
        self.opts = doc.get("options") or {}

    def refuse(self, flag: str, typed: Any, saved: Any) -> SSLRayError:
        return SSLRayError(f"{flag} {typed} contradicts {self.where} (it has {saved}); a resume takes the "
                           f"experiment's own settings: leave {flag} out, or start a new experiment with another "
                           f"--name")

    def check(self, k: str, v: Any) -> None:
        """Option `k` typed as `v` agrees with the experiment, or one line says what it has."""
        doc = self.doc
        if k in OPTION_FIELDS:
            if v != self.opts.get(OPTION_FIELDS[k]):
                raise self.refuse(_flag(k), v, self.opts.get(OPTION_FIELDS[k]))
        elif k == "host_data":
            if (not v) != self.opts.get("data_resident", True):
                raise self.refuse("--no-resident-data", "", "data kept resident")
        elif k == "search":
            if v != (doc.get("searcher") or "random"):
                raise self.refuse("--search", v, f"searcher {doc.get('searcher') or 'random'}")
        elif k in SCHEDULER_FIELDS:
            if v != doc["scheduler"].get(SCHEDULER_FIELDS[k]):
                raise self.refuse(_flag(k), v, f"{SCHEDULER_FIELDS[k]} {doc['scheduler'].get(SCHEDULER_FIELDS[k])}")
        elif k == "num_samples":
            if v < doc["num_samples"]:
                raise self.refuse("--num-samples", v, f"num_samples {doc['num_samples']}; a resume can add "
                                  f"samples, not remove them")
        elif k in DATA_FIELDS or k in ("data_root", "data_opts"):
            self.check_data(k, v)
        elif k in ("sets", "space_file"):
            self.check_space(k, v)
        else:
            raise SSLRayError(f"{_flag(k)} cannot be given with --resume: {self.where} keeps its own")

    def check_data(self, k: str, v: Any) -> None:
        from .. import config as C

        data = self.doc["dataset"]
        if k in DATA_FIELDS:
            if v != data.get(DATA_FIELDS[k]):
                raise self.refuse(_flag(k), v, f"dataset {DATA_FIELDS[k]} {data.get(DATA_FIELDS[k])}")
        elif k == "data_root":
            if str(Path(v).resolve()) != data.get("root"):
                raise self.refuse("--data-root", v, f"data root {data.get('root')}")
        else:
            for key, val in C.parse_set(v).items():
                if data.get("options", {}).get(key) != val:
                    raise self.refuse("--data-opt", f"{key}={val}", f"options {data.get('options')}")

    def check_space(self, k: str, v: Any) -> None:
        from .. import config as C
        from .spaces import space_contradiction

        fixed = self.space.fixed
        if k == "sets":
            for key, val in C.parse_set(v).items():
                if key not in fixed or fixed[key] != val:
                    saved = f"{key}={fixed[key]}" if key in fixed else f"{key} searched or default"
                    raise self.refuse("--set", f"{key}={val}", saved)
            return
        other = self.typed_space
        if other is None:
            raise SSLRayError(f"--space {v} with --resume: the caller must hand the space it composed "
                              f"(resume_setup's typed_space)")
        if self.given.get("num_samples") is not None:  # a larger --num-samples extends: check() judges it
            other = dataclasses.replace(other, num_samples=self.space.num_samples)  # the caller's stays as typed
        diff = space_contradiction(self.space, other)  # every part: data, fixed, search, scheduler, samples
        if diff:
            raise self.refuse("--space", v, diff)


def _resumed_options(doc: dict[str, Any], given: dict[str, Any], space: Any, root: str, name: str | None
                     ) -> TuneOptions:
    """The saved options, with what a resume may change (RUNTIME_OPTIONS, a larger --num-samples) as typed."""
    saved_opts = doc.get("options") or {}
    opts = TuneOptions(**{k: v for k, v in saved_opts.items() if k in TuneOptions.__dataclass_fields__})
    opts.storage, opts.name, opts.resume = root, name, True
    for k in ("address", "max_concurrent", "max_failures", "confirm_seeds", "mlflow", "wandb", "wait_for_resources"):
        if given.get(k) is not None:
            setattr(opts, k, given[k])
    if given.get("quiet"):
        opts.progress = False
    if given.get("num_samples") and given["num_samples"] > doc["num_samples"]:
        opts.num_samples = space.num_samples = given["num_samples"]
    else:
        opts.num_samples = space.num_samples
    return opts


STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_storage(storage: str) -> None:
    """--storage: a local folder or a URI pyarrow can open (checked by scheme, without a network call)."""
    if "://" in storage:
        scheme = storage.split("://", 1)[0].lower()
        if scheme not in STORAGE_SCHEMES:
            raise SSLRayError(f"--storage {storage!r}: unknown scheme {scheme!r}; use a local folder or one of "
                              f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}")
