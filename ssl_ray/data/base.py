"""What a dataset is once loaded: arrays in memory (or memory-mapped) plus a little metadata."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class DataInfo:
    """Shape facts the models are chosen from."""

    name: str
    input_shape: tuple[int, ...]  # (D,) for points, (C, H, W) for images
    num_classes: int
    kind: str  # "points" or "image"
    class_names: tuple[str, ...] = ()

    @property
    def is_image(self) -> bool:
        return self.kind == "image"

    @property
    def input_dim(self) -> int:
        return int(np.prod(self.input_shape))


@dataclass
class RawData:
    """A dataset's train and official test arrays.

    Images are stored as uint8 in NCHW order and become floats in [0, 1] on the device (see
    :func:`to_float`); points are float32. Arrays may be read-only memory maps shared by every trial
    on a node.
    """

    info: DataInfo
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert len(self.x_train) == len(self.y_train), "x_train/y_train length mismatch"
        assert len(self.x_test) == len(self.y_test), "x_test/y_test length mismatch"


def to_float(x):
    """uint8 images -> float32 in [0, 1]; float inputs unchanged. Works on numpy arrays and torch tensors."""
    import torch

    if isinstance(x, torch.Tensor):
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
