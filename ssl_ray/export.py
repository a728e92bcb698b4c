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

`predict(model, files)` reads images (PNG/JPG/... through PIL, converted to the channels and size the
model expects) or .npy/.npz arrays, applies the same raw -> float mapping as training (uint8 / 255) and
returns one row per input with the predicted class (and the class probabilities).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import SSLRayError
from .engine.loop import _plain  # plain containers for torch.load(weights_only=True)

FORMAT = "ssl-ray-model/1"
MODEL_FILE, SCRIPT_FILE, META_FILE = "model.pt", "model.torchscript.pt", "model.json"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


# ---- the classifier of a method, as one module --------------------------------------------------------------
class _ClassHead(nn.Module):
    """Class logits of a discriminator that returns (adversarial output, class logits) (vcagan, infogan)."""

    def __init__(self, d: nn.Module):
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(x)[1]


class _NearestGenerated(nn.Module):
    """The plain GAN's classifier: the category of the nearest of a fixed bank of generated samples."""

    bank: torch.Tensor  # buffers
    cats: torch.Tensor

    def __init__(self, bank: torch.Tensor, cats: torch.Tensor, num: int):
        super().__init__()
        self.register_buffer("bank", bank)
        self.register_buffer("cats", cats)
        self.num = num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(x.flatten(1).float(), self.bank).argmin(dim=1)
        return nn.functional.one_hot(self.cats[nearest], self.num).float()


def classifier_module(method: Any) -> nn.Module:
    """The module computing `method.predict` (float inputs -> logits), in eval mode.

    A method (a plugin's too) can say which by defining ``export_module()``; otherwise: the evaluation net of
    the ImprovedGAN family (`eval_net`: EMA weights when kept), a ClassifierMethod's `net`, the class head of
    a conditional GAN's discriminator, the plain GAN's nearest-generated-sample rule.
    """
    hook = getattr(method, "export_module", None)
    if callable(hook):
        return hook().eval()
    net = getattr(method, "eval_net", None)
    if isinstance(net, nn.Module):
        return net.eval()
    net = getattr(method, "net", None)
    if isinstance(net, nn.Module):
        return net.eval()
    from .methods._cgan import CatGAN
    from .methods.gan import GAN

    if isinstance(method, GAN):
        bank, c = method.generated_bank()
        return _NearestGenerated(bank, c, method.cfg.d_c).eval()
    if isinstance(method, CatGAN):
        return _ClassHead(method.D).eval()
    raise SSLRayError(f"cannot export method {type(method).__name__}: it has no `net`/`eval_net` module; give it "
                      f"an export_module() that returns the module computing its predict()")


# ---- finding the checkpoint -------------------------------------------------------------------------------
def _checkpoints(d: Path) -> list[Path]:
    found = [p.parent for p in d.rglob("state.pt") if p.parent.name.startswith("checkpoint")]
    return sorted(found, key=lambda p: (int(p.name.rsplit("_", 1)[-1]) if p.name.rsplit("_", 1)[-1].isdigit()
                                        else -1, p.stat().st_mtime))


def _history(trial_dir: Path) -> list[dict[str, Any]]:
    rows = []
    f = trial_dir / "result.json"
    if f.exists():
        for line in f.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def find_checkpoint(path: str, trial: str | None = None) -> dict[str, Any]:
    """Locate the checkpoint to export. Returns {checkpoint, kind, experiment, trial_id, history}."""
    p = Path(path)
    if not p.exists():
        raise SSLRayError(f"no such experiment or run directory: {path}")
    if (p / "summary.json").exists() or (p / "results.parquet").exists():
        return _from_experiment(p, trial)
    if (p / "result.json").exists():  # an `ssl-ray train` output directory
        res = json.loads((p / "result.json").read_text())
        ck = Path(res["checkpoint"]) if res.get("checkpoint") else None
        if ck is None or not (ck / "state.pt").exists():
            cks = _checkpoints(p)
            if not cks:
                raise SSLRayError(f"no checkpoint under {path}")
            ck = cks[-1]
        return {"checkpoint": ck, "kind": "train", "experiment": str(p.resolve()), "trial_id": None,
                "history": [], "result": res}
    exps = sorted((d for d in p.iterdir() if d.is_dir() and (d / "summary.json").exists()),
                  key=lambda d: (d / "summary.json").stat().st_mtime)
    if exps:  # e.g. ssl_ray_runs/tune: the latest finished experiment
        return _from_experiment(exps[-1], trial)
    raise SSLRayError(f"{path} is neither a finished tune experiment (summary.json), nor a train output "
                      f"(result.json), nor a folder of experiments")


def _from_experiment(p: Path, trial: str | None) -> dict[str, Any]:
    summary = json.loads((p / "summary.json").read_text()) if (p / "summary.json").exists() else {}
    tid = trial or (summary.get("best") or {}).get("trial_id")
    if not tid:
        raise SSLRayError(f"{p}: no best trial in summary.json (did every trial fail?); pass --trial ID")
    dirs = [d for d in p.iterdir() if d.is_dir() and f"_{tid}_" in d.name + "_"]
    if not dirs:
        raise SSLRayError(f"{p}: no trial directory for trial {tid}")
    cks = _checkpoints(dirs[0])
    if not cks:
        raise SSLRayError(f"{p}: trial {tid} left no checkpoint")
    history = _history(dirs[0])
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


def input_format(info: dict[str, Any], raw_dtype: str) -> dict[str, Any]:
    image = info["kind"] == "image"
    return {"shape": info["input_shape"], "raw_dtype": raw_dtype,
            "to_float": "x / 255 (uint8 -> float32 in [0, 1])" if raw_dtype == "uint8" else "float32, unchanged",
            "layout": "N, C, H, W" if image else "N, D"}


def export(path: str, output: str | None = None, trial: str | None = None, torchscript: bool = True
           ) -> dict[str, Any]:
    """Write model.pt, model.torchscript.pt and model.json for the best trial of `path` (see module doc)."""
    from .data import load_splits
    from .engine import checkpoint
    from .engine.loop import RunSpec
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
        "input": input_format(info, str(splits.raw.x_train.dtype)),
        "output": "cluster ids" if get_method(spec.method).clustering else "class logits",
        "source": {"kind": where["kind"], "experiment": where["experiment"], "trial_id": where["trial_id"],
                   "checkpoint": str(where["checkpoint"]), "epoch": epoch,
                   "val_error": at.get("val_error"), "test_error": at.get("test_error")},
    }
    if get_method(spec.method).clustering:  # cluster id -> class, matched on the validation split
        from .data import eval_tensors
        from .nn.metrics import hungarian_match, predict_labels

        x_val, y_val = eval_tensors(splits, "val", "cpu")
        pred = predict_labels(net, x_val).numpy()
        k = method.num_clusters
        mapping = hungarian_match(pred, y_val.numpy(), max(k, int(pred.max()) + 1), info["num_classes"])
        meta["cluster_to_class"] = [int(mapping[c]) for c in range(len(mapping))]
    out = Path(output) if output else Path(where["experiment"]) / "export"
    out.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    torch.save({"meta": _plain(meta), "state_dict": sd}, out / MODEL_FILE)
    files = [str(out / MODEL_FILE)]
    meta["torchscript"] = None
    if torchscript:
        meta["torchscript"] = _torchscript(net, info, meta, out / SCRIPT_FILE)
        if meta["torchscript"] == SCRIPT_FILE:
            files.append(str(out / SCRIPT_FILE))
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    files.append(str(out / META_FILE))
    return {"output": str(out), "files": files, **{k: meta[k] for k in ("method", "source", "input", "torchscript")}}


def _torchscript(net: nn.Module, info: dict[str, Any], meta: dict[str, Any], dest: Path) -> str:
    """Trace `net`; keep the file only if the traced module gives the same logits on other inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, *info["input_shape"], generator=g)
    x2 = torch.rand(7, *info["input_shape"], generator=g)
    import warnings

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            traced = torch.jit.trace(net, x, check_trace=False)
            torch.testing.assert_close(traced(x2), net(x2))
        traced.save(str(dest), _extra_files={"ssl_ray.json": json.dumps(meta, default=str)})
        return SCRIPT_FILE
    except Exception as e:  # a net TorchScript cannot trace: the state dict alone still works
        if dest.exists():
            dest.unlink()
        return f"not written: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]


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
        """Raw array(s) -> the float batch the net takes (N, *shape)."""
        a = np.asarray(arr)
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
        if a.dtype == np.uint8:
            return torch.from_numpy(a.astype(np.float32) / 255.0)
        if not np.issubdtype(a.dtype, np.number):
            raise SSLRayError(f"{source}: expected a numeric array, got dtype {a.dtype}")
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

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
    if _is_torchscript(p):
        import warnings

        extra = {"ssl_ray.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(p), map_location="cpu", _extra_files=extra)
        if not extra["ssl_ray.json"]:
            raise SSLRayError(f"{p} is a TorchScript file without ssl-ray metadata (not written by ssl-ray export)")
        return Model(json.loads(extra["ssl_ray.json"]), net)
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise SSLRayError(f"{p} cannot be loaded safely as an ssl-ray model: {str(e).splitlines()[0]}") from None
    if not isinstance(blob, dict) or (blob.get("meta") or {}).get("format") != FORMAT:
        raise SSLRayError(f"{p} is not an ssl-ray model file (format {FORMAT})")
    meta = blob["meta"]
    method = build_method(meta["method"], meta["config"], meta["info"])
    net = classifier_module(method)
    net.load_state_dict(blob["state_dict"])
    return Model(meta, net)


def _is_torchscript(p: Path) -> bool:
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_inputs(model: Model, files: list[str], invert: bool = False) -> list[tuple[str, torch.Tensor]]:
    """(name, float batch) per file: images via PIL, arrays from .npy / .npz (key x, or the only array)."""
    out = []
    for f in files:
        p = Path(f)
        if not p.exists():
            raise SSLRayError(f"no such file: {f}")
        suf = p.suffix.lower()
        if suf == ".npy":
            out.append((f, model.prepare(np.load(p, allow_pickle=False), f)))
        elif suf == ".npz":
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "x" if "x" in keys else (keys[0] if len(keys) == 1 else None)
                if key is None:
                    raise SSLRayError(f"{f}: an .npz needs an array named x (or only one array); found {keys}")
                out.append((f, model.prepare(z[key], f)))
        elif suf in IMAGE_SUFFIXES:
            if not model.image:
                raise SSLRayError(f"{f}: the model takes {model.info['kind']} of shape {model.shape}, not images")
            out.append((f, model.prepare(_read_image(p, model.shape, invert), f)))
        else:
            raise SSLRayError(f"{f}: unknown file type {suf!r}; give images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                              f"or .npy / .npz arrays")
    return out


def _read_image(p: Path, shape: tuple[int, ...], invert: bool) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    c, h, w = shape
    try:
        with Image.open(p) as f:
            im = f.convert("L" if c == 1 else "RGB")
            if im.size != (w, h):
                im = im.resize((w, h), Image.Resampling.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise SSLRayError(f"{p}: cannot read the image: {e}") from None
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
