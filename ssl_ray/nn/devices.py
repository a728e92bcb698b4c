"""Host-to-device copies that do not wait for the device.

A blocking copy from the host to a GPU (`t.to("cuda")`, `torch.tensor(values, device="cuda")`) waits until
every kernel queued before it has run: one per training step turns the GPU's queue into lock-step with the
Python loop. What is drawn or decided on the host (augmentation parameters, batch indices) reaches the device
through :func:`to_device` instead: pinned and copied asynchronously, in stream order, so the host never waits.
"""
from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`t` on `device` without waiting for it: from the host to a GPU through pinned memory and an asynchronous
    copy (torch's pinned-memory cache keeps the buffer until the copy has run); `t` itself where it already is;
    any other move as `t.to(device)`."""
    device = torch.device(device)
    if t.device.type == device.type and (device.index is None or t.device.index == device.index):
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, non_blocking=True)
