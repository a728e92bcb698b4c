"""Readable TensorBoard run names for one or several experiments: <experiment>/<trial>_<key=value...>, the trial
number zero-padded to the plan's width (trial07 sorts before trial10), and the HParams dashboard's columns declared
from the search spaces.

HParams: each trial's own event file declares an HParams "experiment" built from that trial's values alone (torch's
hparams(): every number on a continuous axis, so a choice of 200/400 reads 400.00). TensorBoard's hparams plugin
takes the first experiment declaration it finds (backend_context._find_experiment_tag: "arbitrarily pick the first
one"), and the log directory's top level (run ".") comes first. build_logdir writes one there from the spaces
(hparam_infos): a choice or grid is a Discrete domain of its values (strings, booleans or numbers); uniform,
quniform, randint, qrandint a RealInterval (IntInterval is the same proto) over its range; loguniform and
qloguniform too, since the plugin has no log domain and its log axis is a per-view toggle (Parallel Coordinates
and Scatter Plot: Logarithmic): such a column is displayed as `lr (log)` and its description says it was searched
log-uniformly, so the chart does not pass a linear axis off as the search's. The file is called
hparams.tfevents.ssl-ray: TensorBoard reads every file with "tfevents" in its name, and it is no trial's run.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import SSLRayError


def _clean(s: str) -> str:
    """A run name as a relative path inside the log dir: safe characters only, no `..`, no leading `/`."""
    parts = [re.sub(r"[^A-Za-z0-9_.=+\-]", "_", p) for p in s.split("/")]
    return "/".join("_" if p in ("", ".", "..") else p for p in parts)


def _short(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


HPARAMS_FILE = "hparams.tfevents.ssl-ray"
LOG = ("loguniform", "qloguniform")
INTERVAL = ("uniform", "quniform", "randint", "qrandint") + LOG
DISCRETE = ("choice", "grid")


def _domain(dist: str, args: list) -> tuple[str, list]:
    """("discrete", values) or ("interval", [lo, hi]) or ("log", [lo, hi]) of one `search:` entry; ("", []) when
    unknown. randint's upper end is exclusive (Ray's tune.randint)."""
    if dist in DISCRETE and isinstance(args, list) and args:
        return "discrete", list(args)
    if dist in INTERVAL and isinstance(args, list) and len(args) >= 2 and \
            all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args[:2]):
        lo, hi = args[0], (args[1] - 1 if dist == "randint" else args[1])
        return ("log" if dist in LOG else "interval"), [lo, hi]
    return "", []


def merged_domains(searches: list[dict]) -> dict[str, tuple[str, list]]:
    """Each searched key's domain over the experiments' `search:` dicts ({key: {dist: args}}): discrete values
    united, intervals spanned (log only when every experiment searched it log-uniformly), else ("", [])."""
    out: dict[str, tuple[str, list]] = {}
    for search in searches:
        for key, entry in search.items():
            kind, values = _domain(*next(iter(entry.items()))) if isinstance(entry, dict) and len(entry) == 1 \
                else ("", [])
            if key not in out:
                out[key] = (kind, values)
                continue
            was, old = out[key]
            if was == kind == "discrete":
                out[key] = (kind, old + [v for v in values if v not in old])
            elif was in ("interval", "log") and kind in ("interval", "log"):
                out[key] = ("log" if was == kind == "log" else "interval", [min(old[0], values[0]),
                                                                            max(old[1], values[1])])
            else:
                out[key] = ("", [])
    return out


def hparam_infos(searches: list[dict]) -> list:
    """The HParams columns (api_pb2.HParamInfo) for merged_domains(searches): module docstring."""
    from tensorboard.plugins.hparams import api_pb2
    from google.protobuf import struct_pb2

    infos = []
    for key, (kind, values) in merged_domains(searches).items():
        info = api_pb2.HParamInfo(name=key, display_name=key)
        if kind == "discrete":
            if all(isinstance(v, bool) for v in values):
                info.type = api_pb2.DATA_TYPE_BOOL
            elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                info.type = api_pb2.DATA_TYPE_FLOAT64
            else:
                info.type, values = api_pb2.DATA_TYPE_STRING, [str(v) for v in values]
            lv = struct_pb2.ListValue()
            lv.extend(values)
            info.domain_discrete.CopyFrom(lv)
            info.description = "searched among " + ", ".join(map(str, values))
        elif kind in ("interval", "log"):
            info.type = api_pb2.DATA_TYPE_FLOAT64
            info.domain_interval.min_value, info.domain_interval.max_value = float(values[0]), float(values[1])
            info.description = f"searched {'log-uniformly' if kind == 'log' else 'uniformly'} in [{values[0]:g}, " \
                               f"{values[1]:g}]"
            if kind == "log":
                info.display_name = f"{key} (log)"
                info.description += ("; TensorBoard has no log domain: choose Logarithmic for this axis "
                                     "(Parallel Coordinates or Scatter Plot view)")
        else:
            info.type = api_pb2.DATA_TYPE_UNSET  # searched differently in different experiments: no domain
        infos.append(info)
    return infos


def write_hparams_config(root: str | os.PathLike, searches: list[dict]) -> Path | None:
    """The HParams experiment declaration (hparam_infos and the error metrics every trial logs) as
    <root>/HPARAMS_FILE; None when no experiment has searched keys."""
    import time

    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    from ..engine.tblog import SCALAR_GROUPS

    infos = hparam_infos(searches)
    if not infos:
        return None
    metrics = [api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for _, tag in SCALAR_GROUPS]
    exp = plugin_data_pb2.HParamsPluginData(experiment=api_pb2.Experiment(hparam_infos=infos, metric_infos=metrics),
                                            version=metadata.PLUGIN_DATA_VERSION)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(
        tag=metadata.EXPERIMENT_TAG, metadata=metadata.create_summary_metadata(exp),
        tensor=metadata.NULL_TENSOR)])
    path = Path(root) / HPARAMS_FILE
    with open(path, "wb") as f:
        w = RecordWriter(f)
        now = time.time()
        w.write(event_pb2.Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
        w.write(event_pb2.Event(wall_time=now, summary=summary).SerializeToString())
    return path


def _space_doc(exp: Path) -> dict:
    """The experiment's ssl_ray_space.json ({} when missing or unreadable: the names are only less readable)."""
    try:
        doc = json.loads((exp / "ssl_ray_space.json").read_text(encoding="utf-8"))
    except (ValueError, OSError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _plan_index(folder: str) -> int | None:
    """The plan index in a trial folder's name, trial_fn_<trial id>_<plan index>[...] (tune.py's trial_dirname)."""
    parts = folder.split("_")
    return int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else None


def runs(path: str) -> list[tuple[str, str]]:
    """(run name, event-file directory) for an experiment (trials) or a train run."""
    p = Path(path)
    exp = p.name or p.resolve().name
    if (p / "tensorboard").is_dir():  # an `ssl-ray train` output directory
        return [(exp, str((p / "tensorboard").resolve()))]
    doc = _space_doc(p)
    searched = [str(k) for k in doc.get("search") or {}] if isinstance(doc.get("search"), dict) else []
    found = sorted(p.glob("*/tensorboard"))
    numbers = [_plan_index(t.parent.name) for t in found]
    plan = doc.get("plan")
    planned = len(plan) if isinstance(plan, list) else 0
    width = len(str(max([planned - 1, 0] + [n for n in numbers if n is not None])))  # trial07 sorts before trial10
    out = []
    for t, number in zip(found, numbers):
        trial = t.parent
        name = f"trial{number:0{width}d}" if number is not None else trial.name[:40]
        params = trial / "params.json"
        if params.exists() and searched:
            try:
                cfg = json.loads(params.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                cfg = {}  # an unreadable params.json only costs the run its readable name
            cfg = cfg if isinstance(cfg, dict) else {}
            name += "_" + ",".join(f"{k}={_short(cfg[k])}".replace("/", "_") for k in searched if k in cfg)
        out.append((f"{exp}/{name}", str(t.resolve())))
    out.sort()  # by trial number (zero-padded)
    if not out:
        raise SSLRayError(f"no TensorBoard files under {path} (expected <trial>/tensorboard/ or tensorboard/)")
    return out


def build_logdir(paths: list[str], root: str) -> str:
    """A TensorBoard log directory under `root` with one readable folder per run (<experiment>/<trial>_<k=v>),
    holding symbolic links to the runs' event files (Tune's trial folders have commas in their names, which
    --logdir_spec cannot take), and the HParams columns of their search spaces (module docstring). Returns
    `root`."""
    items, searches = [], []
    for path in paths:
        if not os.path.exists(path):
            raise SSLRayError(f"no such experiment or run directory: {path}")
        items += runs(path)
        search = _space_doc(Path(path)).get("search")
        if isinstance(search, dict) and search:
            searches.append(search)
    top = os.path.realpath(root)
    for name, d in items:
        target = Path(root) / _clean(name)
        if not os.path.realpath(target).startswith(top + os.sep):  # belt and braces: never outside `root`
            raise SSLRayError(f"refusing run name {name!r}: it would leave the TensorBoard folder")
        for f in Path(d).rglob("events.out.tfevents.*"):
            link = target / f.relative_to(d)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(f.resolve())
    write_hparams_config(root, searches)
    return root
