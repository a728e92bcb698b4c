"""ssl_ray/tuning/records.py (issue 29): trial records and result rows at a cost per event that does not grow with
the experiment, crash-safe, and read back as the whole-experiment ssl_ray_trials.json of before was. Real files
on disk, through pyarrow filesystems; a counting filesystem (a pyarrow FileSystemHandler over the local one)
measures what each event writes."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from ssl_ray.tuning import records as R


class _Counter:
    """A writable file that counts the bytes written through it."""

    def __init__(self, inner, owner):
        self.inner, self.owner, self.closed = inner, owner, False

    def write(self, data):
        self.owner.bytes += len(data)
        return self.inner.write(data)

    def flush(self):
        pass

    def close(self):
        if not self.closed:
            self.inner.close()
            self.closed = True


class CountingHandler(pafs.FileSystemHandler):
    """The local filesystem, counting every request that writes (open for writing, move, create_dir, delete) and
    the bytes written."""

    def __init__(self):
        self.fs = pafs.LocalFileSystem()
        self.requests = self.bytes = self.opens = 0

    def reset(self):
        self.requests = self.bytes = self.opens = 0

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return path

    def equals(self, other):
        return other is self

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.requests += 1
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.requests += 1
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        self.requests += 1
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.requests += 1
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        self.requests += 1
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self.requests += 1
        self.opens += 1
        return pa.PythonFile(_Counter(self.fs.open_output_stream(path), self), mode="w")

    def open_append_stream(self, path, metadata):
        raise NotImplementedError


@pytest.fixture
def counted():
    h = CountingHandler()
    return pafs.PyFileSystem(h), h


def _record(i: int, status: str) -> dict:
    """A record as hooks.TrialRecorder makes it."""
    return {"index": i, "resume": None, "dir": f"trial_fn_t{i:05d}_{i}", "status": status,
            "config": {"lr": 1e-3 * (1 + i), "batch_size": 32}}


def _events(n: int) -> list[tuple[str, dict]]:
    """The record updates of a search of n trials: each starts RUNNING, then ends TERMINATED (every third ERROR),
    interleaved as trials overlap (two running at a time); one trial's config changes while it runs (PBT)."""
    out, config = [], {}

    def rec(i: int, status: str) -> dict:
        return {**_record(i, status), **({"config": config[i]} if i in config else {})}

    for i in range(n):
        out.append((f"t{i:05d}", rec(i, "RUNNING")))
        if i == 1:
            config[i] = {"lr": 0.5, "batch_size": 32}
            out.append((f"t{i:05d}", rec(i, "RUNNING")))
        if i >= 1:
            j = i - 1
            out.append((f"t{j:05d}", rec(j, "ERROR" if j % 3 == 2 else "TERMINATED")))
    out.append((f"t{n - 1:05d}", rec(n - 1, "TERMINATED")))
    return out


def _old_format(events) -> dict:
    """What the whole-experiment file of before held after these events (the dict it rewrote at each one)."""
    recs: dict = {}
    for tid, rec in events:
        recs[tid] = rec
    return json.loads(json.dumps(recs, indent=1, default=str))


def test_a_status_change_writes_one_small_file_whatever_the_number_of_trials(tmp_path, counted):
    fs, h = counted
    store = R.RecordStore(fs, str(tmp_path / "exp"))
    costs = []
    for k, (tid, rec) in enumerate(_events(300)):
        h.reset()
        store.put(tid, rec)
        costs.append((h.requests, h.bytes, h.opens))
    # the first put also makes the folder; every later one is one file written (temporary name + rename)
    assert costs[0][0] == 3 and all(c[0] == 2 and c[2] == 1 for c in costs[1:])
    first, last = costs[1][1], costs[-1][1]
    assert 100 < first < 400 and abs(last - first) <= 10  # bytes: one record, not all of them
    assert sum(c[1] for c in costs) < 300 * 3 * 400
    assert not (tmp_path / "exp" / R.LEGACY_FILE).exists()  # nothing rewrites the whole until compact
    files = sorted(p.name for p in (tmp_path / "exp" / R.RECORDS_DIR).iterdir())
    assert files == sorted(f"t{i:05d}.json" for i in range(300))


def test_replay_gives_the_records_the_whole_file_held(tmp_path):
    fs = pafs.LocalFileSystem()
    events = _events(40)
    expected = _old_format(events)
    store = R.RecordStore(fs, str(tmp_path / "new"))
    for tid, rec in events:
        store.put(tid, rec)
    # a driver killed before the search ended (no compact): the per-trial files are all there is
    assert R.load(fs, str(tmp_path / "new")) == expected
    assert expected["t00001"]["config"]["lr"] == 0.5 and expected["t00002"]["status"] == "ERROR"
    # the search ended: one whole-experiment file, in the old format, equal to what the old code left
    store.compact()
    assert json.loads((tmp_path / "new" / R.LEGACY_FILE).read_text()) == expected
    assert R.load(fs, str(tmp_path / "new")) == expected
    # an experiment written before the per-trial files (only the whole file) reads the same
    old = tmp_path / "old"
    old.mkdir()
    (old / R.LEGACY_FILE).write_text(json.dumps(expected, indent=1))
    assert R.load(fs, str(old)) == expected
    assert R.load(fs, str(tmp_path / "nothing")) == {}


def test_resumed_experiment_overlays_the_newer_per_trial_records(tmp_path):
    """A resume loads the compacted file, then its trials' files change: the newer per-trial record wins."""
    fs = pafs.LocalFileSystem()
    base = str(tmp_path / "exp")
    first = R.RecordStore(fs, base)
    for tid, rec in _events(6):
        first.put(tid, rec)
    first.compact()
    loaded = R.load(fs, base)
    second = R.RecordStore(fs, base, loaded)
    assert second.records is loaded  # the caller's dict is the one kept up to date
    second.put("t00003", {**_record(3, "RUNNING"), "resume": {"checkpoint": "c", "from_epoch": 2}})
    second.put("u00000", _record(7, "RUNNING"))
    got = R.load(fs, base)
    assert got["t00003"]["resume"] == {"checkpoint": "c", "from_epoch": 2} and got["t00003"]["status"] == "RUNNING"
    assert got["u00000"]["index"] == 7 and got["t00000"]["status"] == "TERMINATED" and len(got) == 7


def test_a_half_written_record_is_ignored_and_the_others_stand(tmp_path):
    fs = pafs.LocalFileSystem()
    base = tmp_path / "exp"
    store = R.RecordStore(fs, str(base))
    for tid, rec in _events(5):
        store.put(tid, rec)
    folder = base / R.RECORDS_DIR
    full = (folder / "t00002.json").read_bytes()
    # a writer killed mid-write leaves its temporary file; a copy cut short (a filesystem without atomic
    # rename) leaves a truncated record
    (folder / f"t00009.json{R._TMP}4242").write_bytes(full[: len(full) // 2])
    (folder / "t00002.json").write_bytes(full[: len(full) // 2])
    (folder / "t00003.json").write_bytes(b"")
    got = R.load(fs, str(base))
    assert set(got) == {"t00000", "t00001", "t00004"}
    assert got == {k: v for k, v in _old_format(_events(5)).items() if k in got}


def test_a_damaged_whole_experiment_file_is_an_error(tmp_path):
    fs = pafs.LocalFileSystem()
    (tmp_path / R.LEGACY_FILE).write_text("[1, 2]")
    with pytest.raises(ValueError, match="damaged"):
        R.load(fs, str(tmp_path))
    (tmp_path / R.LEGACY_FILE).write_text('{"t1": {"index": 0, "sta')
    with pytest.raises(ValueError, match="damaged"):
        R.load(fs, str(tmp_path))


def test_trial_ids_that_are_not_plain_names_get_a_digest_file_and_read_back(tmp_path):
    fs = pafs.LocalFileSystem()
    store = R.RecordStore(fs, str(tmp_path))
    odd = "../x/y z"
    store.put(odd, _record(0, "RUNNING"))
    (name,) = [p.name for p in (tmp_path / R.RECORDS_DIR).iterdir()]
    assert name.startswith("id-") and "/" not in name and ".." not in name
    assert R.load(fs, str(tmp_path)) == {odd: _record(0, "RUNNING")}
    assert not (tmp_path / "x").exists()


def _row(it: int, **extra) -> dict:
    return {"training_iteration": it, "epoch": it, "val_error": 50.0 - it, "time_total_s": 0.1 * it,
            "config": {"lr": 0.001}, **extra}


def test_a_result_costs_one_small_file_whatever_the_epoch(tmp_path, counted):
    fs, h = counted
    trial = str(tmp_path / "exp" / "trial_fn_a_0")
    made: set = set()
    costs = []
    for it in range(1, 201):
        h.reset()
        R.put_row(fs, trial, _row(it), made=made)
        costs.append((h.requests, h.bytes))
    assert costs[0][0] == 3 and all(c[0] == 2 for c in costs[1:])  # folder once; then file + rename
    assert abs(costs[-1][1] - costs[1][1]) <= 12  # the 200th result costs what the 2nd did (a few digits more)
    assert [r["epoch"] for r in R.read_rows(fs, trial)] == list(range(1, 201))


def test_rows_complete_a_lagging_result_json_and_a_cut_row_is_skipped(tmp_path):
    fs = pafs.LocalFileSystem()
    trial = tmp_path / "trial"
    for it in range(1, 6):
        R.put_row(fs, str(trial), _row(it))
    lagging = [_row(1, source="result.json"), _row(2, source="result.json"), _row(3, source="result.json")]
    merged = R.rows_of_trial(fs, str(trial), lagging, finished=False)
    assert [r["training_iteration"] for r in merged] == [1, 2, 3, 4, 5]
    assert [r.get("source") for r in merged] == ["result.json"] * 3 + [None, None]  # result.json wins where both
    # a finished trial's result.json is complete: the row files are not read
    assert R.rows_of_trial(fs, str(trial), lagging, finished=True) == lagging
    # a row file cut short is skipped; a leftover temporary file is not read
    cut = trial / R.ROWS_DIR / R.row_file(5)
    cut.write_bytes(cut.read_bytes()[:20])
    (trial / R.ROWS_DIR / (R.row_file(6) + f"{R._TMP}77")).write_text(json.dumps(_row(6)))
    assert [r["training_iteration"] for r in R.read_rows(fs, str(trial))] == [1, 2, 3, 4]
    # no row files at all (an experiment from before them): result.json's rows as they are
    assert R.rows_of_trial(fs, str(tmp_path / "other"), lagging, finished=False) == lagging
    # rows without an iteration number stay first, in their order
    loose = [{"epoch": 0, "note": "a"}, {"epoch": 0, "note": "b"}]
    assert R.merge_rows(loose + lagging[:1], [_row(2)])[:2] == loose


def test_on_an_object_store_a_record_is_one_put_without_a_rename(tmp_path):
    """s3/gcs: a PUT is atomic and a rename is a copy plus a delete, so the record is written directly."""

    class ObjectStore:
        type_name = "s3"

        def __init__(self):
            self.local, self.calls = pafs.LocalFileSystem(), []

        def create_dir(self, path, recursive=True):
            self.calls.append("create_dir")
            self.local.create_dir(path, recursive=recursive)

        def open_output_stream(self, path):
            self.calls.append(("put", Path(path).name))
            return self.local.open_output_stream(path)

        def move(self, src, dest):
            self.calls.append("move")
            self.local.move(src, dest)

    fs = ObjectStore()
    store = R.RecordStore(fs, str(tmp_path))
    store.put("t1", _record(0, "RUNNING"))
    store.put("t1", _record(0, "TERMINATED"))
    assert fs.calls == ["create_dir", ("put", "t1.json"), ("put", "t1.json")]
    assert R.load(pafs.LocalFileSystem(), str(tmp_path)) == {"t1": _record(0, "TERMINATED")}
