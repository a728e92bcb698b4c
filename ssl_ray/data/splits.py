"""Seeded, class-balanced splits and the R/T batch stream.

- validation: held out of the training set (stratified), the only split tuning looks at;
- labelled: `labels` examples, balanced over classes, drawn from what is left;
- unlabelled: everything left after the validation split (the labelled examples included, as in the
  ImprovedGAN reference code, which uses the whole training set as unlabelled data);
- test: the dataset's official test set.
The same (dataset, labels, val_size, seed) gives the same split on every machine and worker.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ConfigError, DataError
from ..nn.devices import to_device
from .base import DataInfo, RawData, to_float
from .registry import DataSpec, get_entry, load_dataset


@dataclass
class Splits:
    info: DataInfo
    raw: RawData
    lab_idx: np.ndarray  # indices into raw.x_train
    unl_idx: np.ndarray
    val_idx: np.ndarray

    @property
    def num_labels(self) -> int:
        return len(self.lab_idx)


def _balanced_pick(y: np.ndarray, pool: np.ndarray, n: int, num_classes: int, rng: np.random.Generator,
                   what: str) -> np.ndarray:
    """n indices from `pool`, as equal per class as possible (the remainder to randomly chosen classes)."""
    per = np.full(num_classes, n // num_classes)
    per[rng.permutation(num_classes)[: n % num_classes]] += 1
    picked = []
    for c in range(num_classes):
        cand = pool[y[pool] == c]
        if len(cand) < per[c]:
            raise DataError(f"{what}: class {c} has only {len(cand)} examples, {per[c]} needed")
        picked.append(rng.choice(cand, size=per[c], replace=False))
    return np.sort(np.concatenate(picked))


def make_splits(raw: RawData, labels: int, seed: int, val_size: int) -> Splits:
    k = raw.info.num_classes
    n = len(raw.y_train)
    if labels < k:
        raise ConfigError(f"labels: {labels} is fewer than the {k} classes of {raw.info.name}; need at least {k}")
    if val_size < 0 or val_size >= n:
        raise ConfigError(f"val_size: {val_size} must be in [0, {n - 1}] for {raw.info.name}")
    if labels > n - val_size:
        raise ConfigError(f"labels: {labels} is more than the {n - val_size} training examples of "
                          f"{raw.info.name} left after the {val_size}-example validation split")
    y = np.asarray(raw.y_train)
    rng = np.random.default_rng(seed)
    everything = np.arange(n)
    # Validation: stratified by class frequency, seeded.
    if val_size:
        val = _stratified(y, everything, val_size, rng)
    else:
        val = np.empty(0, dtype=np.int64)
    rest = np.setdiff1d(everything, val)
    lab = _balanced_pick(y, rest, labels, k, rng, "labels")
    return Splits(raw.info, raw, lab, rest, val)


def _stratified(y: np.ndarray, pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    classes, counts = np.unique(y[pool], return_counts=True)
    share = counts / counts.sum() * n
    per = np.floor(share).astype(int)
    rem = n - per.sum()
    per[np.argsort(-(share - per), kind="stable")[:rem]] += 1
    out = [rng.choice(pool[y[pool] == c], size=min(p, cnt), replace=False)
           for c, p, cnt in zip(classes, per, counts)]
    return np.sort(np.concatenate(out))


def validation_size_per_label(labels: int, per_label: float, num_classes: int) -> int:
    """The label-frugal validation size: round(per_label * labels), at least one example per class."""
    return max(num_classes, int(round(per_label * labels)))


def load_splits(spec: DataSpec, seed: int) -> Splits:
    raw = load_dataset(spec)
    return make_splits(raw, spec.labels, seed, validation_size(spec, raw))


def validation_size(spec: DataSpec, raw: RawData) -> int:
    """The validation examples held out of `raw`'s training set. The dataset's default is capped at a fifth of
    the training set (a small file of your own keeps most of its examples for training: the npz/csv default of
    100 on 150 examples gives 30). A size asked for (`val_size`, --val-size, or `val_per_label`) is used as given
    or refused with one line naming the largest allowed, never cut down silently: the run records what it asked
    for, so that is what it must use."""
    cap = len(raw.y_train) // 5
    if spec.val_per_label is not None:
        if not spec.val_per_label > 0:
            raise ConfigError(f"val_per_label: must be > 0, got {spec.val_per_label!r}")
        size = validation_size_per_label(spec.labels, spec.val_per_label, raw.info.num_classes)
        if size > cap:
            raise ConfigError(f"val_per_label: {spec.val_per_label:g} x {spec.labels} labels asks for {size} "
                              f"validation examples; {raw.info.name} has {len(raw.y_train)} training examples and "
                              f"at most a fifth of them, {cap}, are held out (val_per_label at most "
                              f"{_largest_per_label(cap, spec.labels):g} with {spec.labels} labels)")
        return size
    if spec.val_size is None:
        return min(get_entry(spec.name).val_size, cap)  # the default, scaled to a small dataset
    if spec.val_size > cap:
        raise ConfigError(f"val_size: {spec.val_size} is more than a fifth of the {len(raw.y_train)} training "
                          f"examples of {raw.info.name}; the largest allowed is {cap}")
    return spec.val_size


def _largest_per_label(cap: int, labels: int) -> float:
    """The largest val_per_label, to 2 decimals, whose size round(v * labels) stays within `cap`."""
    return math.floor((cap + 0.5) / labels * 100 - 1e-9) / 100


def batch_composition(batch_size: int, labeled_ratio: float, uses_labels: bool = True) -> tuple[int, int]:
    """(R, T - R): labelled and unlabelled samples per batch. R = round(T * R/T), at least 1."""
    if not uses_labels:
        return 0, batch_size
    r = max(1, int(round(batch_size * labeled_ratio)))
    r = min(r, batch_size)
    return r, batch_size - r


class _Cycler:
    """Endless seeded permutations of range(n); next(k) returns the next k indices, on `device`.

    The permutations are drawn on the host (the same numbers on every device) and each one is copied to the
    device once, asynchronously, when it is drawn: a step only slices it there, so on a GPU no step copies
    indices from the host (each blocking copy from pageable memory waits for the GPU's queue)."""

    def __init__(self, n: int, gen: torch.Generator, device: torch.device | str = "cpu"):
        self.n, self.gen, self.device = n, gen, torch.device(device)
        self._set(torch.randperm(n, generator=gen), 0)

    def _set(self, perm: torch.Tensor, pos: int) -> None:
        self.perm, self.pos = perm, pos  # the host copy: the checkpointed state
        self.perm_on_device = to_device(perm, self.device)

    def next(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self.pos >= self.n:
                self._set(torch.randperm(self.n, generator=self.gen), 0)
            take = min(k, self.n - self.pos)
            out.append(self.perm_on_device[self.pos:self.pos + take])
            self.pos += take
            k -= take
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=self.device)

    def state_dict(self) -> dict:
        return {"perm": self.perm.clone(), "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self._set(s["perm"].clone(), int(s["pos"]))


@dataclass
class Batch:
    """One training batch: R labelled samples (x_l, y_l) and T - R unlabelled ones (x_u).

    `x_u2` is a second, independently drawn unlabelled batch for methods that ask for one (the
    ImprovedGAN generator's feature matching); None otherwise.
    """

    x_l: torch.Tensor
    y_l: torch.Tensor
    x_u: torch.Tensor
    x_u2: torch.Tensor | None = None

    @property
    def x_all(self) -> torch.Tensor:
        """All T inputs of the batch, labelled first."""
        return torch.cat([self.x_l, self.x_u]) if len(self.x_u) else self.x_l


class BatchStream:
    """Endless R/T batches, identical on every worker for a given seed.

    With `world` data-parallel workers, the global batch is `world` times the per-worker one and each
    rank takes its own slice, so R/T holds globally and N workers with batch B see exactly the samples
    one worker with batch N*B sees. The data lives on `device` once; batches are gathered there
    (no DataLoader processes, no per-step host-to-device copies).
    """

    def __init__(self, splits: Splits, batch_size: int, labeled_ratio: float, seed: int,
                 device: torch.device | str = "cpu", *, uses_labels: bool = True, second_unlabelled: bool = False,
                 rank: int = 0, world: int = 1, resident: bool = True):
        self.r, self.u = batch_composition(batch_size, labeled_ratio, uses_labels)
        self.rank, self.world = rank, world
        self.second = second_unlabelled
        self.device = torch.device(device)
        raw = splits.raw
        x = _as_tensor(raw.x_train)
        y = torch.as_tensor(np.asarray(raw.y_train), dtype=torch.long)
        lab = torch.as_tensor(splits.lab_idx, dtype=torch.long)
        unl = torch.as_tensor(splits.unl_idx, dtype=torch.long)
        # On the CPU the batches are gathered straight from the (memory-mapped) training array, which every
        # trial on the node shares; on an accelerator the training set is copied there once.
        # (`resident=False` keeps it on the host and copies each batch: the slow path, kept to measure against.)
        self.resident = resident
        self.x_src = x.to(self.device) if self.resident else x
        ids_device = self.device if self.resident else torch.device("cpu")
        self.lab_ids, self.unl_ids = lab.to(ids_device), unl.to(ids_device)
        self.y_lab = y[lab].to(ids_device)
        self.gen = torch.Generator().manual_seed(int(seed) + 7919)  # same on every rank
        self.lab_cycle = _Cycler(len(lab), self.gen, ids_device)
        self.unl_cycle = _Cycler(len(unl), self.gen, ids_device)

    @property
    def unlabelled_size(self) -> int:
        return len(self.unl_ids)

    @property
    def x_lab(self) -> torch.Tensor:
        """The labelled inputs (a copy: for pictures and inspection, not the training path)."""
        return self.x_src[self.lab_ids]

    @property
    def x_unl(self) -> torch.Tensor:
        return self.x_src[self.unl_ids]

    def epoch_steps(self) -> int:
        """Steps for one pass over the unlabelled pool (T - R of it per step; all T when R = T), so an
        epoch means the same amount of data for every method, the supervised baseline included."""
        per_step = (self.u or self.r) * self.world
        return max(1, -(-len(self.unl_ids) // per_step))

    def _slice(self, idx: torch.Tensor, per_rank: int) -> torch.Tensor:
        return idx[self.rank * per_rank:(self.rank + 1) * per_rank]

    def _gather(self, ids: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return to_float(to_device(self.x_src[ids[i]], self.device))

    def next(self) -> Batch:
        """The next batch. With the data resident on the device every index lives there too: a step on a GPU
        neither copies from the host nor waits for the GPU."""
        li = self._slice(self.lab_cycle.next(self.r * self.world), self.r)
        ui = self._slice(self.unl_cycle.next(self.u * self.world), self.u)
        x_u2 = None
        if self.second:
            ui2 = self._slice(self.unl_cycle.next(max(self.u, self.r) * self.world), max(self.u, self.r))
            x_u2 = self._gather(self.unl_ids, ui2)
        return Batch(self._gather(self.lab_ids, li), to_device(self.y_lab[li], self.device),
                     self._gather(self.unl_ids, ui), x_u2)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "lab": self.lab_cycle.state_dict(), "unl": self.unl_cycle.state_dict()}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.lab_cycle.load_state_dict(s["lab"])
        self.unl_cycle.load_state_dict(s["unl"])


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    """A tensor view of a (possibly read-only, memory-mapped) array without copying it."""
    arr = np.asarray(a)
    if not arr.flags.writeable:
        import warnings

        with warnings.catch_warnings():  # torch warns that it cannot protect read-only memory; we never write
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            return torch.from_numpy(arr)
    return torch.from_numpy(arr)


def eval_tensors(splits: Splits, which: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) of the validation or test split as tensors on `device` (x still uint8 for images)."""
    raw = splits.raw
    if which == "val":
        x = _as_tensor(raw.x_train)[torch.as_tensor(splits.val_idx, dtype=torch.long)]
        y = torch.as_tensor(np.asarray(raw.y_train)[splits.val_idx], dtype=torch.long)
    elif which == "test":
        x, y = _as_tensor(raw.x_test), torch.as_tensor(np.asarray(raw.y_test), dtype=torch.long)
    else:
        raise ValueError(which)
    return x.to(device), y.to(device)
