"""The data layer: datasets by name, seeded splits and the R/T batch stream. Knows nothing of methods."""
from .base import DataInfo, RawData, to_float
from .registry import DataSpec, get_entry, list_datasets, load_dataset
from .splits import Batch, BatchStream, Splits, batch_composition, eval_tensors, load_splits, make_splits

__all__ = ["DataInfo", "RawData", "to_float", "DataSpec", "get_entry", "list_datasets", "load_dataset", "Batch",
           "BatchStream", "Splits", "batch_composition", "eval_tensors", "load_splits", "make_splits"]
