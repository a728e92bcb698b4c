"""A run's folder (`ssl-ray train --output`): local, shared by every node, or inside a bucket; its checkpoints
(<output>/checkpoint for the in-process path, <output>/ray_train/checkpoint_* for Ray Train's) and its
result.json, which both paths write the same way."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..engine import checkpoint
from ..engine.spec import RunSpec
from ..engine.worker import Restored, newest_loadable

LOCAL_CHECKPOINT = "checkpoint"  # <output>/checkpoint/state.pt: the in-process path's checkpoint
RAY_RUN = "ray_train"  # <output>/ray_train/checkpoint_*: Ray Train's checkpoints


def latest_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint folder of a run directory (either path's) that loads, or None when it holds none.
    Newest: by the time its state.pt was written. One that cannot be loaded (cut short while being written or
    copied, truncated, replaced) is passed over for the one before, said in one line on stderr; checkpoints there
    and none loads: SSLRayError naming every file (a --resume from scratch would discard the run's epochs)."""
    dirs = [out / LOCAL_CHECKPOINT] + list((out / RAY_RUN).glob("checkpoint_*"))
    found = sorted((d for d in dirs if (d / checkpoint.STATE_FILE).is_file()),
                   key=lambda d: ((d / checkpoint.STATE_FILE).stat().st_mtime, d.name), reverse=True)
    return Path(_said(newest_loadable(found[:1], found[1:])[1])) if found else None


def _said(r: Restored) -> str:
    """The folder chosen; the line saying what was passed over, if anything, on stderr."""
    if r.skipped:
        print(r.line(), file=sys.stderr, flush=True)
    assert r.folder is not None
    return r.folder


class RunFolder:
    """A run's folder: a local one (`fs` None; also a folder every node mounts), or a path inside a pyarrow
    filesystem: a bucket (s3://, gs://), or a filesystem handed to run_train (tests: a SubTreeFileSystem standing
    in for a bucket). Ray Train's checkpoints, the TensorBoard files and result.json all go into it."""

    def __init__(self, output: str, fs: Any = None, shared: bool = False):
        import pyarrow.fs as pafs

        self.shown, self.shared = output, shared or fs is not None or "://" in output
        if fs is None and "://" in output:
            from .experiment import fs_of

            fs, output = fs_of(output)
        if isinstance(fs, pafs.LocalFileSystem):
            fs = None  # file:// is a local folder
        self.fs = fs
        self.path = str(Path(output).resolve()) if fs is None else output.rstrip("/")
        if fs is None:
            self.shown = self.path

    def __str__(self) -> str:
        return self.shown

    def latest(self) -> str | None:
        """The newest checkpoint folder of Ray Train's run in a bucket that loads (the local case:
        latest_checkpoint, which says what this does with one that does not)."""
        import contextlib

        import pyarrow.fs as pafs
        from ray.train import Checkpoint

        assert self.fs is not None
        infos = self.fs.get_file_info(pafs.FileSelector(f"{self.path}/{RAY_RUN}", allow_not_found=True))
        found = []
        for d in infos:
            if d.type == pafs.FileType.Directory and d.base_name.startswith("checkpoint_"):
                f = self.fs.get_file_info(f"{d.path}/{checkpoint.STATE_FILE}")
                if f.type == pafs.FileType.File:
                    found.append((f.mtime, d.path))
        paths = [p for _, p in sorted(found, reverse=True)]
        if not paths:
            return None
        with contextlib.ExitStack() as stack:
            shown: dict[str, str] = {}  # a local copy -> the checkpoint's path in the bucket

            def local(path: str) -> str:
                d = str(stack.enter_context(Checkpoint(path, filesystem=self.fs).as_directory()))
                shown[d] = path
                return d

            return _said(newest_loadable([local(paths[0])], (local(p) for p in paths[1:]))[1].named(shown))

    def load(self, ckpt: str) -> dict[str, Any]:
        """A checkpoint's state, copied from the bucket to a temporary folder on this node."""
        from ray.train import Checkpoint

        with Checkpoint(ckpt, filesystem=self.fs).as_directory() as d:
            return checkpoint.load(d)

    def write_result(self, s: dict[str, Any]) -> None:
        text = json.dumps(s, indent=2, default=str)
        if self.fs is None:
            (Path(self.path) / "result.json").write_text(text)
            return
        from .experiment import make_dirs, write_json

        make_dirs(self.fs, self.path)
        write_json(self.fs, f"{self.path}/result.json", s)

    def has_result(self) -> bool:
        import pyarrow.fs as pafs

        if self.fs is None:
            return (Path(self.path) / "result.json").exists()
        return self.fs.get_file_info(f"{self.path}/result.json").type == pafs.FileType.File


def write_summary(spec: RunSpec, out: Path | RunFolder, metrics: dict[str, Any], *, epochs: int, seconds: float,
             workers: int, ckpt: str | None, path: str, **extra: Any) -> dict[str, Any]:
    s = {
        "method": spec.method, "dataset": spec.data.name, "labels": spec.data.labels, "seed": spec.seed,
        "epochs": epochs, "val_error": metrics.get("val_error"),
        "test_error": metrics.get("test_error"), "best_val_error": metrics.get("best_val_error"),
        "test_error_at_best_val": metrics.get("test_error_at_best_val"),
        "seconds": round(seconds, 2), "workers": workers, "path": path,
        "config": spec.config_dict(), "data": spec.data.to_dict(), "output": str(out),
        "checkpoint": ckpt,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        **extra,
    }
    (out if isinstance(out, RunFolder) else RunFolder(str(out))).write_result(s)
    return s


def latest(out: RunFolder) -> str | None:
    """The newest checkpoint folder of the run, local or in a bucket."""
    if out.fs is not None:
        return out.latest()
    found = latest_checkpoint(Path(out.path))
    return str(found) if found else None


def previous_metrics(out: Path) -> dict[str, Any]:
    try:
        return dict(json.loads((out / "result.json").read_text()).get("metrics") or {})
    except (OSError, ValueError):
        return {}
