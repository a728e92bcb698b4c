"""`ssl-ray train` with its run folder in a bucket: Ray Train's checkpoints, the TensorBoard files and
result.json all land in the storage, and `--resume` reads the checkpoint from there (on the worker's own node).
A pyarrow SubTreeFileSystem stands in for the bucket: every file goes through the filesystem API, so a path
written on the local disk instead would land outside it (the test runs in an empty working directory and checks
nothing appears there). The same run on a cluster of two nodes with a shared folder: tests/test_cluster_runs.py."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from ssl_ray.data import DataSpec
from ssl_ray.engine import checkpoint
from ssl_ray.engine.loop import RunSpec
from ssl_ray.errors import SSLRayError
from leftovers import staged
from tb_read import read_scalars

pytestmark = pytest.mark.ray


def _events(d: Path) -> list[Path]:
    return sorted(d.rglob("events.out.tfevents.*"), key=lambda p: p.stat().st_mtime)


def test_a_run_in_a_bucket_writes_everything_there_and_resumes_from_it(ray_local, tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    from ssl_ray.tuning.train import run_train

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    fs = pafs.SubTreeFileSystem(str(bucket), pafs.LocalFileSystem())
    spec = RunSpec("supervised", DataSpec("digits", labels=50), epochs=2, seed=0, config={"steps_per_epoch": 5},
                   test_every=0, checkpoint_every=1)
    staged_before = staged()
    s = run_train(spec, output="runs/r1", storage_filesystem=fs, ray_train=True, progress=False)
    root = bucket / "runs" / "r1"
    assert s["epochs"] == 2 and s["path"] == "ray-train" and s["output"] == "runs/r1"
    ckpts = sorted(c for c in (root / "ray_train").glob("checkpoint_*") if c.is_dir())
    assert ckpts and all((c / checkpoint.STATE_FILE).is_file() for c in ckpts)
    assert int(checkpoint.load(ckpts[-1])["epoch"]) == 2
    first = _events(root / "tensorboard")
    assert first and sorted(s for s, _ in read_scalars(root / "tensorboard")["error/val"]) == [1, 2]
    result = json.loads((root / "result.json").read_text())
    assert result["epochs"] == 2 and result["checkpoint_epoch"] == 2
    assert list(cwd.iterdir()) == []  # nothing went to a local path
    assert staged() - staged_before == set()  # the worker's TensorBoard staging folder went with it

    with pytest.raises(SSLRayError, match="already holds a run"):
        run_train(spec, output="runs/r1", storage_filesystem=fs, ray_train=True, progress=False)

    # --resume with one more epoch: the workers read the epoch-2 checkpoint through the filesystem
    s3 = run_train(dataclasses.replace(spec, epochs=3), output="runs/r1", storage_filesystem=fs, ray_train=True,
                   progress=False, resume=True)
    assert s3["epochs"] == 3 and json.loads((root / "result.json").read_text())["epochs"] == 3
    new = [p for p in _events(root / "tensorboard") if p not in first]
    assert len(new) == 1
    only = tmp_path / "only_new"
    only.mkdir()
    shutil.copy(new[0], only / new[0].name)
    assert [s for s, _ in read_scalars(only)["error/val"]] == [3]  # continued at epoch 3, not from scratch
    assert list(cwd.iterdir()) == []


def test_resume_of_a_bucket_run_that_is_not_there_is_one_line(ray_local, tmp_path):
    import pyarrow.fs as pafs

    from ssl_ray.tuning.train import run_train

    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    with pytest.raises(SSLRayError, match=r"^--resume: nothing to resume in nowhere/run"):
        run_train(RunSpec("supervised", epochs=1), output="nowhere/run", storage_filesystem=fs, resume=True)


def test_storage_options_are_checked_in_one_line_before_anything_runs(tmp_path):
    from click.testing import CliRunner

    from ssl_ray.cli import main

    st = str(tmp_path / "st")
    for args, needle in [(["--storage", st, "--output", str(tmp_path / "abs")], "give the run's name inside the storage"),
                         (["--storage", st, "--output", "../up"], "give the run's name inside the storage"),
                         (["--storage", "foo://bar"], "unknown scheme 'foo'"),
                         (["--storage", st, "--resume"], "--resume needs --output: the folder of the run to continue "
                                                         "(its name inside --storage)")]:
        r = CliRunner().invoke(main, ["train", "supervised", "--epochs", "1", *args])
        assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, (args, r.output)
    assert not (tmp_path / "st").exists()
