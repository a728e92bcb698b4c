"""What the commands share: the option lists of train/tune/compare, the data spec and the checks on numbers and
folders (each a one-line SSLRayError, which the group turns into exit 2)."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import click

from ..errors import SSLRayError

F = TypeVar("F", bound=Callable[..., Any])
WAIT_HELP = ("with --address: a request larger than the cluster has now waits for its autoscaler to add nodes "
             "(default when the cluster can grow: a launcher config or an autoscaler is seen, or nothing says it "
             "cannot) instead of being refused; --no-wait-for-resources refuses at once")


# ---- shared options -----------------------------------------------------------------------------------
def data_options(f):
    f = click.option("--dataset", default=None, help="dataset name (`ssl-ray datasets`); default: digits")(f)
    f = click.option("--data-root", default=None, help="where dataset files live (default $SSL_RAY_DATA or "
                     "~/.cache/ssl_ray/data)")(f)
    f = click.option("--download", is_flag=True, help="download the dataset if absent (torchvision datasets)")(f)
    f = click.option("--labels", type=int, default=None, help="labelled training examples, class-balanced "
                     "(default 50)")(f)
    f = click.option("--val-size", type=int, default=None, help="validation examples held out of training "
                     "(default: per dataset)")(f)
    f = click.option("--val-per-label", type=float, default=None, help="label-frugal model selection: a validation "
                     "set of this many examples per training label (e.g. 1.0; overrides --val-size)")(f)
    f = click.option("--data-opt", "data_opts", multiple=True, metavar="KEY=VALUE",
                     help="dataset option, e.g. noise=0.06 for circles (repeatable)")(f)
    return f


@dataclass(frozen=True)
class Opt:
    """One command-line option: click's declarations and keywords, and the TuneOptions field it sets (None: an
    option of the command that is not one; `negate`: the flag turns the field off)."""

    decls: tuple[str, ...]
    kwargs: dict[str, Any]
    field: str | None = None
    negate: bool = False

    @property
    def name(self) -> str:  # the keyword the command receives
        return str(click.Option(list(self.decls), **self.kwargs).name)


def _apply(opts: list[Opt]) -> Callable[[F], F]:
    def decorate(f: F) -> F:
        for o in reversed(opts):  # click lists options in the order their decorators are written
            f = click.option(*o.decls, **o.kwargs)(f)
        return f

    return decorate


PERF_OPTIONS = [  # in --help order
    Opt(("--no-resident-data", "host_data"), dict(is_flag=True, help="on a GPU, keep the dataset on the host "
        "and copy each batch (default: resident on the device)"), "data_resident", negate=True),
    Opt(("--compile", "compile_"), dict(is_flag=True, help="torch.compile the method's models"), "compile"),
    Opt(("--amp",), dict(is_flag=True, help="mixed precision: bfloat16 autocast in the training steps"), "amp"),
]
perf_options = _apply(PERF_OPTIONS)


def _data_spec(dataset, data_root, download, labels, val_size, data_opts, base=None, val_per_label=None):
    from ..config import parse_set
    from ..data import DataSpec

    spec = base or DataSpec()
    if dataset and dataset != spec.name:  # another dataset than the space's: its options and split size do not apply
        spec.options, spec.val_size = {}, None
    if dataset:
        spec.name = dataset
    if data_root:
        spec.root = data_root
    if download:
        spec.download = True
    if labels is not None:
        spec.labels = labels
    if val_size is not None:
        spec.val_size = val_size
    if val_per_label is not None:
        spec.val_per_label = val_per_label
    if data_opts:
        opts = parse_set(data_opts)
        spec.options = {**spec.options, **opts}
    path = (spec.options or {}).get("path")
    if isinstance(path, str) and path and "://" not in path:  # your own file (npz, csv): trials run elsewhere
        spec.options = {**spec.options, "path": os.path.abspath(os.path.expanduser(path))}
    return spec


def _pct(v) -> str:
    return "-" if v is None else f"{v:.2f}%"


def _read_result(out: str) -> dict:
    try:
        with open(os.path.join(out, "result.json"), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _check_positive(**values: float | None) -> None:
    for k, v in values.items():
        if v is not None and not (v > 0 and math.isfinite(v)):  # click's FLOAT accepts nan and inf
            raise SSLRayError(f"--{k.replace('_', '-')} must be positive, got {v}")


def _check_non_negative(**values: float | None) -> None:
    for k, v in values.items():
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise SSLRayError(f"--{k.replace('_', '-')} cannot be negative, got {v}")


SEED_LIMIT = 2 ** 32  # NumPy/Ray seeding accept [0, 2**32); the trainer derives larger seeds from it


def _check_seed(seed: int, extra: int = 0) -> None:
    if not 0 <= seed < SEED_LIMIT - extra:
        raise SSLRayError(f"--seed must be in [0, {SEED_LIMIT - 1 - extra}]" + (
            f" with --confirm-seeds {extra}" if extra else "") + f", got {seed}")


def _check_address(address: str | None) -> None:
    """--address '' (or only blanks) would quietly mean "no address": a local instance (and, for train, a run
    through Ray Train). Refused: give an address or leave the option out."""
    if address is not None and not address.strip():
        raise SSLRayError(f"--address {address!r} is empty: give host:port (e.g. 10.0.0.5:6379), ray://host:port or "
                          f"auto, or leave --address out to run locally")


def _check_path_text(path: str | None, flag: str) -> None:
    """A folder given on the command line (--output, --storage): no control character (a newline, an escape:
    a folder no listing shows as typed) and no part longer than a file name may be (255 bytes: an OSError 36
    traceback once the run had started)."""
    import unicodedata

    from ..tuning.options import NAME_MAX

    if path is None:
        return
    bad = next((c for c in path if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        raise SSLRayError(f"{flag} {path[:80]!r} holds the control character {bad!r}: give a path of printable "
                          f"characters")
    for part in path.split("/"):
        size = len(part.encode("utf-8", "surrogateescape"))
        if size > NAME_MAX:
            raise SSLRayError(f"{flag}: the folder name {part[:40]!r}... is {size} bytes long; a file or folder "
                              f"name takes at most {NAME_MAX} bytes")


def _check_writable(path: str) -> None:
    from pathlib import Path

    if "://" in path:
        return
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / ".ssl_ray_write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise SSLRayError(f"cannot write to {path}: {e.strerror or e}") from None
