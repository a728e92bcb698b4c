"""Use a trained model: `ssl-ray export` (best trial or a train run -> model files; this file) and `ssl-ray predict`
(predict.py); what a model file is: model_file.py.

`export(path)` finds a checkpoint (source.py: the best trial of a tune experiment by validation error, at the
epoch `report` shows for it; or the last checkpoint of a `ssl-ray train` output directory), rebuilds the
method from it and writes:

- ``model.pt``: the evaluation network's state dict (EMA weights where the method keeps them) and, as plain
  data, everything needed to rebuild and feed it: method, config, dataset spec and DataInfo, the input
  format (shape, raw dtype, how raw inputs become the net's float inputs), the cluster -> class mapping of
  clustering methods, and where it came from (experiment, trial, epoch, val/test error at that epoch; what
  report shows for the trial, `reported`, and a `note` saying both figures where they differ).
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

import torch
from torch import nn

from ..data import files as F
from ..errors import SSLRayError
from ..engine.spec import plain  # plain containers for torch.load(weights_only=True)
from .model_file import (FORMAT, IMAGE_SUFFIXES, META_FILE, MODEL_FILE, SCRIPT_FILE, build_method,
                         classifier_module, info_dict, input_format)
from .predict import Model, load_model, predict, predict_text, read_inputs
from . import source as S

__all__ = ["FORMAT", "IMAGE_SUFFIXES", "META_FILE", "MODEL_FILE", "Model", "SCRIPT_FILE", "build_method",
           "classifier_module", "export", "find_checkpoint", "input_format", "load_model", "predict",
           "predict_text", "read_inputs"]


# ---- finding the checkpoint (which one: source.py) ------------------------------------------------------------
_inside, _checkpoints = S._inside, S.checkpoints


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
    from ..tuning.results import read_summary

    summary = read_summary(p) if (p / "summary.json").exists() else {}
    tid = trial or (summary.get("best") or {}).get("trial_id")
    if not tid:
        raise SSLRayError(f"{p}: no best trial in summary.json (did every trial fail?); pass --trial ID")
    attempts = [(_inside(d, root), start) for d, start in S.attempt_folders(p, tid)]
    if not attempts:
        raise SSLRayError(f"{p}: no trial directory for trial {tid}")
    kept = S.kept_checkpoints(attempts, root)
    if not kept:
        raise SSLRayError(f"{p}: trial {tid} left no checkpoint")
    history = S._history(p, tid, attempts)
    rep = S.reported(p, tid, summary)
    epoch, ck = S.pick(kept, history, rep)
    return {"checkpoint": ck, "kind": "tune", "experiment": str(p.resolve()), "trial_id": tid, "history": history,
            "summary": summary, "reported": rep, "kept": sorted(kept)}


def export(path: str, output: str | None = None, trial: str | None = None, torchscript: bool = True
           ) -> dict[str, Any]:
    """Write model.pt, model.torchscript.pt and model.json for the best trial of `path` (see module doc)."""
    from ..data import load_splits
    from ..engine import checkpoint
    from ..engine.spec import RunSpec
    from ..methods import get_method

    where = find_checkpoint(path, trial)
    state = checkpoint.load(where["checkpoint"])
    spec = RunSpec.from_dict(state["spec"])
    cfg = spec.method_config()
    splits = load_splits(spec.data, spec.seed)  # the shape facts (and validation data for clustering methods)
    info = info_dict(splits.info)
    method = build_method(spec.method, dataclasses.asdict(cfg), info)
    method.load_state_dict(state["method"])
    method.eval()
    net = classifier_module(method)
    epoch = int(state["epoch"])
    if where["kind"] == "train":  # the last checkpoint; result.json has the last epoch's and the best figures
        at, rep, note = S.train_figures(where["result"], epoch)
    else:
        at = next((h for h in where["history"] if int(h.get("epoch", -1)) == epoch), {})
        rep, note = where["reported"], S.tune_note(epoch, at, where["reported"], where["kept"])
    meta: dict[str, Any] = {
        "format": FORMAT, "method": spec.method, "config": dataclasses.asdict(cfg),
        "data": spec.data.to_dict(), "seed": spec.seed, "info": info,
        "input": input_format(info, str(splits.raw.x_train.dtype), splits.raw.meta.get("columns")),
        "output": "cluster ids" if get_method(spec.method).clustering else "class logits",
        "source": {"kind": where["kind"], "experiment": where["experiment"], "trial_id": where["trial_id"],
                   "checkpoint": str(where["checkpoint"]), "epoch": epoch,
                   "val_error": at.get("val_error"), "test_error": at.get("test_error"),
                   "reported": rep, "note": note},
    }
    if get_method(spec.method).clustering:  # cluster id -> class, matched on the validation split
        from ..data import eval_tensors
        from ..methods.common import predict_labels
        from ..nn.metrics import hungarian_match

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
