"""Data-parallel helpers over torch.distributed (the process group Ray Train sets up), no-ops alone."""
from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of `params` in one flat bucket; a missing grad counts as zero."""
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    flat = _flat_grads(params)
    dist.all_reduce(flat)
    _set_grads(params, flat.div_(dist.get_world_size()))


def _flat_grads(params: list[torch.nn.Parameter]) -> torch.Tensor:
    """The gradients of `params` in one flat tensor (a missing grad counts as zero)."""
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def _set_grads(params: list[torch.nn.Parameter], flat: torch.Tensor) -> None:
    """Write a flat tensor back into the gradients of `params` (the inverse of _flat_grads)."""
    offset = 0
    for p in params:
        n = p.numel()
        new = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = new.clone()
        else:
            p.grad.copy_(new)
        offset += n


BUCKET_BYTES = 4 * 2 ** 20
"""Gradient bytes per all-reduce bucket of `averaged_backward` (DDP uses 25 MB on GPUs; smaller buckets start
communicating earlier in the backward pass)."""


class _Buckets:
    """The state of one overlapped backward: the parameters cut into buckets in the reverse of their order
    (the order backward tends to produce their gradients), each bucket all-reduced asynchronously once all its
    gradients are accumulated, always in bucket order (every worker issues the same collectives in the same
    order, even when a gradient is missing on one worker: such a bucket is sent at the end, with zeros)."""

    def __init__(self, params: list[torch.nn.Parameter], bucket_bytes: int):
        self.buckets: list[list[torch.nn.Parameter]] = []
        size = 0
        for p in reversed(params):
            nbytes = p.numel() * p.element_size()
            if not self.buckets or size + nbytes > bucket_bytes:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += nbytes
        self.where = {id(p): i for i, b in enumerate(self.buckets) for p in b}
        self.pending = [len(b) for b in self.buckets]
        self.seen: set[int] = set()
        self.sent: list[tuple[object, torch.Tensor]] = []
        self.handles = [p.register_post_accumulate_grad_hook(self._ready) for p in params]

    def _ready(self, p: torch.Tensor) -> None:
        if id(p) in self.seen:  # once per parameter and backward pass
            return
        self.seen.add(id(p))
        self.pending[self.where[id(p)]] -= 1
        while len(self.sent) < len(self.buckets) and self.pending[len(self.sent)] == 0:
            self._send(len(self.sent))

    def _send(self, i: int) -> None:
        flat = _flat_grads(self.buckets[i])
        self.sent.append((dist.all_reduce(flat, async_op=True), flat))

    def remove_hooks(self) -> None:
        for h in self.handles:
            h.remove()

    def finish(self) -> None:
        self.remove_hooks()
        while len(self.sent) < len(self.buckets):
            self._send(len(self.sent))
        world = dist.get_world_size()
        for (work, flat), bucket in zip(self.sent, self.buckets):
            work.wait()  # type: ignore[attr-defined]
            _set_grads(bucket, flat.div_(world))


@contextlib.contextmanager
def averaged_backward(params: Iterable[torch.nn.Parameter], bucket_bytes: int = BUCKET_BYTES) -> Iterator[None]:
    """Run the backward pass inside this block: on leaving it, `params`' gradients are averaged over the workers
    as `average_gradients` does (the same sums), but each bucket's all-reduce starts during the backward pass,
    as soon as its gradients are ready (as DDP overlaps communication with computation). Alone: a no-op."""
    if not is_distributed():  # alone: nothing to do, not even a look at the parameters (once per step)
        yield
        return
    params = list({id(p): p for p in params if p.requires_grad}.values())
    if not params:
        yield
        return
    state = _Buckets(params, bucket_bytes)
    try:
        yield
    except BaseException:
        state.remove_hooks()  # no further collectives: the other workers may not reach this point
        raise
    state.finish()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if is_distributed():
        dist.all_reduce(t)
    return t


def all_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over data-parallel workers (a batch statistic every worker must agree on); t itself
    when not distributed."""
    if not is_distributed():
        return t
    return all_reduce_sum(t.clone()) / dist.get_world_size()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank start from rank `src`'s weights and buffers."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)
