"""The data layer: datasets by name, seeded splits and the R/T batch stream. Knows nothing of methods.

Its names are imported when first asked for (PEP 562), so that `ssl_ray.data.files` (the safe readers) can be
used without importing torch: `ssl-ray tune --space /dev/zero` or a YAML alias bomb is refused before the 500 MB
of torch's import (tests/test_silent_accepts.py)."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import DataInfo, RawData, to_float
    from .registry import DataSpec, get_entry, list_datasets, load_dataset
    from .splits import Batch, BatchStream, Splits, batch_composition, eval_tensors, load_splits, make_splits

_WHERE = {"DataInfo": "base", "RawData": "base", "to_float": "base", "DataSpec": "registry", "get_entry": "registry",
          "list_datasets": "registry", "load_dataset": "registry", "Batch": "splits", "BatchStream": "splits",
          "Splits": "splits", "batch_composition": "splits", "eval_tensors": "splits", "load_splits": "splits",
          "make_splits": "splits"}
__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
