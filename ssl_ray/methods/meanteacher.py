"""Mean Teacher (Tarvainen & Valpola, NeurIPS 2017).

The teacher is an exponential moving average of the student's weights; the student is trained with
CE(labelled) + w(t) * MSE(softmax(student(x + noise)), softmax(teacher(x + noise'))) over all inputs of the
batch (the reference's `apply_consistency_to_labeled`), the two passes seeing independent augmentation and
input noise, the teacher's output held fixed. w(t) = consistency * exp(-5 (1 - t / rampup)^2) during the
ramp-up; the learning rate is ramped up the same way, Adam's beta2 is 0.99 during the ramp-up and 0.999
after, and the EMA decay 0.99 during the ramp-up and 0.999 after. Predictions are the teacher's.

The teacher's update is the reference's plain EMA: teacher <- d * teacher + (1 - d) * student after each
student step, with d = `ema_decay` while the step count is below `rampup_steps` and `ema_decay_after` from
then on (tensorflow/mean_teacher/model.py: `tf.train.ExponentialMovingAverage(ema_decay)` without
`num_updates`, the decay switched by `step_rampup`). The (1 + n) / (10 + n) warm-up (`ema_warmup`, the
rule of the evaluation averages of ImprovedGAN and FixMatch) is off by default: it would hold d below 0.991 for
the first 1,000 steps, so `ema_decay_after` 0.999 and 0.9999 gave identical runs at the default budget. The
reference's PyTorch version uses min(1 - 1 / (step + 1), ema_decay) with one decay throughout; the TensorFlow
rule is the one followed here, as for the other defaults.

Defaults follow the reference code (CuriousAI/mean-teacher, tensorflow/mean_teacher/model.py): consistency
100 with the MSE averaged over classes, Adam lr 0.003 and beta1 0.9, input noise 0.15, translation of the
inputs (our weak view; flips only where the dataset allows them), minibatch 100. Choices made here:
- Budget-driven: an epoch is `steps_per_epoch` = 50 steps (as for pseudolabel and fixmatch), so the default
  20 epochs of `ssl-ray train` are 1,000 steps; the reference's ramp-up is 40,000 of its 150,000 steps (27%),
  and `rampup_steps` defaults to 300 of those 1,000: scale both with the run. The reference's final
  ramp-down (its last 25,000 steps) needs the run's length and is left out.
- Labelled share R/T = 0.25 (the reference draws labelled samples at their natural frequency; its PyTorch
  version uses 62 of 256); CE is the mean over the labelled samples (the reference divides by the batch).
- The reference normalises each image to zero mean and unit std before adding the noise; ours stay in
  [0, 1] and the noise is scaled by each image's std instead (same signal-to-noise ratio). Its ConvNet's
  dropout 0.5 is an architecture choice left out.
- The teacher runs in training mode (its BatchNorm uses batch statistics, as in the reference).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import hp
from ..data import Batch
from ..data.augment import AugmentConfig
from ..nn.modes import train_mode
from ._baselines import BaselineMethod, sigmoid_rampup, softmax_mse
from .common import EMA, ClassifierConfig, EMAConfig, cross_entropy_or_zero
from .registry import register


@dataclass
class MeanTeacherConfig(ClassifierConfig, AugmentConfig, EMAConfig):
    batch_size: int = hp(100, "T: samples per batch (reference: minibatch 100)", low=2)
    labeled_ratio: float = hp(0.25, "R/T: labelled share of each batch (reference PyTorch code: 62 of 256)",
                              low=0, high=1, low_open=True)
    steps_per_epoch: int = hp(50, "optimiser steps per epoch (0 = one pass over the unlabelled pool: 15 steps on "
                              "digits; 50 is a budget-driven choice, see the docstring)", low=0)
    lr: float = hp(0.003, "Adam's maximum learning rate, reached after the ramp-up (reference: 0.003)", low=0,
                   low_open=True)
    augment: str = hp("weak", "augmentation of both passes: none, weak (reference: translate by 2 px; flip where "
                      "the dataset allows it) or strong", choices=("none", "weak", "strong"))
    consistency: float = hp(100.0, "maximum weight of the consistency MSE (reference: 100)", low=0)
    rampup_steps: int = hp(300, "steps of the sigmoid ramp-up of the consistency weight and the learning rate "
                           "(reference: 40000 of 150000 steps; budget-driven default, see the docstring)", low=0)
    ema_decay: float = hp(0.99, "teacher EMA decay during the ramp-up (reference: 0.99)", low=0, high=1,
                          high_open=True)
    ema_decay_after: float = hp(0.999, "teacher EMA decay after the ramp-up (reference: 0.999)", low=0, high=1,
                                high_open=True)
    ema_warmup: bool = hp(False, "warm the teacher's average up: decay min(d, (1 + n) / (10 + n)) at update n "
                          "(reference: off, the plain decay; see the docstring)")
    adam_beta2: float = hp(0.99, "Adam beta2 during the ramp-up (reference: 0.99; 0.999 after)", low=0, high=1,
                           high_open=True)
    input_noise: float = hp(0.15, "std of the Gaussian noise added to each pass's inputs, in units of each "
                            "image's std (reference: 0.15 on unit-std images)", low=0)


@register
class MeanTeacher(BaselineMethod[MeanTeacherConfig]):
    name = "meanteacher"
    Config = MeanTeacherConfig
    paper = "Tarvainen & Valpola, Mean teachers are better role models, NeurIPS 2017 (CuriousAI/mean-teacher)"

    def build(self) -> None:
        cfg = self.cfg
        super().build()
        self.optimizers["opt"] = torch.optim.Adam(self.net.parameters(), lr=cfg.lr, betas=(0.9, cfg.adam_beta2),
                                                  weight_decay=cfg.weight_decay)
        self.ema = EMA(self.net, cfg.ema_decay, cfg.ema_warmup)  # the teacher; its decay is set per step

    def noisy_view(self, x: torch.Tensor, seed: int, salt: int) -> torch.Tensor:
        cfg = self.cfg
        x = self.view(x, cfg.augment, seed, salt)
        if cfg.input_noise <= 0:
            return x
        # the reference adds the noise to images normalised to unit std: here, noise in units of each image's std
        scale = x.flatten(1).std(1).view(-1, *[1] * (x.dim() - 1)) if x.dim() == 4 else 1.0
        # noise from the stream all ranks share (cut per rank): N workers draw what one worker with N x the batch does
        return x + cfg.input_noise * scale * self.global_rand(len(x), *x.shape[1:], normal=True).to(x.dtype)

    def noisy_batch(self, batch: Batch, seed: int, salt: int) -> torch.Tensor:
        """Labelled then unlabelled inputs, each part viewed on its own: a part is this rank's slice of a global
        part, so its views and noise are exactly those of one worker with the whole batch."""
        return torch.cat([self.noisy_view(batch.x_l, seed, 2 * salt), self.noisy_view(batch.x_u, seed, 2 * salt + 1)])

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        assert self.ema is not None
        seed = self.step_seed()
        logits = self.net(self.noisy_batch(batch, seed, 0))
        teacher = self.ema.shadow
        with torch.no_grad(), train_mode(teacher):  # the reference's teacher pass: training-mode BN and dropout
            target = teacher(self.noisy_batch(batch, seed, 1))
        loss_l = cross_entropy_or_zero(logits[:len(batch.x_l)], batch.y_l)
        loss_c = softmax_mse(logits, target)
        ramp = sigmoid_rampup(self.num_steps, cfg.rampup_steps)
        ramped = self.num_steps >= cfg.rampup_steps
        for g in self.optimizers["opt"].param_groups:
            g["lr"] = cfg.lr * ramp
            g["betas"] = (0.9, 0.999 if ramped else cfg.adam_beta2)
        self.step(self.optimizers["opt"], loss_l + cfg.consistency * ramp * loss_c)
        self.ema.decay = cfg.ema_decay_after if ramped else cfg.ema_decay  # the reference's step switch
        self.ema.update(self.net)
        self.num_steps += 1
        return {"loss_lab": loss_l.detach(), "loss_cons": loss_c.detach()}
