"""What a model file is (`ssl-ray export` writes it, `ssl-ray predict` reads it): its format, its file names, and
rebuilding the method it holds from plain data (the package's docstring describes the files)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

FORMAT = "ssl-ray-model/1"
MODEL_FILE, SCRIPT_FILE, META_FILE = "model.pt", "model.torchscript.pt", "model.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def classifier_module(method: Any) -> nn.Module:
    """The module computing `method.predict` (float inputs -> logits), in eval mode: the method's own
    export_module() (methods/base.py says which module each kind of method gives)."""
    return method.export_module()


# ---- rebuilding --------------------------------------------------------------------------------------------
def info_dict(info) -> dict[str, Any]:
    return {"name": info.name, "input_shape": list(info.input_shape), "num_classes": info.num_classes,
            "kind": info.kind, "class_names": list(info.class_names)}


def data_info(d: dict[str, Any]):
    from ..data import DataInfo

    return DataInfo(d["name"], tuple(d["input_shape"]), int(d["num_classes"]), d["kind"], tuple(d["class_names"]))


def build_method(method: str, config: dict[str, Any], info: dict[str, Any]):
    from .. import config as C
    from ..methods import get_method

    cls = get_method(method)
    cfg = C.build(cls.Config, config, source=f"model of method {method}")
    torch.manual_seed(0)
    return cls(cfg, data_info(info), "cpu")


def input_format(info: dict[str, Any], raw_dtype: str, columns: list[str] | None = None) -> dict[str, Any]:
    image = info["kind"] == "image"
    out = {"shape": info["input_shape"], "raw_dtype": raw_dtype,
           "to_float": "x / 255 (uint8 -> float32 in [0, 1])" if raw_dtype == "uint8" else "float32, unchanged",
           "layout": "N, C, H, W" if image else "N, D"}
    if columns:  # trained on a CSV table: predict reads these columns of a CSV by name
        out["columns"] = list(columns)
    return out
