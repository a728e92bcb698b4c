"""Files of an experiment or a run, local or remote (pyarrow filesystems: local, s3://, gs://): JSON written whole
(a temporary file renamed onto the target, so a driver killed mid-write leaves the previous file) and read back
with json.loads only."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import SSLRayError


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
