"""Your own data as arrays: `--dataset npz --data-opt path=FILE.npz` or `--dataset csv --data-opt path=FILE.csv`.

- npz: arrays `x` (N, D) features, or (N, H, W) / (N, C, H, W) / (N, H, W, C) images (uint8 0..255 or
  floats in [0, 1]) and `y` (N,) labels (integers or strings); optional `x_test`, `y_test`. Other names
  through the options `x` and `y`.
- csv: one row per example, a label column (option `label`, default "label") and numeric feature columns.

Without a test split in the file, a stratified `test_fraction` of the examples (default 0.2, cut with
`data_seed`) becomes the test set. Labels become 0..K-1 in sorted order; their original values are the
class names. Text labels lose surrounding whitespace ("cat " and "cat" are one class: a space nobody can see
in a table must not make a second class); a missing or empty label is refused. The file is read by every
trial (no shared cache: an edited file is always read afresh); give an absolute path or one relative to
where you run ssl-ray (the CLI makes it absolute).

The file must be a regular file (a FIFO would block the reader forever); an .npz is read without unpickling
and each array's header is checked before it is read (ssl_ray/data/files.py). Inputs need at least one feature
(an x of shape (N, 0) is refused) and finite values.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import files
from ..errors import DataError
from .base import DataInfo, RawData


def _path(path: str | None, name: str) -> Path:
    if not path:
        raise DataError(f"dataset {name!r} needs --data-opt path=FILE (your .{name} file)")
    return files.regular_file(Path(str(path)).expanduser(), f"dataset {name!r}: file", DataError)


def _clean_labels(y: np.ndarray, name: str, which: str) -> np.ndarray:
    """One label per example: text stripped of surrounding whitespace, numbers as they are; a missing (NaN,
    empty) label is refused."""
    if y.ndim != 1:
        raise DataError(f"dataset {name!r}: labels must be one value per example (a 1-D array), got {which} "
                        f"labels of shape {y.shape}")
    if y.dtype.kind in "SUO":
        vals = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in y.tolist()]
        missing = np.array([not isinstance(v, str) or not v.strip() for v in vals], dtype=bool)
    elif y.dtype.kind in "biuf":
        missing = ~np.isfinite(y) if y.dtype.kind == "f" else np.zeros(len(y), dtype=bool)
    else:
        raise DataError(f"dataset {name!r}: {which} labels must be numbers or text, got dtype {y.dtype}")
    if missing.any():
        raise DataError(f"dataset {name!r}: {int(missing.sum())} {which} label(s) missing, empty or not finite "
                        f"(first: example {int(np.flatnonzero(missing)[0])}); every example in the file needs a "
                        f"label (--labels says how many of them training sees)")
    return np.array([v.strip() for v in vals], dtype=str) if y.dtype.kind in "SUO" else y


def _labels(y_train: np.ndarray, y_test: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if (y_train.dtype.kind == "U") != (y_test.dtype.kind == "U"):
        kind = "text" if y_train.dtype.kind == "U" else "numbers"
        raise DataError(f"dataset {name!r}: the training labels are {kind}, the test labels are not")
    classes = np.unique(y_train)
    if len(classes) < 2:
        raise DataError(f"dataset {name!r}: need at least 2 classes in the training labels, found {len(classes)}")
    unknown = np.setdiff1d(np.unique(y_test), classes)
    if len(unknown):
        raise DataError(f"dataset {name!r}: test labels {unknown[:5].tolist()} do not occur in the training labels")
    return (np.searchsorted(classes, y_train).astype(np.int64), np.searchsorted(classes, y_test).astype(np.int64),
            tuple(str(c) for c in classes))


def _inputs(x: np.ndarray, name: str) -> tuple[np.ndarray, str]:
    """(N, D) -> float32 points; (N, H, W), (N, C, H, W) or (N, H, W, C) -> NCHW images (uint8 kept)."""
    if x.dtype.kind not in "iuf":
        raise DataError(f"dataset {name!r}: inputs must be numbers, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"dataset {name!r}: features contain NaN or infinite values")
        return x, "points"
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4:
        raise DataError(f"dataset {name!r}: x must be (N, D) features or (N, [C,] H, W[, C]) images, got {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float32)
        if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
            raise DataError(f"dataset {name!r}: float images must lie in [0, 1] (or give uint8 0..255)")
    return np.ascontiguousarray(x), "image"


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, name: str):
    from sklearn.model_selection import train_test_split

    if not 0 < test_fraction < 1:
        raise DataError(f"dataset {name!r}: option test_fraction must be in (0, 1), got {test_fraction}")
    try:
        return train_test_split(x, y, test_size=test_fraction, stratify=y, random_state=seed)
    except ValueError as e:
        raise DataError(f"dataset {name!r}: cannot cut a stratified test split: {e}") from None


def _make(name: str, stem: str, x, y, x_test, y_test, test_fraction: float, data_seed: int,
          meta: dict | None = None) -> RawData:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) == 0:
        raise DataError(f"dataset {name!r}: {stem} holds no examples")
    for a, which in ((x, "x"), (x_test, "x_test")):
        if a is not None and np.ndim(a) >= 2 and 0 in np.shape(a)[1:]:
            raise DataError(f"dataset {name!r}: {which} has shape {np.shape(a)}: examples with no inputs (a model "
                            f"with nothing to look at); give (N, D) features with D >= 1 or (N, [C,] H, W[, C]) images")
    if y.ndim != 1:
        raise DataError(f"dataset {name!r}: labels must be one value per example (a 1-D array), got shape {y.shape}")
    if len(x) != len(y):
        raise DataError(f"dataset {name!r}: {len(x)} examples but {len(y)} labels")
    y = _clean_labels(y, name, "training")  # before the stratified split: its strata are the classes
    if x_test is None:
        x, x_test, y, y_test = _split(x, y, test_fraction, data_seed, name)
    else:
        x_test, y_test = np.asarray(x_test), np.asarray(y_test)
        if len(x_test) != len(y_test):
            raise DataError(f"dataset {name!r}: {len(x_test)} test examples but {len(y_test)} test labels")
        y_test = _clean_labels(y_test, name, "test")
    x, kind = _inputs(x, name)
    x_test, kind_t = _inputs(x_test, name)
    if x.shape[1:] != x_test.shape[1:] or x.dtype != x_test.dtype:
        raise DataError(f"dataset {name!r}: train inputs {x.shape[1:]} {x.dtype} and test inputs "
                        f"{x_test.shape[1:]} {x_test.dtype} differ")
    y, y_test, names = _labels(y, y_test, name)
    info = DataInfo(name, tuple(int(d) for d in x.shape[1:]), len(names), kind, names)
    return RawData(info, x, y, x_test, y_test, meta={"file": stem, **(meta or {})})


def load_npz(path: str | None = None, x: str = "x", y: str = "y", test_fraction: float = 0.2,
             data_seed: int = 0) -> RawData:
    p = _path(path, "npz")

    def wanted(keys: list[str]) -> list[str]:
        missing = [k for k in (x, y) if k not in keys]
        if missing:
            raise DataError(f"dataset 'npz': {p} has no array {missing[0]!r}; it holds {keys} "
                            f"(name them with --data-opt x=... --data-opt y=...)")
        test = [f"{x}_test", f"{y}_test"]
        return [x, y] + (test if all(k in keys for k in test) else [])

    a = files.load_npz(p, wanted, "dataset 'npz': file", DataError)
    return _make("npz", str(p), a[x], a[y], a.get(f"{x}_test"), a.get(f"{y}_test"), test_fraction, data_seed)


def load_csv(path: str | None = None, label: str = "label", test_fraction: float = 0.2,
             data_seed: int = 0) -> RawData:
    import pandas as pd

    p = _path(path, "csv")
    df = files.read_csv(p, "dataset 'csv': file", DataError)
    if len(df) == 0:
        raise DataError(f"dataset 'csv': {p} holds no examples (a header row only)")
    if label not in df.columns:
        raise DataError(f"dataset 'csv': {p} has no column {label!r} (columns: {', '.join(map(str, df.columns))}); "
                        f"name the label column with --data-opt label=...")
    feats = df.drop(columns=[label])
    bad = [c for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise DataError(f"dataset 'csv': feature columns must be numeric; not so: {', '.join(map(str, bad[:5]))}")
    return _make("csv", str(p), feats.to_numpy(np.float32), df[label].to_numpy(), None, None, test_fraction,
                 data_seed, meta={"columns": [str(c) for c in feats.columns]})


def register_all(register: Callable[..., None]) -> None:
    register("npz", load_npz, "your arrays: an .npz with x (features or images) and y, optional x_test/y_test",
             val_size=100, options={"path": None, "x": "x", "y": "y", "test_fraction": 0.2, "data_seed": 0})
    register("csv", load_csv, "your table: a CSV of numeric feature columns and a label column",
             val_size=100, options={"path": None, "label": "label", "test_fraction": 0.2, "data_seed": 0})
