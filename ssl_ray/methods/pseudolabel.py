"""Pseudo-Label (Lee, ICML 2013 Workshop on Challenges in Representation Learning).

The network's own argmax on unlabelled data is used as a hard target: loss = CE(labelled) +
alpha(t) * (1/n) sum_i 1[max_k p_ik >= threshold] CE(f(x_i), argmax_k p_ik), with p = softmax(f(x)) of the same
forward pass held fixed, and alpha(t) ramped linearly from 0 (t < T1) to alpha_f (t >= T2).

Defaults: alpha_f = 3 and the linear ramp are Lee's; the confidence threshold 0.95 is the modern
re-implementations' (USB, FixMatch's appendix; the issue asks for it): `threshold: 0` is Lee's original
(every unlabelled sample counts). Choices made here:
- Budget-driven: an epoch is `steps_per_epoch` = 50 steps (one pass over digits' 1,100 unlabelled images
  would be 3 steps of 448), so the default 20 epochs of `ssl-ray train` are 1,000 steps. Lee's T1 = 100 and
  T2 = 600 are epochs of a long MNIST run; here they are steps (`ramp_start`, `ramp_end`), 10 and 400: the
  weight reaches alpha_f after 40% of those 1,000 steps, as USB's linear warm-up (0.4 of training) does.
  Scale them with the run's length.
- Batch and optimiser are USB's for every baseline (= FixMatch's): 64 labelled + 7 x 64 unlabelled samples,
  SGD with Nesterov momentum 0.9, lr 0.03, weight decay 5e-4, cosine decay (Lee: SGD with momentum, dropout).
- No augmentation by default (Lee used none; USB uses the weak view): `augment: weak` turns it on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import hp
from ..data import Batch
from ..data.augment import AugmentConfig
from ..errors import ConfigError
from ._baselines import BaselineMethod, SGDConfig, cosine_decay, linear_ramp, pseudo_label_loss
from .common import cross_entropy_or_zero
from .registry import register


@dataclass
class PseudoLabelConfig(SGDConfig, AugmentConfig):
    batch_size: int = hp(512, "T: samples per batch (USB: 64 labelled + 7 x 64 unlabelled)", low=2)
    labeled_ratio: float = hp(0.125, "R/T: labelled share of each batch (USB: 64 / 512)", low=0, high=1,
                              low_open=True, high_open=True)
    steps_per_epoch: int = hp(50, "optimiser steps per epoch (0 = one pass over the unlabelled pool, 3 steps of 448 "
                              "on digits: too few for SGD; 50 is a budget-driven choice, see the docstring)", low=0)
    threshold: float = hp(0.95, "confidence a pseudo-label needs to count (USB / FixMatch: 0.95; Lee 2013: 0, "
                          "every unlabelled sample)", low=0, high=1)
    alpha: float = hp(3.0, "alpha_f: final weight of the pseudo-label loss (Lee 2013: 3)", low=0)
    ramp_start: int = hp(10, "T1: step where alpha starts to grow from 0 (Lee: epoch 100 of a long run; "
                         "budget-driven default)", low=0)
    ramp_end: int = hp(400, "T2: step where alpha reaches alpha_f (Lee: epoch 600; budget-driven default)", low=0)

    def check(self) -> None:
        if self.ramp_end < self.ramp_start:
            raise ConfigError(f"ramp_end: {self.ramp_end} is before ramp_start {self.ramp_start}")


@register
class PseudoLabel(BaselineMethod[PseudoLabelConfig]):
    name = "pseudolabel"
    Config = PseudoLabelConfig
    paper = "Lee, Pseudo-Label, ICML-W 2013 (confidence threshold as in USB)"

    def build(self) -> None:
        super().build()
        self.build_sgd(self.cfg)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        seed = self.step_seed()
        x_l, x_u = self.view(batch.x_l, cfg.augment, seed, 0), self.view(batch.x_u, cfg.augment, seed, 1)
        logits = self.net(torch.cat([x_l, x_u]))
        loss_l = cross_entropy_or_zero(logits[:len(x_l)], batch.y_l)
        loss_u, mask = pseudo_label_loss(logits[len(x_l):], logits[len(x_l):], cfg.threshold)
        weight = cfg.alpha * linear_ramp(self.num_steps, cfg.ramp_start, cfg.ramp_end)
        self.set_lr(cfg.lr * cosine_decay(self.num_steps, cfg.decay_steps))
        self.step(self.optimizers["opt"], loss_l + weight * loss_u)
        self.num_steps += 1
        return {"loss_lab": loss_l.detach(), "loss_pseudo": loss_u.detach(),
                "loss_mask": mask.mean().detach() if len(mask) else loss_u.detach() * 0}
