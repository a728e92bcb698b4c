"""Data-parallel helpers over torch.distributed (the process group Ray Train sets up), no-ops alone."""
from __future__ import annotations

from typing import Iterable

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
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    offset = 0
    for p, g in zip(params, grads):
        n = g.numel()
        new = flat[offset:offset + n].view_as(p)
        if p.grad is None:
            p.grad = new.clone()
        else:
            p.grad.copy_(new)
        offset += n


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
