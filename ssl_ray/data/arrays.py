"""Your own data as arrays: `--dataset npz --data-opt path=FILE.npz` or `--dataset csv --data-opt path=FILE.csv`.

- npz: arrays `x` (N, D) features, or (N, H, W) / (N, C, H, W) / (N, H, W, C) images (uint8 0..255 or
  floats in [0, 1]) and `y` (N,) labels (integers or strings); optional `x_test`, `y_test`. Other names
  through the options `x` and `y`.
- csv: one row per example, a label column (option `label`, default "label") and numeric feature columns.

Without a test split in the file, a stratified `test_fraction` of the examples (default 0.2, cut with
`data_seed`) becomes the test set. Labels become 0..K-1 in sorted order; their original values are the
class names. The file is read by every trial (no shared cache: an edited file is always read afresh);
give an absolute path or one relative to where you run ssl-ray (the CLI makes it absolute).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .base import DataInfo, RawData


def _path(path: str | None, name: str) -> Path:
    if not path:
        raise DataError(f"dataset {name!r} needs --data-opt path=FILE (your .{name} file)")
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise DataError(f"dataset {name!r}: no such file {p}")
    return p


def _labels(y_train: np.ndarray, y_test: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    if y_train.ndim != 1 or y_test.ndim != 1:
        raise DataError(f"dataset {name!r}: labels must be one value per example (a 1-D array)")
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
    if x.ndim == 2:
        if not np.issubdtype(x.dtype, np.number):
            raise DataError(f"dataset {name!r}: features must be numbers, got dtype {x.dtype}")
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


def _make(name: str, stem: str, x, y, x_test, y_test, test_fraction: float, data_seed: int) -> RawData:
    if len(x) != len(y):
        raise DataError(f"dataset {name!r}: {len(x)} examples but {len(y)} labels")
    if x_test is None:
        x, x_test, y, y_test = _split(x, y, test_fraction, data_seed, name)
    elif len(x_test) != len(y_test):
        raise DataError(f"dataset {name!r}: {len(x_test)} test examples but {len(y_test)} test labels")
    x, kind = _inputs(np.asarray(x), name)
    x_test, kind_t = _inputs(np.asarray(x_test), name)
    if x.shape[1:] != x_test.shape[1:] or x.dtype != x_test.dtype:
        raise DataError(f"dataset {name!r}: train inputs {x.shape[1:]} {x.dtype} and test inputs "
                        f"{x_test.shape[1:]} {x_test.dtype} differ")
    y, y_test, names = _labels(np.asarray(y), np.asarray(y_test), name)
    info = DataInfo(name, tuple(int(d) for d in x.shape[1:]), len(names), kind, names)
    return RawData(info, x, y, x_test, y_test, meta={"file": stem})


def load_npz(path: str | None = None, x: str = "x", y: str = "y", test_fraction: float = 0.2,
             data_seed: int = 0) -> RawData:
    p = _path(path, "npz")
    try:
        with np.load(p, allow_pickle=False) as z:
            keys = set(z.keys())
            missing = [k for k in (x, y) if k not in keys]
            if missing:
                raise DataError(f"dataset 'npz': {p} has no array {missing[0]!r}; it holds {sorted(keys)} "
                                f"(name them with --data-opt x=... --data-opt y=...)")
            has_test = f"{x}_test" in keys and f"{y}_test" in keys
            arrays = (z[x], z[y], z[f"{x}_test"] if has_test else None, z[f"{y}_test"] if has_test else None)
    except (OSError, ValueError) as e:
        raise DataError(f"dataset 'npz': cannot read {p}: {e}") from None
    return _make("npz", str(p), *arrays, test_fraction, data_seed)


def load_csv(path: str | None = None, label: str = "label", test_fraction: float = 0.2,
             data_seed: int = 0) -> RawData:
    import pandas as pd

    p = _path(path, "csv")
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as e:
        raise DataError(f"dataset 'csv': cannot read {p}: {e}") from None
    if label not in df.columns:
        raise DataError(f"dataset 'csv': {p} has no column {label!r} (columns: {', '.join(map(str, df.columns))}); "
                        f"name the label column with --data-opt label=...")
    feats = df.drop(columns=[label])
    bad = [c for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise DataError(f"dataset 'csv': feature columns must be numeric; not so: {', '.join(map(str, bad[:5]))}")
    return _make("csv", str(p), feats.to_numpy(np.float32), df[label].to_numpy(), None, None, test_fraction,
                 data_seed)


def register_all(register: Callable[..., None]) -> None:
    register("npz", load_npz, "your arrays: an .npz with x (features or images) and y, optional x_test/y_test",
             val_size=100, options={"path": None, "x": "x", "y": "y", "test_fraction": 0.2, "data_seed": 0})
    register("csv", load_csv, "your table: a CSV of numeric feature columns and a label column",
             val_size=100, options={"path": None, "label": "label", "test_fraction": 0.2, "data_seed": 0})
