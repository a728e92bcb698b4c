"""`ssl-ray predict`: an exported model (export/model_file.py) applied to images, arrays or CSV tables (the
package's docstring says how inputs are read)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import files as F
from ..errors import SSLRayError
from .model_file import FORMAT, IMAGE_SUFFIXES, MODEL_FILE, SCRIPT_FILE, build_method, classifier_module


# ---- loading and predicting ----------------------------------------------------------------------------------
class Model:
    """An exported model: `logits(x_float)`, `prepare(raw)` and the metadata."""

    def __init__(self, meta: dict[str, Any], net: nn.Module):
        self.meta, self.net = meta, net.eval()
        self.info = meta["info"]
        self.shape = tuple(self.info["input_shape"])
        self.image = self.info["kind"] == "image"

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch: int = 1024) -> torch.Tensor:
        out = [self.net(x[i:i + batch]) for i in range(0, len(x), batch)]
        return torch.cat(out) if out else torch.empty(0, self.info["num_classes"])

    def prepare(self, arr: np.ndarray, source: str) -> torch.Tensor:
        """Raw array(s) -> the float batch the net takes (N, *shape). No samples, a non-numeric array, or a NaN or
        infinite value: an error naming the file (a class printed for such an input would mean nothing)."""
        a = np.asarray(arr)
        if a.dtype.kind not in "iuf":
            raise SSLRayError(f"{source}: expected a numeric array, got dtype {a.dtype}")
        shape = self.shape
        if a.shape == shape:
            a = a[None]
        elif self.image and shape[0] == 1 and a.shape[-2:] == shape[1:] and a.ndim in (2, 3):
            a = a.reshape(-1, *shape)  # (H, W) or (N, H, W) for one-channel images
        elif self.image and a.ndim == 4 and a.shape[-1] == shape[0] and a.shape[1:3] == shape[1:]:
            a = a.transpose(0, 3, 1, 2)  # N, H, W, C
        elif self.image and a.ndim == 3 and a.shape[-1] == shape[0] and a.shape[:2] == shape[1:]:
            a = a.transpose(2, 0, 1)[None]  # H, W, C
        if a.shape[1:] != shape:
            raise SSLRayError(f"{source}: array of shape {tuple(np.shape(arr))} does not fit the model's input "
                              f"{shape} (one sample, or N samples as (N, {', '.join(map(str, shape))}))")
        if len(a) == 0:
            raise SSLRayError(f"{source}: no samples (an array of shape {tuple(np.shape(arr))}); nothing to predict")
        if a.dtype == np.uint8:
            return torch.from_numpy(a.astype(np.float32) / 255.0)
        with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: refused below
            x = np.ascontiguousarray(a, dtype=np.float32)
        finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
        if not finite.all():
            bad = np.flatnonzero(~finite)
            raise SSLRayError(f"{source}: {len(bad)} sample(s) hold NaN or infinite values (first: sample {bad[0]}); "
                              f"the model has no answer for them: remove or fill them")
        return torch.from_numpy(x)

    def classes(self, logits: torch.Tensor) -> torch.Tensor:
        pred = logits.argmax(dim=1)
        m = self.meta.get("cluster_to_class")
        if m:
            pred = torch.tensor(m, dtype=torch.long)[pred]
        return pred


def load_model(path: str) -> Model:
    """Load model.pt (or an export folder holding it), or a model.torchscript.pt written by `export`."""
    p = Path(path)
    if p.is_dir():
        p = p / MODEL_FILE
    if not p.exists():
        raise SSLRayError(f"no model file at {path} (expected an export folder, {MODEL_FILE} or {SCRIPT_FILE})")
    F.regular_file(p, "model file")
    try:
        if _is_torchscript(p):
            import warnings

            extra = {"ssl_ray.json": ""}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
            if not extra["ssl_ray.json"]:
                raise SSLRayError(f"{p} is a TorchScript file without ssl-ray metadata (not written by ssl-ray export)")
            meta = json.loads(extra["ssl_ray.json"])
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise SSLRayError(f"{p} is not an ssl-ray model file (format {FORMAT})")
            return Model(meta, net)
        try:
            blob = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as e:  # a refused pickle payload, a corrupt file: what was refused, in one line
            from ..engine.checkpoint import load_failure

            raise SSLRayError(f"{p} cannot be loaded safely as an ssl-ray model: {load_failure(e)}") from None
        if not isinstance(blob, dict) or not isinstance(blob.get("meta"), dict) or blob["meta"].get("format") != FORMAT:
            raise SSLRayError(f"{p} is not an ssl-ray model file (format {FORMAT})")
        meta = blob["meta"]
        method = build_method(meta["method"], meta["config"], meta["info"])
        net = classifier_module(method)
        net.load_state_dict(blob["state_dict"])
        return Model(meta, net)
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:  # a damaged or edited model file
        raise SSLRayError(f"{p} is a damaged ssl-ray model file ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:200]})") from None


def _is_torchscript(p: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_inputs(model: Model, files: list[str], invert: bool = False) -> list[tuple[str, torch.Tensor]]:
    """(name, float batch) per file: images via PIL, arrays from .npy / .npz (key x, or the only array), rows of
    a CSV table."""
    out = []
    for f in files:
        p = F.regular_file(f, "input")
        suf = p.suffix.lower()
        if suf == ".npy":
            arr = F.load_npy(p, "input")
        elif suf == ".npz":
            def one(keys: list[str], f: str = f) -> list[str]:
                if "x" not in keys and len(keys) != 1:
                    raise SSLRayError(f"{f}: an .npz needs an array named x (or only one array); found {keys}")
                return ["x" if "x" in keys else keys[0]]

            arr = next(iter(F.load_npz(p, one, "input").values()))
        elif suf == ".csv":
            arr = _read_csv(model, p)
        elif suf in IMAGE_SUFFIXES:
            if not model.image or model.shape[0] not in (1, 3):
                raise SSLRayError(f"{f}: the model takes {model.info['kind']} of shape {model.shape}, not images")
            arr = _read_image(p, model.shape, invert)
        else:
            raise SSLRayError(f"{f}: unknown file type {suf!r}; give images ({', '.join(sorted(IMAGE_SUFFIXES))}), "
                              f".npy / .npz arrays or a .csv table")
        out.append((f, model.prepare(arr, f)))
    return out


def _read_csv(model: Model, p: Path) -> np.ndarray:
    """A CSV table's rows as feature vectors, read as train's csv dataset reads them: the first row names the
    columns; the label column (the model's data option `label`, default "label") is dropped when present; a
    model trained on a CSV takes its feature columns by name, in its order."""
    import pandas as pd

    if model.image:
        raise SSLRayError(f"{p}: a CSV row is a feature vector; the model takes images of shape {model.shape}")
    df = F.read_csv(p, "input")
    if len(df) == 0:
        raise SSLRayError(f"{p}: no samples (a header row only); nothing to predict")
    label = ((model.meta.get("data") or {}).get("options") or {}).get("label", "label")
    columns = (model.meta.get("input") or {}).get("columns")
    if columns:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise SSLRayError(f"{p}: no column(s) {', '.join(map(repr, missing[:5]))}; the model was trained on the "
                              f"columns {', '.join(columns)}")
        feats = df[columns]
    else:
        feats = df.drop(columns=[label]) if label in df.columns else df
    bad = [str(c) for c in feats.columns if not pd.api.types.is_numeric_dtype(feats[c])]
    if bad:
        raise SSLRayError(f"{p}: feature columns must be numeric; not so: {', '.join(bad[:5])}")
    return feats.to_numpy(np.float64)


def _read_image(p: Path, shape: tuple[int, ...], invert: bool) -> np.ndarray:
    c, h, w = shape
    a = F.read_image(p, "L" if c == 1 else "RGB", (w, h), "input")
    if invert:
        a = 255 - a
    return a.reshape(h, w, c).transpose(2, 0, 1)


def predict(model_path: str, files: list[str], invert: bool = False) -> list[dict[str, Any]]:
    """One row per input sample: file, index, class, class name, probabilities."""
    model = load_model(model_path)
    names = model.info.get("class_names") or []
    rows = []
    for f, x in read_inputs(model, files, invert):
        logits = model.logits(x)
        probs = torch.softmax(logits.float(), dim=1)
        pred = model.classes(logits)
        for i in range(len(x)):
            k = int(pred[i])
            rows.append({"file": f, "index": i, "class": k,
                         "name": names[k] if 0 <= k < len(names) else str(k),
                         "probs": [round(float(v), 6) for v in probs[i]]})
    return rows


def predict_text(rows: list[dict[str, Any]], fmt: str = "table", probs: bool = False) -> str:
    """The rows of `predict` as `ssl-ray predict` prints them: a tab-separated table under a header line, CSV with
    a header, or JSON; the class probabilities as columns p0, p1, ... when `probs`."""
    if not probs:
        rows = [{k: v for k, v in r.items() if k != "probs"} for r in rows]
    if fmt == "json":
        return json.dumps(rows)
    flat = [{**{k: v for k, v in r.items() if k != "probs"},
             **{f"p{i}": p for i, p in enumerate(r.get("probs", []))}} for r in rows]
    header = list(flat[0]) if flat else ["file", "index", "class", "name"]
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=header)
        w.writeheader()
        w.writerows(flat)
        return buf.getvalue().rstrip("\n")
    if fmt == "table":
        return "\n".join("\t".join(str(v) for v in line) for line in [header] + [list(r.values()) for r in flat])
    raise SSLRayError(f"unknown predict format {fmt!r}; formats: table, csv, json")
