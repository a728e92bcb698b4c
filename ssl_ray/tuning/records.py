"""An experiment's trial records and result rows, written at a cost that does not grow with the experiment
(issue 29). Plain JSON, read back with json.loads only; any pyarrow filesystem (local folder, s3://, gs://).

What the driver writes, per event, in <storage>/<name>/:
- ssl_ray_trials/<trial id>.json: one Tune trial's record (plan index, folder, status, hyperparameters, the
  checkpoint a resumed trial continued from), rewritten whole, and only when *that* trial's record changes. A
  status change costs one file of a few hundred bytes whatever the number of trials (the whole-experiment
  ssl_ray_trials.json rewritten at every change cost O(trials) bytes, O(trials^2) over a search).
- <trial folder>/ssl_ray_rows/<iteration>.json: one reported result (the row Tune's JSON logger appends to the
  trial's result.json on the driver), written as it arrives. A driver killed at any moment leaves every finished
  epoch in the storage without copying the whole result.json at each result (O(epochs) bytes per result,
  O(epochs^2) per trial). The complete result.json is still copied once when the trial ends, fails or restarts.
- ssl_ray_trials.json: the whole-experiment file of before, written once when a search ends (`compact`), so
  readers of the old format keep working and a finished experiment is read back in one request.

Each file is complete or absent: on a local or shared folder it is written under a temporary name and renamed
(a driver killed mid-write leaves a `.tmp` file, never read); an object store's PUT is atomic by itself. A record
or row file that is nevertheless not valid JSON (a copy cut short, a hand edit) is skipped, not fatal: the other
trials' records stand, and a trial without one is run again on --resume.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Iterable

RECORDS_DIR = "ssl_ray_trials"
LEGACY_FILE = "ssl_ray_trials.json"  # = experiment.TRIALS_FILE
ROWS_DIR = "ssl_ray_rows"
ROW_KEY = "training_iteration"  # Tune's count of a trial's results, continued after a restore
_SAFE = re.compile(r"[A-Za-z0-9_-]{1,100}")
_TMP = ".tmp"


# ---- files ------------------------------------------------------------------------------------------------
def _local(fs) -> bool:
    """A filesystem where a rename is cheap and atomic (local, NFS; a SubTreeFileSystem over one): write there
    under a temporary name first. Object stores (s3, gcs, ...) make a PUT visible whole or not at all, and their
    "rename" is a copy plus a delete: write there directly."""
    return getattr(fs, "type_name", "local") not in ("s3", "gcs", "abfs")


def write_bytes(fs, path: str, data: bytes) -> None:
    """`data` at `path`, whole or not at all (see `_local`)."""
    if not _local(fs):
        with fs.open_output_stream(path) as f:
            f.write(data)
        return
    tmp = f"{path}{_TMP}{os.getpid()}"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def _read(fs, path: str) -> bytes | None:
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None


def _json_files(fs, folder: str) -> list[str]:
    """The complete `*.json` files directly in `folder` (temporary files left by a killed writer excluded)."""
    import pyarrow.fs as pafs

    try:
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".json")
                  and _TMP not in i.base_name)


def _loads(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None  # cut short or damaged: skipped


def _dumps(doc: Any, indent: int | None = None) -> bytes:
    return json.dumps(doc, indent=indent, default=str).encode()


# ---- trial records ---------------------------------------------------------------------------------------
def file_name(trial_id: str) -> str:
    """A trial's record file name: its id where that is a plain name (Tune's ids are), else a digest of it (the
    id itself is inside the file)."""
    tid = str(trial_id)
    return f"{tid}.json" if _SAFE.fullmatch(tid) else f"id-{hashlib.sha1(tid.encode()).hexdigest()}.json"


class RecordStore:
    """The records of one experiment's trials, in memory (`records`, shared with the caller: trial id -> record)
    and in the storage, one file per trial. `put` costs one small write whatever the number of trials."""

    def __init__(self, fs, base: str, records: dict[str, dict[str, Any]] | None = None):
        self.fs, self.base = fs, base.rstrip("/")
        self.records: dict[str, dict[str, Any]] = records if records is not None else {}
        self._dir_made = False
        self.writes = 0  # files written (tests, benchmarks)

    @property
    def folder(self) -> str:
        return f"{self.base}/{RECORDS_DIR}"

    def put(self, trial_id: str, rec: dict[str, Any]) -> None:
        """Set trial `trial_id`'s record and write its file (only its own)."""
        self.records[trial_id] = rec
        if not self._dir_made:
            self.fs.create_dir(self.folder, recursive=True)
            self._dir_made = True
        write_bytes(self.fs, f"{self.folder}/{file_name(trial_id)}", _dumps({"trial_id": trial_id, **rec}))
        self.writes += 1

    def compact(self) -> None:
        """Write every record into the whole-experiment file (once, when a search ends)."""
        write_bytes(self.fs, f"{self.base}/{LEGACY_FILE}", _dumps(self.records, indent=1))
        self.writes += 1


def load(fs, base: str) -> dict[str, dict[str, Any]]:
    """Every trial's record of the experiment at `base`: the whole-experiment file (written when a search ends,
    or by an ssl-ray from before the per-trial files), overlaid with the per-trial files (the newer: they are
    written at every change, and are all there is when the driver was killed). {} when there is neither.
    Raises ValueError when the whole-experiment file exists but is not a JSON object of records."""
    base = base.rstrip("/")
    out: dict[str, dict[str, Any]] = {}
    data = _read(fs, f"{base}/{LEGACY_FILE}")
    if data is not None:
        doc = _loads(data)
        if not isinstance(doc, dict):
            raise ValueError(f"{base}/{LEGACY_FILE} is damaged (not a JSON object of trial records)")
        out.update({k: v for k, v in doc.items() if isinstance(v, dict)})
    for path in _json_files(fs, f"{base}/{RECORDS_DIR}"):
        rec = _loads(_read(fs, path))
        if isinstance(rec, dict) and isinstance(rec.get("trial_id"), str):
            tid = rec.pop("trial_id")
            out[tid] = rec
    return out


# ---- result rows -----------------------------------------------------------------------------------------
def row_file(iteration: int) -> str:
    return f"{int(iteration):08d}.json"


def put_row(fs, trial_dir: str, row: dict[str, Any], *, made: set[str] | None = None) -> None:
    """Write one reported result of the trial whose folder in the storage is `trial_dir` (its own file, named
    after the result's training_iteration). `made`: folders already created (saves a request per result)."""
    folder = f"{trial_dir.rstrip('/')}/{ROWS_DIR}"
    if made is None or folder not in made:
        fs.create_dir(folder, recursive=True)
        if made is not None:
            made.add(folder)
    write_bytes(fs, f"{folder}/{row_file(row.get(ROW_KEY, 0))}", _dumps(row))


def read_rows(fs, trial_dir: str) -> list[dict[str, Any]]:
    """The row files of one trial, in iteration order (damaged ones skipped)."""
    rows = [_loads(_read(fs, p)) for p in _json_files(fs, f"{trial_dir.rstrip('/')}/{ROWS_DIR}")]
    return sorted((r for r in rows if isinstance(r, dict)), key=_iteration)


def _iteration(row: dict[str, Any]) -> float:
    it = row.get(ROW_KEY)
    return float(it) if isinstance(it, (int, float)) and not isinstance(it, bool) else -1.0


def merge_rows(result_rows: Iterable[dict[str, Any]], extra: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """result.json's rows completed with the row files' (`extra`): a row file fills in an iteration result.json
    lacks (the copy in the storage lags when the driver was killed); result.json's own row wins where both have
    it. Rows without an iteration number are kept in their place, before the numbered ones."""
    loose, numbered = [], {}
    for r in result_rows:
        it = _iteration(r)
        if it < 0:
            loose.append(r)
        else:
            numbered[it] = r
    for r in extra:
        it = _iteration(r)
        if it >= 0 and it not in numbered:
            numbered[it] = r
    return loose + [numbered[k] for k in sorted(numbered)]


def rows_of_trial(fs, trial_dir: str, result_rows: list[dict[str, Any]], finished: bool) -> list[dict[str, Any]]:
    """What a reader takes as a trial's results: result.json's rows, completed from the row files unless the
    trial's record says it finished (its complete result.json was copied before that record was written, so the
    row files add nothing: one request saved per finished trial)."""
    return result_rows if finished else merge_rows(result_rows, read_rows(fs, trial_dir))
