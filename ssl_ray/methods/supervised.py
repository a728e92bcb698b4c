"""Supervised baseline: cross-entropy on the labelled examples only.

The reference point of every SSL table ("supervised only"): the same classifier as the SSL methods,
trained on the R labelled samples of each batch; the unlabelled part is ignored, so its default R/T is 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import hp
from ..data import Batch
from ..data.augment import AugmentConfig
from .common import ClassifierConfig, ClassifierMethod, cross_entropy_or_zero
from .registry import register


@dataclass
class SupervisedConfig(ClassifierConfig, AugmentConfig):
    batch_size: int = hp(64, "T: samples per batch (all labelled: the unlabelled part is ignored)", low=1)
    labeled_ratio: float = hp(1.0, "R/T: the labelled share of each batch; the baseline uses labelled data only",
                              low=0, high=1, low_open=True)


@register
class Supervised(ClassifierMethod[SupervisedConfig]):
    name = "supervised"
    Config = SupervisedConfig
    paper = "baseline: cross-entropy on labelled data only"

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss = cross_entropy_or_zero(self.net(batch.x_l), batch.y_l)
        self.step(self.optimizers["opt"], loss)
        return {"loss_lab": loss.detach()}
