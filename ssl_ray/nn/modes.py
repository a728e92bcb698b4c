"""Context managers that switch a module's mode (or mixed precision) for the length of a block and restore it after."""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import nn


@contextlib.contextmanager
def _switched(items: list[Any], get: Callable[[Any], bool], put: Callable[[Any, bool], object],
              value: bool) -> Iterator[None]:
    """Set a flag of every item to `value` inside the block; restore each item's previous flag after it."""
    saved = [get(x) for x in items]
    for x in items:
        put(x, value)
    try:
        yield
    finally:
        for x, v in zip(items, saved):
            put(x, v)


def eval_mode(*modules: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Evaluation mode (dropout off, BatchNorm on running statistics) inside the block; each module's previous
    train/eval state is restored after it."""
    return _switched(list(modules), lambda m: m.training, lambda m, v: m.train(v), False)


def train_mode(*modules: nn.Module) -> contextlib.AbstractContextManager[None]:
    """Training mode inside the block; each module's previous train/eval state is restored after it."""
    return _switched(list(modules), lambda m: m.training, lambda m, v: m.train(v), True)


def frozen(*modules: nn.Module) -> contextlib.AbstractContextManager[None]:
    """No parameter gradients for `modules` inside the block (the other player's step): every parameter's
    requires_grad is switched off and restored to its previous value after it."""
    params = [p for m in modules for p in m.parameters()]
    return _switched(params, lambda p: p.requires_grad, lambda p, v: p.requires_grad_(v), False)


@contextlib.contextmanager
def frozen_bn(module: nn.Module) -> Iterator[None]:
    """Forward passes inside use batch statistics (training mode) but leave BatchNorm running statistics as
    they were (momentum 0 keeps running mean/var; VAT's reference `update_batch_stats=False`)."""
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None) for m in bns]
    for m in bns:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (mom, nbt) in zip(bns, saved):
            m.momentum = mom
            if nbt is not None and m.num_batches_tracked is not None:
                m.num_batches_tracked.copy_(nbt)


def no_autocast(device: torch.device | str) -> contextlib.AbstractContextManager[None]:
    """Mixed precision off inside the block for `device`'s type (float32 where a step needs it: a backward pass,
    an optimiser step, a finite difference bfloat16 cannot resolve). On a device type autocast does not know
    (meta, which the tests build methods on to check placement) there is nothing to switch off."""
    kind = torch.device(device).type
    if not torch.amp.is_autocast_available(kind):
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, enabled=False)


@contextlib.contextmanager
def full_precision(device: torch.device | str) -> Iterator[None]:
    """Exact float32 inside the block: autocast off (:func:`no_autocast`) and no TF32 in matrix products and cuDNN
    convolutions (which the Trainer allows on a GPU, engine.loop.configure_cuda). For computations below
    bfloat16's and TF32's resolution (~1e-3 relative), such as VAT's finite difference with a 1e-6 probe.
    The TF32 switches are process-wide: they are restored on leaving the block."""
    matmul, conv = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        with no_autocast(device):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, conv
