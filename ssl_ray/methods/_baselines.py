"""Pieces the classic SSL baselines share (pseudolabel, meanteacher, fixmatch): pure loss and schedule
functions, SGD with FixMatch's cosine decay, and a classifier method that counts its steps, draws augmented
views (ssl_ray.data.augment) and may evaluate an EMA of its weights.

The module name starts with "_" so the registry does not import it as a method.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn
from torch.nn import functional as F

from ..config import hp
from ..data.augment import augment, flip_allowed
from .common import ClassifierConfig, ClassifierMethod, EMAEvaluated


# ---- pure functions ------------------------------------------------------------------------------------
def linear_ramp(step: int, start: int, end: int) -> float:
    """0 before `start`, 1 from `end` on, linear in between (Lee 2013's alpha(t) / alpha_f)."""
    if step >= end:
        return 1.0
    if step < start:
        return 0.0
    return (step - start) / (end - start)


def sigmoid_rampup(step: int, length: int) -> float:
    """exp(-5 (1 - t)^2) with t = step / length, 1 from `length` on (Mean Teacher's ramp-up)."""
    if length <= 0 or step >= length:
        return 1.0
    phase = 1.0 - max(0.0, step) / length
    return math.exp(-5.0 * phase * phase)


def cosine_decay(step: int, total: int) -> float:
    """FixMatch's learning-rate factor cos(7 pi k / (16 K)), held at its value for k >= K."""
    return math.cos(7.0 * math.pi * min(step, total) / (16.0 * total))


def pseudo_label_loss(logits: torch.Tensor, target_logits: torch.Tensor, threshold: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/n) sum_i 1[max_k p_ik >= threshold] CE(logits_i, argmax_k p_ik), with p = softmax(target_logits)
    held fixed: the hard pseudo-label loss of Lee 2013 (threshold 0) and FixMatch (eq. 4; the mean is over
    all n unlabelled samples, masked ones counting 0). Returns (loss, mask)."""
    if len(logits) == 0:
        return logits.sum() * 0.0, logits.new_zeros(0)
    probs = F.softmax(target_logits.detach().float(), dim=1)
    conf, target = probs.max(dim=1)
    mask = (conf >= threshold).to(logits.dtype)
    return (F.cross_entropy(logits, target, reduction="none") * mask).mean(), mask


def softmax_mse(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Mean Teacher's consistency cost: mean over samples and classes of (softmax(logits) - softmax(target))^2,
    the target held fixed (the reference's `reduce_mean((softmax1 - softmax2) ** 2, -1)`, then the batch mean)."""
    if len(logits) == 0:
        return logits.sum() * 0.0
    return (F.softmax(logits, dim=1) - F.softmax(target_logits.detach(), dim=1)).pow(2).mean()


# ---- configs ---------------------------------------------------------------------------------------------
@dataclass
class SGDConfig(ClassifierConfig):
    """FixMatch's optimiser (USB trains every baseline with it): SGD, Nesterov momentum, cosine decay."""

    lr: float = hp(0.03, "SGD learning rate (FixMatch / USB: 0.03)", low=0, low_open=True)
    weight_decay: float = hp(5e-4, "SGD weight decay (FixMatch: 5e-4 on CIFAR-10)", low=0)
    momentum: float = hp(0.9, "SGD momentum (Nesterov; FixMatch: 0.9)", low=0, high=1, high_open=True)
    decay_steps: int = hp(2 ** 20, "K of the cosine decay lr * cos(7 pi k / 16K) (FixMatch: 2^20 steps, its whole "
                          "training; set it to a run's total steps to decay over that run)", low=1)


BC = TypeVar("BC", bound=ClassifierConfig)


# ---- the method base -------------------------------------------------------------------------------------
class BaselineMethod(EMAEvaluated[BC], ClassifierMethod[BC]):
    """A classifier method that counts its optimiser steps (checkpointed: ramps and schedules resume exactly),
    draws augmented views, and evaluates `eval_net`: the EMA of its weights when `self.ema` is set."""

    augments_itself: ClassVar[bool] = True
    """Its train step draws its own views: a training loop that augments batches (augment.augment_batch for a
    config's `augment` field) must leave its batches alone."""

    def build(self) -> None:
        super().build()
        self.num_steps = 0

    def build_sgd(self, cfg: SGDConfig) -> None:
        """Replace the classifier's Adam by FixMatch's SGD (`cfg`: this method's config, an SGDConfig)."""
        self.optimizers["opt"] = torch.optim.SGD(self.net.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                                 nesterov=cfg.momentum > 0, weight_decay=cfg.weight_decay)

    def set_lr(self, lr: float) -> None:
        for g in self.optimizers["opt"].param_groups:
            g["lr"] = lr

    def step_seed(self) -> int:
        """This step's augmentation seed: one draw from the noise stream every rank shares (and the checkpoint
        keeps), so all ranks draw the views of one global batch and a resumed run draws the same views."""
        return int(torch.randint(0, 2 ** 62, (1,), generator=self.noise_gen))

    def view(self, x: torch.Tensor, kind: str, seed: int, salt: int) -> torch.Tensor:
        cfg = self.cfg
        return augment(x, kind, seed=seed, step=self.num_steps, rank=self.rank, world=self.world,
                       flip=flip_allowed(self.info.name, getattr(cfg, "flip", "auto")),
                       n_ops=getattr(cfg, "n_ops", 2), salt=salt)

    def trained_net(self) -> nn.Module:
        return self.net

    def extra_state(self) -> dict[str, Any]:
        return {"num_steps": self.num_steps, **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.num_steps = int(state.get("num_steps", 0))
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])
