"""FixMatch (Sohn et al., NeurIPS 2020).

For each unlabelled image a weakly augmented view (flip where the dataset allows it, translation up to 12.5%)
gives a hard pseudo-label, kept when the model's confidence on it reaches `threshold`; the model is trained to
predict that label on a strongly augmented view (RandAugment with random magnitudes, then Cutout):
loss = CE(weak view of the labelled batch) + lambda_u * (1 / mu B) sum_b 1[max p_w >= tau] CE(f(strong_b), argmax p_w).
The three views go through the network in one forward pass (as the reference does, for BatchNorm).

Defaults are the paper's (CIFAR-10): tau = 0.95, lambda_u = 1, mu = 7 unlabelled per labelled sample with
B = 64 (T = 512, R/T = 1/8), SGD with Nesterov momentum 0.9, lr 0.03, weight decay 5e-4, cosine decay
lr * cos(7 pi k / 16 K) with K = 2^20, evaluation with an EMA of the weights (decay 0.999), RandAugment with
N = 2 operations. Choices made here:
- The EMA uses the warm-up min(0.999, (1 + n) / (10 + n)) (common.EMA; `ema_warmup`, on by default), so that
  short runs do not evaluate weights still close to the initialisation; `ema_decay: 0` evaluates the raw weights.
- `steps_per_epoch` defaults to 50: with T = 512 one pass over digits' 1,100 unlabelled images is 3 steps, and
  the default 20 epochs of `ssl-ray train` would be 60 SGD steps (a budget-driven choice; the paper counts
  training in steps, 2^20 of them).
- Augmentation of 2-D points is the identity (FixMatch is defined for images): on points the method is
  thresholded pseudo-labelling.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import hp
from ..data import Batch
from ..data.augment import FlipConfig
from ._baselines import BaselineMethod, SGDConfig, cosine_decay, pseudo_label_loss
from .common import EMAConfig, cross_entropy_or_zero
from .registry import register


@dataclass
class FixMatchConfig(SGDConfig, FlipConfig, EMAConfig):
    batch_size: int = hp(512, "T: samples per batch, B + mu B (paper: B = 64, mu = 7)", low=2)
    labeled_ratio: float = hp(0.125, "R/T = 1 / (1 + mu): labelled share of each batch (paper: mu = 7)", low=0,
                              high=1, low_open=True, high_open=True)
    steps_per_epoch: int = hp(50, "optimiser steps per epoch (0 = one pass over the unlabelled pool: 3 steps on "
                              "digits; 50 is a budget-driven choice, see the docstring)", low=0)
    threshold: float = hp(0.95, "tau: confidence a pseudo-label needs to count (paper: 0.95)", low=0, high=1)
    lambda_u: float = hp(1.0, "weight of the unlabelled loss (paper: 1)", low=0)
    n_ops: int = hp(2, "RandAugment: operations per strong view (paper's RA: 2; USB: 3)", low=0)
    ema_decay: float = hp(0.999, "decay of the weight average used for evaluation (paper: 0.999; 0 = none)",
                          low=0, high=1, high_open=True)


@register
class FixMatch(BaselineMethod[FixMatchConfig]):
    name = "fixmatch"
    Config = FixMatchConfig
    paper = "Sohn et al., FixMatch, NeurIPS 2020 (google-research/fixmatch, USB)"

    def build(self) -> None:
        cfg = self.cfg
        super().build()
        self.build_sgd(self.cfg)
        self.ema = cfg.make_ema(self.net)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        seed = self.step_seed()
        views = [self.view(batch.x_l, "weak", seed, 0), self.view(batch.x_u, "weak", seed, 1),
                 self.view(batch.x_u, "strong", seed, 2)]
        logits_l, logits_w, logits_s = self.net(torch.cat(views)).split([len(v) for v in views])
        loss_l = cross_entropy_or_zero(logits_l, batch.y_l)
        loss_u, mask = pseudo_label_loss(logits_s, logits_w, cfg.threshold)
        self.set_lr(cfg.lr * cosine_decay(self.num_steps, cfg.decay_steps))
        self.step(self.optimizers["opt"], loss_l + cfg.lambda_u * loss_u)
        if self.ema is not None:
            self.ema.update(self.net)
        self.num_steps += 1
        return {"loss_lab": loss_l.detach(), "loss_unlab": loss_u.detach(),
                "loss_mask": mask.mean().detach() if len(mask) else loss_u.detach() * 0}
