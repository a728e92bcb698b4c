"""Hostile and broken files given to export, predict, report and the own-data datasets (issue 30): each gets one
line and exit 2, or a documented behaviour; nothing hangs, nothing is unpickled, nothing outside the folder given
is read, and the memory-hungry ones are refused under a virtual-memory cap (`ulimit -v`) in a subprocess.

Real files throughout: two runs trained here (digits images, and a CSV table), real FIFOs, real /proc."""
import json
import os
import pickle
import resource
import shutil
import stat
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from ssl_ray.cli import main
from ssl_ray.data import DataSpec, load_splits
from ssl_ray.errors import DataError, SSLRayError


def _one_line_error(r, needle):
    """exit 2, no traceback, and the error is a single line containing `needle`."""
    assert r.exit_code == 2, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert needle in lines[0], r.output


def _blobs(n=300, seed=0):
    from sklearn.datasets import make_blobs

    x, y = make_blobs(n_samples=n, centers=3, n_features=4, cluster_std=1.0, random_state=seed)
    return x.astype(np.float32), np.array(["setosa", "versicolor", "virginica"])[y]


def _png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header of width x height 8-bit grey pixels and a few rows of data: what a decoder would
    allocate is decided by the header alone (20000 x 20000: 400 MB in grey, 1.2 GB as RGB)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    return path


def _npy_header(shape, dtype="<f8") -> bytes:
    """An .npy header declaring `shape` (followed by no data)."""
    head = repr({"descr": dtype, "fortran_order": False, "shape": tuple(shape)}).encode()
    head += b" " * (63 - (len(head) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(head)) + head


def _npz_declaring(path: Path, shape, members=("x",)) -> Path:
    """An .npz whose members' headers declare `shape` of float64 but hold 16 bytes of data."""
    import zipfile

    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for m in members:
            z.writestr(f"{m}.npy", _npy_header(shape) + b"\0" * 16)
    return path


def _returns_within(fn, seconds=60.0):
    """Run fn() in a daemon thread; its result or exception, failing the test if it has not returned in time (a
    reader blocked on a FIFO is left behind in the daemon thread, not in the test run)."""
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still blocked after {seconds} s"
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---- two real runs: digits images, and a CSV table -------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """`ssl-ray train` on digits and on a CSV (its label column named `species`), each exported (model.pt)."""
    import pandas as pd

    from ssl_ray.export import export

    tmp = tmp_path_factory.mktemp("runs")
    x, y = _blobs()
    df = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    df["species"] = y
    df.to_csv(tmp / "table.csv", index=False)
    out = {}
    for name, args in (("digits", []), ("csv", ["--dataset", "csv", "--data-opt", f"path={tmp / 'table.csv'}",
                                                 "--data-opt", "label=species", "--labels", "9"])):
        r = CliRunner().invoke(main, ["train", "supervised", "--epochs", "1", "--set", "steps_per_epoch=2",
                                      "--output", str(tmp / name), "--json", *args])
        assert r.exit_code == 0, r.output
        export(str(tmp / name), output=str(tmp / f"{name}-model"), torchscript=False)
        out[name] = tmp / name
        out[f"{name}-model"] = tmp / f"{name}-model"
    out["table"] = tmp / "table.csv"
    return out


# ---- export reads only the folder it is given -----------------------------------------------------------------
def _first_weight(state: dict) -> tuple[str, torch.Tensor]:
    modules = state["method"]["modules"]
    net = next(iter(modules.values()))
    k = next(k for k, v in net.items() if v.is_floating_point() and v.ndim > 1)
    return k, net[k]


def test_export_of_a_copied_run_uses_its_own_checkpoint_not_the_stored_path(runs, tmp_path):
    """result.json holds the absolute path of the run's checkpoint; a copy of the folder exports the copy's
    weights, even when the original folder's checkpoint has changed since (here: another run's weights)."""
    from ssl_ray.engine import checkpoint
    from ssl_ray.export import export

    original = tmp_path / "original"
    shutil.copytree(runs["digits"], original)
    res = json.loads((original / "result.json").read_text())
    res["output"], res["checkpoint"] = str(original), str(original / "checkpoint")  # as train writes it there
    (original / "result.json").write_text(json.dumps(res))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    state = checkpoint.load(original / "checkpoint")
    k, w = _first_weight(state)
    other = {**state, "method": {**state["method"], "modules": {
        name: {kk: (vv + 1.0 if kk == k else vv) for kk, vv in mod.items()}
        for name, mod in state["method"]["modules"].items()}}}
    checkpoint.save(original / "checkpoint", other)  # the original now holds other weights

    e = export(str(copy), output=str(tmp_path / "m"), torchscript=False)
    assert Path(e["source"]["checkpoint"]) == copy / "checkpoint"
    exported = torch.load(tmp_path / "m" / "model.pt", weights_only=True)["state_dict"]
    key = next(kk for kk in exported if kk.endswith(k.split(".", 1)[-1]) and exported[kk].shape == w.shape)
    torch.testing.assert_close(exported[key], w)                        # the copy's weights
    assert not torch.equal(exported[key], _first_weight(checkpoint.load(original / "checkpoint"))[1])


@pytest.mark.parametrize("stored, output, needle", [
    ("{other}/checkpoint", "{other}", None),                              # re-rooted: the copy's own checkpoint
    ("{other}/checkpoint", "/somewhere/else", "outside the run folder it was written in"),
    ("../original/checkpoint", "{other}", "leads outside"),
    ("checkpoint", "{other}", None),                                      # a relative path inside the folder
])
def test_export_refuses_a_stored_checkpoint_path_that_leaves_the_folder(runs, tmp_path, stored, output, needle):
    other = tmp_path / "original"
    shutil.copytree(runs["digits"], other)
    copy = tmp_path / "copy"
    shutil.copytree(runs["digits"], copy)
    res = json.loads((copy / "result.json").read_text())
    res["checkpoint"], res["output"] = stored.format(other=other), output.format(other=other)
    (copy / "result.json").write_text(json.dumps(res))
    r = CliRunner().invoke(main, ["export", str(copy), "--output", str(tmp_path / "m"), "--no-torchscript", "--json"])
    if needle is None:
        assert r.exit_code == 0, r.output
        assert json.loads(r.output.strip().splitlines()[-1])["source"]["checkpoint"] == str(copy / "checkpoint")
    else:
        _one_line_error(r, needle)
        assert not (tmp_path / "m").exists()


def test_export_refuses_links_that_lead_outside(runs, tmp_path):
    """A checkpoint folder that is a symbolic link to another run's (train run and tune experiment)."""
    copy = tmp_path / "copy"
    shutil.copytree(runs["digits"], copy)
    shutil.rmtree(copy / "checkpoint")
    (copy / "checkpoint").symlink_to(runs["digits"] / "checkpoint")
    _one_line_error(CliRunner().invoke(main, ["export", str(copy), "--output", str(tmp_path / "m")]),
                    "leads outside")
    exp = tmp_path / "exp"
    trial = exp / "trial_fn_abc_0"
    trial.mkdir(parents=True)
    (exp / "summary.json").write_text(json.dumps({"best": {"trial_id": "abc"}}))
    (trial / "checkpoint_000001").symlink_to(runs["digits"] / "checkpoint")
    (trial / "checkpoint_000002").mkdir()
    (trial / "checkpoint_000002" / "state.pt").symlink_to(runs["digits"] / "checkpoint" / "state.pt")
    _one_line_error(CliRunner().invoke(main, ["export", str(exp), "--output", str(tmp_path / "m")]), "leads outside")


def test_export_output_is_a_folder_written_atomically(runs, tmp_path):
    """--output: an existing file, a place that cannot be written (/proc) and a model file that is a folder are
    refused; an earlier export in the folder is replaced (documented), no temporary file is left."""
    afile = tmp_path / "afile"
    afile.write_text("keep")
    _one_line_error(CliRunner().invoke(main, ["export", str(runs["digits"]), "--output", str(afile)]),
                    "is a file, not a folder")
    assert afile.read_text() == "keep"
    _one_line_error(CliRunner().invoke(main, ["export", str(runs["digits"]), "--output", "/proc/ssl_ray_model"]),
                    "cannot create the folder")
    _one_line_error(CliRunner().invoke(main, ["export", str(runs["digits"]), "--output", "/proc"]),
                    "cannot write there")
    blocked = tmp_path / "blocked"
    (blocked / "model.pt").mkdir(parents=True)
    _one_line_error(CliRunner().invoke(main, ["export", str(runs["digits"]), "--output", str(blocked)]),
                    "is a folder")
    out = tmp_path / "m"
    for _ in range(2):  # the second export replaces the first one's files
        r = CliRunner().invoke(main, ["export", str(runs["digits"]), "--output", str(out), "--no-torchscript"])
        assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.pt"]


# ---- your own data (--dataset npz / csv) ----------------------------------------------------------------------
def _own(tmp_path: Path, kind: str) -> Path:
    """A damaged or hostile own-data file of `kind`."""
    x, y = _blobs(150)
    if kind == "truncated.npz":
        np.savez(tmp_path / "good.npz", x=x, y=y)
        data = (tmp_path / "good.npz").read_bytes()
        (tmp_path / kind).write_bytes(data[: len(data) // 2])
    elif kind == "empty.npz":
        (tmp_path / kind).write_bytes(b"")
    elif kind in ("fifo.npz", "fifo.csv"):
        os.mkfifo(tmp_path / kind)
    elif kind == "folder.csv":
        (tmp_path / kind).mkdir()
    elif kind == "nofeatures.npz":
        np.savez(tmp_path / kind, x=np.zeros((150, 0), np.float32), y=np.arange(150) % 3)
    elif kind == "pickled_labels.npz":
        np.savez(tmp_path / kind, x=x, y=np.array([{"a": 1}] * 150, dtype=object))
    elif kind == "nan_labels.npz":
        np.savez(tmp_path / kind, x=x, y=np.where(np.arange(150) == 7, np.nan, np.arange(150) % 3))
    elif kind == "missing_labels.csv":
        (tmp_path / kind).write_text("a,b,label\n" + "".join(f"{i},{i},{'' if i == 4 else i % 2}\n" for i in range(40)))
    elif kind == "huge_member.npz":
        _npz_declaring(tmp_path / kind, (2 ** 31,), ("x", "y"))
    return tmp_path / kind


@pytest.mark.parametrize("kind, needle", [
    ("truncated.npz", "not a readable .npz archive"),
    ("empty.npz", "not a readable .npz archive"),          # it was "Aborted!" (click's answer to an EOFError)
    ("fifo.npz", "is a FIFO (named pipe), not a regular file"),
    ("fifo.csv", "is a FIFO (named pipe), not a regular file"),   # it blocked forever
    ("folder.csv", "is a folder, not a regular file"),
    ("nofeatures.npz", "x has shape (150, 0): examples with no inputs"),
    ("pickled_labels.npz", "holds Python objects"),
    ("nan_labels.npz", "1 training label(s) missing, empty or not finite (first: example 7)"),
    ("missing_labels.csv", "1 training label(s) missing, empty or not finite (first: example 4)"),
    ("huge_member.npz", "the file is truncated or damaged"),
])
def test_own_data_files_are_refused_in_one_line(tmp_path, kind, needle):
    f = _own(tmp_path, kind)
    dataset = "csv" if kind.endswith(".csv") else "npz"
    r = _returns_within(lambda: CliRunner().invoke(main, ["train", "supervised", "--dataset", dataset, "--data-opt",
                                                          f"path={f}", "--labels", "9", "--output",
                                                          str(tmp_path / "out")]))
    _one_line_error(r, needle)
    assert not (tmp_path / "out").exists()


def test_own_data_text_labels_lose_surrounding_whitespace(tmp_path):
    """Documented choice: "b", " b" and "b " are one class (named "b"), in a CSV and in an .npz."""
    import pandas as pd

    x, _ = _blobs(90)
    y = np.array(["a", "b", " b", "b ", "  a\t"] * 18)
    pd.DataFrame({"f0": x[:, 0], "f1": x[:, 1], "label": y}).to_csv(tmp_path / "t.csv", index=False)
    np.savez(tmp_path / "t.npz", x=x, y=y)
    for name in ("csv", "npz"):
        s = load_splits(DataSpec(name, labels=4, val_size=10, options={"path": str(tmp_path / f"t.{name}")}), 0)
        assert s.info.class_names == ("a", "b") and s.info.num_classes == 2
        labels = np.concatenate([s.raw.y_train, s.raw.y_test])
        assert sorted(np.bincount(labels).tolist()) == [36, 54]  # a: 2 of 5, b: 3 of 5


def test_own_data_idx_file_longer_than_its_header_is_refused(tmp_path):
    """An MNIST file is read as far as its header says, not to its end (a .gz that inflates without bound)."""
    from ssl_ray.data.vision import read_idx

    f = tmp_path / "t.gz"
    with open(f, "wb") as out:
        out.write(__import__("gzip").compress(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + b"\x01" * 10_000))
    with pytest.raises(DataError, match="expected 3 bytes of data for shape \\(3,\\), found 4 or more"):
        read_idx(f)
    f2 = tmp_path / "fifo-idx"
    os.mkfifo(f2)
    with pytest.raises(DataError, match="FIFO"):
        _returns_within(lambda: read_idx(f2))


# ---- predict ---------------------------------------------------------------------------------------------------
def _predict_input(tmp_path: Path, kind: str) -> Path:
    f = tmp_path / kind
    if kind == "object.npy":
        np.save(f, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "pickled.npy":
        f.write_bytes(pickle.dumps(np.zeros((2, 1, 8, 8))))
    elif kind == "pickled_member.npz":
        np.savez(f, x=np.array([[1, 2]], dtype=object))
    elif kind == "nan.npy":
        a = np.zeros((4, 1, 8, 8), np.float32)
        a[2, 0, 3, 3] = np.nan
        np.save(f, a)
    elif kind == "inf.npy":
        a = np.zeros((3, 1, 8, 8))
        a[1, 0, 0, 0] = 1e300  # finite in float64, infinite as the model's float32
        np.save(f, a)
    elif kind == "empty.npy":
        np.save(f, np.zeros((0, 1, 8, 8), np.uint8))
    elif kind == "empty.csv":
        f.write_text("a,b,c,d\n")
    elif kind == "bomb.png":
        _png(f, 20000, 20000)
    elif kind == "big.png":
        _png(f, 10000, 9000)  # over PIL's 89.5 megapixels, under its 2x "bomb" error: PIL only warns
    elif kind == "fifo.png":
        os.mkfifo(f)
    elif kind == "huge.npy":
        f.write_bytes(_npy_header((2 ** 31, 1, 8, 8)) + b"\0" * 64)
    elif kind == "huge.npz":
        _npz_declaring(f, (2 ** 31, 1, 8, 8))
    elif kind == "text.npy":
        np.save(f, np.array([["a"] * 64]).reshape(1, 1, 8, 8))
    return f


@pytest.mark.parametrize("kind, needle", [
    ("object.npy", "not a readable .npy array"),
    ("pickled.npy", "never pickles"),
    ("pickled_member.npz", "holds Python objects"),
    ("nan.npy", "1 sample(s) hold NaN or infinite values (first: sample 2)"),
    ("inf.npy", "1 sample(s) hold NaN or infinite values (first: sample 1)"),
    ("empty.npy", "no samples"),
    ("bomb.png", "cannot read the image"),
    ("big.png", "cannot read the image"),
    ("fifo.png", "is a FIFO (named pipe), not a regular file"),
    ("huge.npy", "not a readable .npy array"),
    ("huge.npz", "the file is truncated or damaged"),
    ("text.npy", "expected a numeric array"),
])
def test_predict_refuses_hostile_inputs_in_one_line(runs, tmp_path, kind, needle):
    f = _predict_input(tmp_path, kind)
    r = _returns_within(lambda: CliRunner().invoke(main, ["predict", str(runs["digits-model"]), str(f)]))
    _one_line_error(r, needle)


def test_predict_reads_a_csv_as_train_reads_it(runs, tmp_path):
    """Accepted: the training table itself (its label column dropped), its columns in another order, a table
    without the label column; the predictions are those of the same features as an .npy. Refused: a table
    without a feature column the model was trained on, non-numeric features, missing values, no rows, and a CSV
    given to an image model."""
    import pandas as pd

    from ssl_ray.export import predict

    df = pd.read_csv(runs["table"])
    feats = df[["a", "b", "c", "d"]].to_numpy(np.float32)
    np.save(tmp_path / "feats.npy", feats)
    want = [r["class"] for r in predict(str(runs["csv-model"]), [str(tmp_path / "feats.npy")])]
    assert len(set(want)) > 1
    df[["d", "species", "b", "a", "c"]].to_csv(tmp_path / "shuffled.csv", index=False)
    df[["a", "b", "c", "d"]].to_csv(tmp_path / "nolabel.csv", index=False)
    for f in (runs["table"], tmp_path / "shuffled.csv", tmp_path / "nolabel.csv"):
        rows = predict(str(runs["csv-model"]), [str(f)])
        assert [r["class"] for r in rows] == want and rows[0]["file"] == str(f)
        assert {r["name"] for r in rows} <= {"setosa", "versicolor", "virginica"}
    df[["a", "b", "c"]].to_csv(tmp_path / "short.csv", index=False)
    _one_line_error(CliRunner().invoke(main, ["predict", str(runs["csv-model"]), str(tmp_path / "short.csv")]),
                    "no column(s) 'd'")
    bad = df.copy()
    bad["b"] = "x"
    bad.to_csv(tmp_path / "text.csv", index=False)
    _one_line_error(CliRunner().invoke(main, ["predict", str(runs["csv-model"]), str(tmp_path / "text.csv")]),
                    "feature columns must be numeric; not so: b")
    holes = df.copy()
    holes.loc[5, "c"] = np.nan
    holes.to_csv(tmp_path / "holes.csv", index=False)
    _one_line_error(CliRunner().invoke(main, ["predict", str(runs["csv-model"]), str(tmp_path / "holes.csv")]),
                    "(first: sample 5)")
    empty = _predict_input(tmp_path, "empty.csv")
    _one_line_error(CliRunner().invoke(main, ["predict", str(runs["csv-model"]), str(empty)]), "no samples")
    _one_line_error(CliRunner().invoke(main, ["predict", str(runs["digits-model"]), str(runs["table"])]),
                    "a CSV row is a feature vector")


def test_predict_text_has_a_header_in_every_format(runs):
    from ssl_ray.export import predict, predict_text

    rows = predict(str(runs["csv-model"]), [str(runs["table"])])
    table = predict_text(rows, "table").splitlines()
    assert table[0].split("\t") == ["file", "index", "class", "name"] and len(table) == len(rows) + 1
    assert table[1].split("\t") == [str(runs["table"]), "0", str(rows[0]["class"]), rows[0]["name"]]
    with_probs = predict_text(rows, "table", probs=True).splitlines()
    assert with_probs[0].split("\t") == ["file", "index", "class", "name", "p0", "p1", "p2"]
    assert predict_text(rows, "csv").splitlines()[0] == "file,index,class,name"
    assert json.loads(predict_text(rows[:2], "json")) == [{k: v for k, v in r.items() if k != "probs"}
                                                           for r in rows[:2]]


# ---- report ----------------------------------------------------------------------------------------------------
def _experiment(root: Path, summary: bytes | None = None, table: pa.Table | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(table if table is not None else pa.Table.from_pylist(
        [{"trial_id": "a", "status": "TERMINATED", "stopped_early": False, "best_val_error": 10.0}]),
        root / "results.parquet")
    if summary is not None:
        (root / "summary.json").write_bytes(summary)
    return root


@pytest.mark.parametrize("summary, table, needle", [
    (b"[" * 200_000 + b"]" * 200_000, None, "summary.json is damaged (JSON nested too deeply)"),
    (b'{"a":' * 200_000 + b"1" + b"}" * 200_000, None, "summary.json is damaged (JSON nested too deeply)"),
    (b'{"best": "x"}', None, "summary.json is damaged (best: expected an object or null, got str)"),
    (b'{"best": {"config": [1]}}', None, "best.config: expected an object or null, got list"),
    (b'{"best": {"val_error": "low"}}', None, "best.val_error: expected a number or null, got str"),
    (b'{"confirm": {"test_error_mean": "1"}}', None, "confirm.test_error_mean: expected a number or null"),
    (b'{"searched": [["lr"]]}', None, "searched: expected a list of names"),
    (b"[1, 2]", None, "summary.json is damaged (not a JSON object)"),
    (b"{}", pa.Table.from_pylist([{"a": 1, "b": 2.0}] * 3), "not an ssl-ray results table: no column 'trial_id'"),
    (b"{}", pa.Table.from_pylist([{"trial_id": 1, "status": "x"}] * 3), "column 'trial_id' holds int64, not text"),
    (b"{}", pa.Table.from_pylist([{"trial_id": "a", "status": "x", "best_val_error": "y"}]),
     "column 'best_val_error' holds string, not numbers"),
], ids=["deep-list", "deep-object", "best-str", "config-list", "val-error-str", "confirm-str", "searched-nested",
        "not-object", "other-table", "trial-id-int", "val-error-column-str"])
def test_report_refuses_damaged_or_foreign_files(tmp_path, summary, table, needle):
    exp = _experiment(tmp_path / "exp", summary, table)
    for args in ([], ["--trials"]):
        _one_line_error(CliRunner().invoke(main, ["report", str(exp), *args]), needle)


def test_report_and_export_do_not_block_on_a_fifo(tmp_path):
    exp = _experiment(tmp_path / "exp")
    os.mkfifo(exp / "summary.json")
    for cmd in (["report", str(exp)], ["export", str(exp)]):
        _one_line_error(_returns_within(lambda: CliRunner().invoke(main, cmd)), "is a FIFO (named pipe)")


def test_report_parquet_output_is_refused_onto_a_folder_or_proc_and_replaces_a_file(tmp_path):
    exp = _experiment(tmp_path / "exp", b"{}")
    for target, needle in ((tmp_path, "is a folder: give a file name"), (Path("/proc/report.parquet"),
                                                                         "cannot write there")):
        _one_line_error(CliRunner().invoke(main, ["report", str(exp), "--format", "parquet", "--output", str(target)]),
                        needle)
    out = tmp_path / "t.parquet"
    out.write_text("old")
    out.chmod(0o640)
    r = CliRunner().invoke(main, ["report", str(exp), "--trials", "--format", "parquet", "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert pq.read_table(out).column("trial_id").to_pylist() == ["a"]
    assert stat.S_IMODE(out.stat().st_mode) == 0o640  # the replaced file keeps its permissions
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ssl_ray")] == []


# ---- writing outputs -------------------------------------------------------------------------------------------
def test_write_output_refuses_what_cannot_become_a_file_and_leaves_no_temporary(tmp_path):
    from ssl_ray.data.files import check_output, write_output

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for target, needle in ((tmp_path, "is a folder: give a file name"), (fifo, "not a regular file"),
                           (tmp_path / "missing" / "t.md", "does not exist"),
                           (Path("/proc/ssl_ray.md"), "cannot write there"),
                           (Path("/proc/self/environ"), "cannot write there")):
        with pytest.raises(SSLRayError, match=needle):
            _returns_within(lambda: write_output(target, "text\n"))
    with pytest.raises(SSLRayError, match="is a folder"):
        check_output(tmp_path)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    f = tmp_path / "t.md"
    write_output(f, "one\n")
    write_output(f, "two\n")  # an existing regular file is replaced (documented)
    assert f.read_text() == "two\n"

    def fails(tmp):
        Path(tmp).write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(SSLRayError, match="cannot write there: No space left on device"):
        write_output(f, fails)
    assert f.read_text() == "two\n"                                   # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "t.md"]  # no temporary file left


# ---- memory: refused before anything large is allocated ----------------------------------------------------------
AS_LIMIT = 4 * 2 ** 30
"""Address-space cap of the subprocess (ulimit -v 4 GiB): torch's import alone maps about 3.4 GB here, so what is
left (~0.8 GB) is less than any of the files below would make a reader allocate (1.2 GB to 128 GB)."""

_DRIVER = r"""
import json, resource, sys
from click.testing import CliRunner
from ssl_ray.cli import main
out = []
for args in json.loads(sys.argv[1]):
    r = CliRunner().invoke(main, args)
    out.append([r.exit_code, r.output, repr(r.exception) if r.exception and not isinstance(r.exception, SystemExit)
                else None])
print(json.dumps({"results": out, "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _alias_bomb(tmp_path: Path, depth: int = 9) -> Path:
    """A search space whose `fixed:` holds a YAML alias bomb: anchors nested `depth` x 10 (10^9 leaves at 9), a few
    hundred bytes on disk. Before, parsing it reached a MemoryError after 115 s."""
    lines = ["method: i2gan", "search: {tau: {uniform: [2.5, 3.0]}}", "fixed:", "  b0: &a0 [x,x,x,x,x,x,x,x,x,x]"]
    lines += [f"  b{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, depth)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_yaml_alias_bombs_cycles_and_keys_given_twice_are_refused_while_parsing(tmp_path):
    from ssl_ray.data.files import YAML_MAX_NODES, load_yaml
    from ssl_ray.errors import ConfigError
    from ssl_ray.tuning.spaces import load_space

    for depth in (6, 9):  # 10^6 nodes expanded and 10^9: both refused without expanding anything
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match="bomb.yaml: expands to more than 100,000 YAML nodes"):
            load_space(_alias_bomb(tmp_path, depth), method="i2gan")
        assert time.monotonic() - t0 < 1.0
    with pytest.raises(ConfigError, match="contains itself"):
        load_yaml("a: &a [ &b [*a] ]\n", "s.yaml", ConfigError)
    with pytest.raises(ConfigError, match=r"s.yaml:3: key 'tau' given twice in one mapping \(first at line 2\)"):
        load_yaml("search:\n  tau: {uniform: [1, 2]}\n  tau: {uniform: [3, 4]}\n", "s.yaml", ConfigError)
    # what is allowed: aliases shared a few times, merge keys with an explicit override, up to the cap exactly
    assert load_yaml("b: &b {x: 1, y: 2}\nc: {<<: *b, x: 5}\nd: [*b, *b]\n", "s", ConfigError) == {
        "b": {"x": 1, "y": 2}, "c": {"x": 5, "y": 2}, "d": [{"x": 1, "y": 2}, {"x": 1, "y": 2}]}
    flat = "[" + ",".join(["0"] * (YAML_MAX_NODES - 1)) + "]"  # the list and its items: exactly the cap
    assert len(load_yaml(flat, "s", ConfigError)) == YAML_MAX_NODES - 1
    with pytest.raises(ConfigError, match="more than 100,000"):
        load_yaml("[0, " + flat[1:], "s", ConfigError)


def test_memory_hungry_files_are_refused_under_a_memory_cap(runs, tmp_path):
    """Under `ulimit -v 4 GiB`, in one subprocess: a 20000 x 20000 PNG, .npy / .npz / own-data .npz headers that
    declare 128 GB, a summary.json nested 200,000 deep, `--space /dev/zero` and a search space holding an alias bomb
    (before: read until the kernel's OOM killer acted; a MemoryError after 115 s). Each is one line, exit 2 (before, each was a
    MemoryError / DecompressionBombError / RecursionError traceback); the process's peak memory stays low."""
    exp = _experiment(tmp_path / "exp", b"[" * 200_000 + b"]" * 200_000)
    own = _own(tmp_path, "huge_member.npz")
    model = str(runs["digits-model"])
    cases = [(["predict", model, str(_predict_input(tmp_path, "bomb.png"))], "cannot read the image"),
             (["predict", model, str(_predict_input(tmp_path, "huge.npy"))], "not a readable .npy array"),
             (["predict", model, str(_predict_input(tmp_path, "huge.npz"))], "the file is truncated or damaged"),
             (["train", "supervised", "--dataset", "npz", "--data-opt", f"path={own}", "--labels", "9"],
              "the file is truncated or damaged"),
             (["report", str(exp)], "JSON nested too deeply"),
             (["tune", "i2gan", "--space", "/dev/zero", "--dry-run"], "is a device, not a regular file"),
             (["tune", "i2gan", "--space", str(_alias_bomb(tmp_path)), "--dry-run"], "an alias bomb")]

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))

    proc = subprocess.Popen([sys.executable, "-c", _DRIVER, json.dumps([c for c, _ in cases])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=cap, cwd=tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    for (args, needle), (code, output, exc) in zip(cases, got["results"], strict=True):
        lines = [ln for ln in output.splitlines() if ln.strip()]
        assert code == 2 and exc is None and len(lines) == 1 and needle in lines[0], (args, code, output, exc)
    assert got["maxrss_kib"] < 1.5 * 2 ** 20  # peak resident memory under 1.5 GiB (the imports take ~0.6)


# ---- cli.py's --output of report / predict / compare, and predict's table header ----
def test_report_and_predict_text_outputs_are_refused_onto_a_folder_fifo_or_proc(runs, tmp_path):
    exp = _experiment(tmp_path / "exp", b"{}")
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.uint8))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    commands = (["report", str(exp)], ["predict", str(runs["digits-model"]), str(tmp_path / "x.npy")])
    for cmd in commands:
        for target, needle in ((tmp_path, "is a folder: give a file name"), (fifo, "not a regular file"),
                               (Path("/proc/ssl_ray.txt"), "cannot write there"),
                               (tmp_path / "missing" / "t", "does not exist")):
            _one_line_error(_returns_within(lambda: CliRunner().invoke(main, [*cmd, "--output", str(target)])),
                            needle)
        out = tmp_path / "t.txt"
        out.write_text("old")
        r = CliRunner().invoke(main, [*cmd, "--output", str(out)])
        assert r.exit_code == 0, r.output
        assert out.read_text() != "old"                        # an existing file is replaced (documented)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp", "fifo", "t.txt", "x.npy"]  # no temporary left


def test_predict_table_has_a_header(runs, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.uint8))
    r = CliRunner().invoke(main, ["predict", str(runs["digits-model"]), str(tmp_path / "x.npy")])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split("\t") == ["file", "index", "class", "name"] and len(lines) == 4
    r = CliRunner().invoke(main, ["predict", str(runs["digits-model"]), str(tmp_path / "x.npy"), "--probs"])
    assert r.output.splitlines()[0].split("\t")[4:] == [f"p{i}" for i in range(10)]
