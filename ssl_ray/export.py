"""Use a trained model: `ssl-ray export` (best trial or a train run -> model files) and `ssl-ray predict`.

`export(path)` finds a checkpoint (the best trial of a tune experiment by validation error, at the kept
checkpoint with the lowest validation error; or the last checkpoint of a `ssl-ray train` output directory),
rebuilds the method from it and writes:

- ``model.pt``: the evaluation network's state dict (EMA weights where the method keeps them) and, as plain
  data, everything needed to rebuild and feed it: method, config, dataset spec and DataInfo, the input
  format (shape, raw dtype, how raw inputs become the net's float inputs), the cluster -> class mapping of
  clustering methods, and where it came from (experiment, trial, epoch, val/test error at that epoch).
  Loaded with ``torch.load(weights_only=True)``: a model file from someone else cannot run code.
- ``model.torchscript.pt``: the same network traced with TorchScript (float inputs -> logits), with the
  metadata as ``ssl_ray.json`` inside; loads with ``torch.jit.load`` alone, without ssl-ray.
- ``model.json``: the metadata, readable.

The files are written into the output folder atomically (each to a temporary file, then renamed): files
of an earlier export there are replaced; a --output that is a file, or a place that cannot be written, is
refused in one line. Only files inside the folder given are read: the checkpoint a run's result.json names
is looked up inside that folder (a copied run exports its own weights), and a path or link leading out of it
is refused.

`predict(model, files)` reads images (PNG/JPG/... through PIL, converted to the channels and size the
model expects), .npy/.npz arrays (never unpickled) or CSV tables (numeric feature columns; the label column
of train's csv dataset is dropped when present), applies the same raw -> float mapping as training
(uint8 / 255) and returns one row per input with the predicted class (and the class probabilities). A file
with no samples, or with NaN or infinite values, is refused (one line naming the file and the sample).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import files as F
from .errors import SSLRayError
from .engine.spec import plain  # plain containers for torch.load(weights_only=True)

FORMAT = "ssl-ray-model/1"
MODEL_FILE, SCRIPT_FILE, META_FILE = "model.pt", "model.torchscript.pt", "model.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def classifier_module(method: Any) -> nn.Module:
    """The module computing `method.predict` (float inputs -> logits), in eval mode: the method's own
    export_module() (methods/base.py says which module each kind of method gives)."""
    return method.export_module()


# ---- finding the checkpoint -------------------------------------------------------------------------------
def _inside(path: Path, root: Path) -> Path:
    """`path` when it, links followed, lies inside `root`; an error otherwise (export reads only the folder given)."""
    real, base = path.resolve(), root.resolve()
    if real != base and base not in real.parents:
        raise SSLRayError(f"{path} leads outside {root} (to {real}); export reads only files inside the folder "
                          f"it is given")
    return path


def _checkpoints(d: Path, root: Path) -> list[Path]:
    found = [_inside(p, root).parent for p in d.rglob("state.pt") if p.parent.name.startswith("checkpoint")]
    return sorted(found, key=lambda p: (int(p.name.rsplit("_", 1)[-1]) if p.name.rsplit("_", 1)[-1].isdigit()
                                        else -1, p.stat().st_mtime))


def _recorded_checkpoint(run: Path, res: dict[str, Any]) -> Path | None:
    """The checkpoint a train run's result.json names, taken inside `run` (the folder given): its path relative
    to the run folder it was written in (result.json's `output`). A stored path outside that folder, or one
    that leads out of `run` (`..`, a link), is refused."""
    stored, written_in = res.get("checkpoint"), res.get("output")
    if not stored:
        return None
    if not isinstance(stored, str):
        raise SSLRayError(f"{run / 'result.json'} is damaged (checkpoint: expected a path, got "
                          f"{type(stored).__name__})")
    ck = Path(stored)
    if ck.is_absolute():
        base = Path(written_in) if isinstance(written_in, str) and Path(written_in).is_absolute() else None
        if base is None or not (ck == base or base in ck.parents):
            raise SSLRayError(f"{run / 'result.json'} names checkpoint {stored}, outside the run folder it was "
                              f"written in ({written_in}); export takes only checkpoints inside {run}")
        ck = ck.relative_to(base)
    if ".." in ck.parts:
        raise SSLRayError(f"{run / 'result.json'} names checkpoint {stored}, which leads outside {run}")
    return _inside(run / ck, run)


def find_checkpoint(path: str, trial: str | None = None) -> dict[str, Any]:
    """Locate the checkpoint to export. Returns {checkpoint, kind, experiment, trial_id, history}."""
    p = Path(path)
    if not p.is_dir():
        raise SSLRayError(f"no such experiment or run directory: {path}" if not p.exists() else
                          f"{path} is a file: give the folder of a tune experiment or of a train run")
    if (p / "summary.json").exists() or (p / "results.parquet").exists():
        return _from_experiment(p, trial, p)
    if (p / "result.json").exists():  # an `ssl-ray train` output directory
        res = F.read_json(p / "result.json", "run record")
        if not isinstance(res, dict):
            raise SSLRayError(f"{p / 'result.json'} is damaged (not a JSON object)")
        ck = _recorded_checkpoint(p, res)
        if ck is None or not (ck / "state.pt").exists():
            cks = _checkpoints(p, p)
            if not cks:
                raise SSLRayError(f"no checkpoint under {path}")
            ck = cks[-1]
        _inside(ck / "state.pt", p)
        return {"checkpoint": ck, "kind": "train", "experiment": str(p.resolve()), "trial_id": None,
                "history": [], "result": res}
    exps = sorted((d for d in p.iterdir() if d.is_dir() and (d / "summary.json").exists()),
                  key=lambda d: (d / "summary.json").stat().st_mtime)
    if exps:  # e.g. ssl_ray_runs/tune: the latest finished experiment
        return _from_experiment(exps[-1], trial, p)
    raise SSLRayError(f"{path} is neither a finished tune experiment (summary.json), nor a train output "
                      f"(result.json), nor a folder of experiments")


def _from_experiment(p: Path, trial: str | None, root: Path) -> dict[str, Any]:
    from .tuning import experiment
    from .tuning.results import read_summary

    summary = read_summary(p) if (p / "summary.json").exists() else {}
    tid = trial or (summary.get("best") or {}).get("trial_id")
    if not tid:
        raise SSLRayError(f"{p}: no best trial in summary.json (did every trial fail?); pass --trial ID")
    dirs = experiment.trial_folders(p, tid)
    if not dirs:
        raise SSLRayError(f"{p}: no trial directory for trial {tid}")
    cks = _checkpoints(_inside(dirs[0], root), root)
    if not cks:
        raise SSLRayError(f"{p}: trial {tid} left no checkpoint")
    history = experiment.result_rows(None, str(dirs[0] / "result.json"))
    return {"checkpoint": _best_kept(cks, history), "kind": "tune", "experiment": str(p.resolve()),
            "trial_id": tid, "history": history, "summary": summary}


def _best_kept(cks: list[Path], history: list[dict[str, Any]]) -> Path:
    """Of the checkpoints Tune kept (the last few), the one at the epoch with the lowest validation error
    (the latest of equals); the last one when the history does not say."""
    from .engine import checkpoint

    val = {int(h["epoch"]): h["val_error"] for h in history
           if isinstance(h.get("epoch"), int) and isinstance(h.get("val_error"), (int, float))}
    best, key = cks[-1], None
    for i, ck in enumerate(cks):
        try:
            epoch = int(checkpoint.load(ck)["epoch"])
        except SSLRayError:
            continue
        if epoch in val and (key is None or (val[epoch], -i) <= key):
            best, key = ck, (val[epoch], -i)
    return best


# ---- rebuilding --------------------------------------------------------------------------------------------
def _info_dict(info) -> dict[str, Any]:
    return {"name": info.name, "input_shape": list(info.input_shape), "num_classes": info.num_classes,
            "kind": info.kind, "class_names": list(info.class_names)}


def _info(d: dict[str, Any]):
    from .data import DataInfo

    return DataInfo(d["name"], tuple(d["input_shape"]), int(d["num_classes"]), d["kind"], tuple(d["class_names"]))


def build_method(method: str, config: dict[str, Any], info: dict[str, Any]):
    from . import config as C
    from .methods import get_method

    cls = get_method(method)
    cfg = C.build(cls.Config, config, source=f"model of method {method}")
    torch.manual_seed(0)
    return cls(cfg, _info(info), "cpu")


def input_format(info: dict[str, Any], raw_dtype: str, columns: list[str] | None = None) -> dict[str, Any]:
    image = info["kind"] == "image"
    out = {"shape": info["input_shape"], "raw_dtype": raw_dtype,
           "to_float": "x / 255 (uint8 -> float32 in [0, 1])" if raw_dtype == "uint8" else "float32, unchanged",
           "layout": "N, C, H, W" if image else "N, D"}
    if columns:  # trained on a CSV table: predict reads these columns of a CSV by name
        out["columns"] = list(columns)
    return out


def export(path: str, output: str | None = None, trial: str | None = None, torchscript: bool = True
           ) -> dict[str, Any]:
    """Write model.pt, model.torchscript.pt and model.json for the best trial of `path` (see module doc)."""
    from .data import load_splits
    from .engine import checkpoint
    from .engine.spec import RunSpec
    from .methods import get_method

    where = find_checkpoint(path, trial)
    state = checkpoint.load(where["checkpoint"])
    spec = RunSpec.from_dict(state["spec"])
    cfg = spec.method_config()
    splits = load_splits(spec.data, spec.seed)  # the shape facts (and validation data for clustering methods)
    info = _info_dict(splits.info)
    method = build_method(spec.method, dataclasses.asdict(cfg), info)
    method.load_state_dict(state["method"])
    method.eval()
    net = classifier_module(method)
    epoch = int(state["epoch"])
    at: dict[str, Any] = next((h for h in where["history"] if int(h.get("epoch", -1)) == epoch), {})
    meta: dict[str, Any] = {
        "format": FORMAT, "method": spec.method, "config": dataclasses.asdict(cfg),
        "data": spec.data.to_dict(), "seed": spec.seed, "info": info,
        "input": input_format(info, str(splits.raw.x_train.dtype), splits.raw.meta.get("columns")),
        "output": "cluster ids" if get_method(spec.method).clustering else "class logits",
        "source": {"kind": where["kind"], "experiment": where["experiment"], "trial_id": where["trial_id"],
                   "checkpoint": str(where["checkpoint"]), "epoch": epoch,
                   "val_error": at.get("val_error"), "test_error": at.get("test_error")},
    }
    if get_method(spec.method).clustering:  # cluster id -> class, matched on the validation split
        from .data import eval_tensors
        from .methods.common import predict_labels
        from .nn.metrics import hungarian_match

        x_val, y_val = eval_tensors(splits, "val", "cpu")
        pred = predict_labels(net, x_val).numpy()
        k = method.num_clusters
        mapping = hungarian_match(pred, y_val.numpy(), max(k, int(pred.max()) + 1), info["num_classes"])
        meta["cluster_to_class"] = [int(mapping[c]) for c in range(len(mapping))]
    out = F.output_folder(output if output else Path(where["experiment"]) / "export", "--output")
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    F.write_output(out / MODEL_FILE, lambda tmp: torch.save({"meta": plain(meta), "state_dict": sd}, tmp))
    written = [str(out / MODEL_FILE)]
    meta["torchscript"] = None
    if torchscript:
        traced, meta["torchscript"] = _trace(net, info)
        if traced is not None:
            extra = {"ssl_ray.json": json.dumps(meta, default=str)}
            F.write_output(out / SCRIPT_FILE, lambda tmp: traced.save(tmp, _extra_files=extra))
            written.append(str(out / SCRIPT_FILE))
        elif (out / SCRIPT_FILE).is_file():  # an earlier export's, of another model
            (out / SCRIPT_FILE).unlink()
    F.write_output(out / META_FILE, json.dumps(meta, indent=2, default=str))
    written.append(str(out / META_FILE))
    return {"output": str(out), "files": written, **{k: meta[k] for k in ("method", "source", "input", "torchscript")}}


def _trace(net: nn.Module, info: dict[str, Any]) -> tuple[Any, str]:
    """(`net` traced with TorchScript, SCRIPT_FILE) when the traced module gives the same logits on other inputs;
    (None, why not) otherwise."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, *info["input_shape"], generator=g)
    x2 = torch.rand(7, *info["input_shape"], generator=g)
    import warnings

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            traced = torch.jit.trace(net, x, check_trace=False)
            torch.testing.assert_close(traced(x2), net(x2))
        return traced, SCRIPT_FILE
    except Exception as e:  # a net TorchScript cannot trace: the state dict alone still works
        return None, f"not written: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


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
        except Exception as e:
            raise SSLRayError(f"{p} cannot be loaded safely as an ssl-ray model: {str(e).splitlines()[0]}") from None
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
