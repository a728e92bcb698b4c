"""An experiment's own files, and `--resume` rebuilt from them: nothing under --storage is ever unpickled.

What ssl-ray writes in <storage>/<name>/ (JSON, read back with json.loads only):
- ssl_ray_space.json: the validated search space, the options of the run, and the *plan*: every trial's
  hyperparameters, drawn once at the start from the space with --seed. A resume reads the method, dataset,
  space, scheduler and plan from here, never from the command line.
- ssl_ray_pbt.json (scheduler pbt only): every PBT exploit, which plan entry cloned which at which epochs, and
  the config before and after (tuning/schedulers/pbt.py).
- ssl_ray_trials.json: one record per Tune trial, written by the driver as trials start and end: the plan
  index it runs, its folder, its status (RUNNING, TERMINATED, ERROR), its hyperparameters (the last ones: PBT
  changes them as it runs), and, for a resumed trial, the checkpoint and epoch it continued from.
Ray Tune writes per trial folder: params.json, result.json (one JSON line per epoch), error.txt and
checkpoint_NNNNNN/state.pt (loaded with torch.load(weights_only=True)). Ray's own tuner.pkl, params.pkl,
error.pkl and experiment_state-*.json (which embeds cloudpickled objects) are never read by ssl-ray.

A resume starts a fresh Tune run of the plan's unfinished entries: each continues in a new Tune trial from
the last checkpoint of its previous attempt; finished entries (ran to the end, stopped by ASHA, errored) are
kept as they were and not run again. A PBT search cannot be resumed (resume_setup says why).
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from ..data import files as F
from ..errors import SSLRayError
from .options import TuneOptions, check_name, storage_root

SPACE_FILE, TRIALS_FILE = "ssl_ray_space.json", "ssl_ray_trials.json"
FINISHED = ("TERMINATED", "ERROR")
INTERRUPT = threading.Event()  # set by the driver's SIGINT handler (tune.py)


# ---- files, local or remote (pyarrow filesystems: local, s3://, gs://) ----------------------------------------
def fs_of(exp: str):
    import pyarrow.fs as pafs

    if "://" in exp:
        try:
            return pafs.FileSystem.from_uri(exp)
        except Exception as e:  # ArrowInvalid for an unknown scheme, OSError for a bad bucket...
            raise SSLRayError(f"cannot use storage {exp!r}: {str(e).splitlines()[0]}") from None
    return pafs.LocalFileSystem(), str(Path(exp).resolve())


def read_text(fs, path: str) -> str | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):  # nothing there (a path through a file holds nothing)
        return None
    except UnicodeDecodeError:
        raise SSLRayError(f"{path} is not UTF-8 text: not a file ssl-ray wrote") from None


def read_json(fs, path: str) -> Any:
    text = read_text(fs, path)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as e:
        raise SSLRayError(f"{path} is not valid JSON ({e}): the experiment's files are damaged") from None


def write_json(fs, path: str, doc: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with fs.open_output_stream(tmp) as f:
        f.write(json.dumps(doc, indent=1, default=str).encode())
    fs.move(tmp, path)  # complete files only, even if the driver dies mid-write


def make_dirs(fs, path: str) -> None:
    fs.create_dir(path, recursive=True)


# ---- the plan ---------------------------------------------------------------------------------------------
def plan_key(index: int) -> str:
    """A plan entry's key: what ASHA's rungs know a trial by (schedulers/asha), whichever Tune trial runs it."""
    return f"plan{index:05d}"


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
    """ssl_ray_trials.json of a local experiment folder, as read (None when it has none)."""
    f = base / TRIALS_FILE
    return F.read_json(f, "trial records") if f.exists() else None


def collect(exp: str, doc: dict[str, Any], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per plan index: its config (the planned one, or the last one its trial recorded: PBT mutates
    it), merged per-epoch history over its attempts, status, error, last checkpoint and folders. Status:
    TERMINATED/STOPPED/ERROR when finished (TERMINATED also when its last checkpoint is at max_epochs, whatever
    the record says), else INTERRUPTED."""
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
            hist = {e: r for e, r in hist.items() if e <= start}  # epochs after the checkpoint were run again
            rows = result_rows(fs, f"{d}/result.json")
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
    records = read_json(fs, f"{base}/{TRIALS_FILE}") or {}
    if not isinstance(records, dict):
        raise SSLRayError(f"{exp}/{TRIALS_FILE} is damaged (not a mapping)")
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


def resume_setup(method: str, given: dict[str, Any], storage: str | None, name: str | None):
    """The search space and TuneOptions of the experiment --storage/--name, from its own files. Options given
    on the command line (`given`: only those typed) must agree with it, except where and how fast it runs
    (RUNTIME_OPTIONS) and a larger --num-samples (an extension: more trials appended to the plan; the
    finished ones are kept as they were). Anything else is refused with one line, before any file is touched."""
    from .spaces import parse_space

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
    from . import schedulers

    kind = (doc.get("scheduler") or {}).get("name")
    if kind in schedulers.names(chosen_by_name=False):  # one it does not know: parse_space below says so
        schedulers.get(kind).refuse_resume(where)  # PBT, SHA and BOHB keep state Ray does not save

    def refuse(flag: str, typed: Any, saved: Any) -> SSLRayError:
        return SSLRayError(f"{flag} {typed} contradicts {where} (it has {saved}); a resume takes the experiment's "
                           f"own settings: leave {flag} out, or start a new experiment with another --name")

    text = json.dumps({k: doc.get(k) for k in ("method", "dataset", "fixed", "search", "scheduler", "num_samples",
                                               "searcher")})
    try:
        space = parse_space(text, source=f"{exp}/{SPACE_FILE}", method=method)
    except SSLRayError as e:
        raise SSLRayError(f"{exp}/{SPACE_FILE} is damaged or from another ssl-ray: {e}") from None
    saved_opts = doc.get("options") or {}
    for k, v in given.items():
        if k in RUNTIME_OPTIONS or v is None or v == ():
            continue
        if k in OPTION_FIELDS:
            if v != saved_opts.get(OPTION_FIELDS[k]):
                raise refuse(_flag(k), v, saved_opts.get(OPTION_FIELDS[k]))
        elif k == "host_data":
            if (not v) != saved_opts.get("data_resident", True):
                raise refuse("--no-resident-data", "", "data kept resident")
        elif k == "search":
            if v != (doc.get("searcher") or "random"):
                raise refuse("--search", v, f"searcher {doc.get('searcher') or 'random'}")
        elif k in SCHEDULER_FIELDS:
            if v != doc["scheduler"].get(SCHEDULER_FIELDS[k]):
                raise refuse(_flag(k), v, f"{SCHEDULER_FIELDS[k]} {doc['scheduler'].get(SCHEDULER_FIELDS[k])}")
        elif k == "num_samples":
            if v < doc["num_samples"]:
                raise refuse("--num-samples", v, f"num_samples {doc['num_samples']}; a resume can add samples, "
                             f"not remove them")
        elif k in DATA_FIELDS:
            if v != doc["dataset"].get(DATA_FIELDS[k]):
                raise refuse(_flag(k), v, f"dataset {DATA_FIELDS[k]} {doc['dataset'].get(DATA_FIELDS[k])}")
        elif k == "data_root":
            if str(Path(v).resolve()) != doc["dataset"].get("root"):
                raise refuse("--data-root", v, f"data root {doc['dataset'].get('root')}")
        elif k == "data_opts":
            from .. import config as C

            for key, val in C.parse_set(v).items():
                if doc["dataset"].get("options", {}).get(key) != val:
                    raise refuse("--data-opt", f"{key}={val}", f"options {doc['dataset'].get('options')}")
        elif k == "sets":
            from .. import config as C

            for key, val in C.parse_set(v).items():
                if key not in space.fixed or space.fixed[key] != val:
                    saved = f"{key}={space.fixed[key]}" if key in space.fixed else f"{key} searched or default"
                    raise refuse("--set", f"{key}={val}", saved)
        elif k == "space_file":
            from .spaces import load_space

            other = load_space(v, method=method)
            mine = {k2: {p.dist: p.args} for k2, p in other.search.items()}
            if mine != doc["search"] or any(space.fixed.get(k2) != v2 for k2, v2 in other.fixed.items()):
                raise refuse("--space", v, f"search {json.dumps(doc['search'])}, fixed {json.dumps(doc['fixed'])}")
        else:
            raise SSLRayError(f"{_flag(k)} cannot be given with --resume: {where} keeps its own")
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
    return space, opts


STORAGE_SCHEMES = ("file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def check_storage(storage: str) -> None:
    """--storage: a local folder or a URI pyarrow can open (checked by scheme, without a network call)."""
    if "://" in storage:
        scheme = storage.split("://", 1)[0].lower()
        if scheme not in STORAGE_SCHEMES:
            raise SSLRayError(f"--storage {storage!r}: unknown scheme {scheme!r}; use a local folder or one of "
                              f"{', '.join(s + '://' for s in STORAGE_SCHEMES)}")
