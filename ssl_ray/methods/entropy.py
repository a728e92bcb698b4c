"""Clustering and Locality Penalties for Semi-Supervised Learning (Bansal and Zepeda, workshop paper and poster).

One classifier is trained on R/T batches (R labelled samples first, then T - R unlabelled ones) with

    L = (1/R) sum_{t<=R} CE_t + alpha * J_M + beta * J_B + gamma * J_L,

where, over all T samples of the batch, J_M = (1/T) sum_t H(q_t) is the mean entropy of the predictions
(MEL: confident predictions), J_B = -H((1/T) sum_t q_t) the negative entropy of the batch-mean prediction
(NBEL: predictions spread over the classes), and J_L = (1/T) sum_t J_L^t a structured-sparsity penalty on the
class activation map (CAM, Zhou et al. 2016) C of the most probable class: for the four nested half-space
group families (left-right g_k = columns 1..k, right-left, top-bottom, bottom-top, k = 1..N),
J_L^t = sum over the 4 families of sum_k ||C_{g_k}||_2. There is no reference code; the defaults are the
paper's: alpha = 0.8 and R/T = 0.8 (its Fig. 1 / poster: accuracy rises with R/T up to 0.8, overfits at 0.9).

Choices the paper leaves open (each is a hyperparameter or stated here):
- beta and gamma were "found by cross-validation" and no value is given; NBEL "hasn't reached the level" of
  CE + MEL, so both default to 0 (CE + MEL, the paper's best reported setting); set them to switch on.
- ``loc_mode``: "top" penalises the CAM of the most probable class (the paper); "weighted" is the variant
  the authors were trying ("weigh the CAMs by the corresponding probabilities"): we read it as
  sum_k q_k * Omega(C_k), i.e. the penalty of each probability-weighted CAM q_k C_k (Omega is positively
  homogeneous), which equals "top" for one-hot q. In both modes the class choice / weights q are constants
  (detached): the penalty shapes the maps, not the predictions.
- CAMs need a conv trunk ending in global average pooling + linear. With ``arch=auto`` on images this method
  always uses a conv net (conv_small for gray images, conv_large for colour), with or without gamma, so
  that switching gamma on never also switches the architecture; on 2-D points auto is the MLP and gamma
  must be 0. gamma > 0 with an MLP, or on non-image data, is a ConfigError.
- The CAM is the raw map C_k = sum_c w_kc A_c (no upsampling, no normalisation), so J_L grows with the
  map side N and the logit scale; gamma absorbs both.
- An all-zero group (possible with ReLU feature maps) has norm 0 and gradient 0 (not sqrt's inf).
- Under data parallelism J_B is computed on each worker's own batch of T (as batch norm is).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import hp
from ..data import Batch, to_float
from ..data.augment import AugmentConfig
from ..errors import ConfigError
from ..nn import plots
from ..nn.functional import entropy
from ..nn.modes import eval_mode
from .common import ClassifierConfig, ClassifierMethod, cross_entropy_or_zero
from .registry import register

LOC_MODES = ("top", "weighted")


@dataclass
class EntropyConfig(ClassifierConfig, AugmentConfig):
    labeled_ratio: float = hp(0.8, "R/T: the labelled share of each batch (paper: best at 0.8 with alpha = 0.8, "
                              "overfitting at 0.9; its starting default was 0.25)", low=0, high=1, low_open=True)
    alpha: float = hp(0.8, "weight of the mean entropy loss J_M over all T samples (MEL; paper: 0.8)", low=0)
    beta: float = hp(0.0, "weight of the negative batch entropy loss J_B over all T samples (NBEL; paper: "
                     "cross-validated, no value given; 0 = off)", low=0)
    gamma: float = hp(0.0, "weight of the CAM locality penalty J_L (paper: cross-validated, no value given; "
                      "0 = off); > 0 needs image data and a conv net", low=0)
    loc_mode: str = hp("top", "which CAMs J_L penalises: top = the most probable class's (paper); weighted = "
                       "every class's, weighted by its (detached) probability (the authors' variant)",
                       choices=LOC_MODES)

    def check(self) -> None:
        if self.gamma > 0 and self.arch == "mlp":
            raise ConfigError(f"gamma: {self.gamma:g} > 0 needs class activation maps, which an MLP has not "
                              "(arch=mlp); use arch=auto, conv_small, conv_large or improvedgan, or set gamma=0")


# ---- losses (pure functions) ------------------------------------------------------------------------
def negative_batch_entropy(logits: torch.Tensor) -> torch.Tensor:
    """J_B = -H((1/T) sum_t q_t): minimal (= -log K) when the batch-mean prediction is uniform."""
    log_mean = torch.logsumexp(F.log_softmax(logits, dim=1), dim=0) - math.log(len(logits))
    return (log_mean.exp() * log_mean).sum()


def _safe_sqrt(s: torch.Tensor) -> torch.Tensor:
    """sqrt(s) for s >= 0, with gradient 0 (not inf) where s = 0: an all-zero group costs nothing."""
    return torch.where(s > 0, s.clamp_min(1e-30).sqrt(), torch.zeros_like(s))


def _nested_group_norms(sq: torch.Tensor) -> torch.Tensor:
    """sq: (..., N) squared L2 mass per column (or row). Returns sum_k ||C_{1..k}||_2 + sum_k ||C_{N-k+1..N}||_2."""
    return _safe_sqrt(sq.cumsum(-1)).sum(-1) + _safe_sqrt(sq.flip(-1).cumsum(-1)).sum(-1)


def locality_penalty(cam: torch.Tensor) -> torch.Tensor:
    """J_L^t for maps cam (..., H, W): left-right, right-left (nested column groups) plus top-bottom,
    bottom-top (nested row groups) sums of group L2 norms. Returns shape (...)."""
    sq = cam.square()
    return _nested_group_norms(sq.sum(-2)) + _nested_group_norms(sq.sum(-1))


def locality_loss(cams: torch.Tensor, probs: torch.Tensor, mode: str = "top") -> torch.Tensor:
    """Batch J_L = (1/T) sum_t J_L^t for CAMs (T, K, H, W) and class probabilities (T, K) (used as constants).

    top: the CAM of argmax_k q_tk; weighted: sum_k q_tk * J_L(C_tk)."""
    probs = probs.detach()
    if mode == "top":
        top = cams[torch.arange(len(cams), device=cams.device), probs.argmax(1)]
        return locality_penalty(top).mean()
    if mode == "weighted":
        return (probs * locality_penalty(cams)).sum(1).mean()
    raise ValueError(f"loc_mode must be one of {LOC_MODES}, got {mode!r}")


# ---- the method -------------------------------------------------------------------------------------
@register
class Entropy(ClassifierMethod[EntropyConfig]):
    name = "entropy"
    Config = EntropyConfig
    paper = "Bansal & Zepeda, Clustering and Locality Penalties for Semi-Supervised Learning (CE + MEL + NBEL + Loc)"

    def build(self) -> None:
        cfg = self.cfg
        info = self.info
        if cfg.gamma > 0 and not info.is_image:
            raise ConfigError(f"gamma: {cfg.gamma:g} > 0 needs class activation maps of a conv net on images, but "
                              f"dataset {info.name!r} has {info.kind} inputs of shape {info.input_shape}; "
                              "set gamma=0")
        arch = cfg.arch
        if arch == "auto" and info.is_image:
            arch = "conv_small" if info.input_shape[0] == 1 else "conv_large"
        self.build_net(arch)
        if cfg.gamma > 0 and not self.net.has_feature_maps:
            raise ConfigError(f"gamma: {cfg.gamma:g} > 0 needs a conv net with class activation maps, "
                              f"arch={cfg.arch} gives {type(self.net).__name__}; set gamma=0")

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        x, r = batch.x_all, len(batch.y_l)  # labelled first: logits[:r] are the R labelled samples
        if self.net.has_feature_maps:
            logits, cams = self.net.cam(x)
        else:
            logits, cams = self.net(x), None
        ce = cross_entropy_or_zero(logits[:r], batch.y_l)
        j_m = entropy(logits)
        j_b = negative_batch_entropy(logits)
        loss = ce + cfg.alpha * j_m + cfg.beta * j_b
        out = {"loss_ce": ce, "loss_mel": j_m, "loss_nbel": j_b}
        if cams is not None:
            j_l = locality_loss(cams, logits.softmax(1), cfg.loc_mode)
            loss = loss + cfg.gamma * j_l
            out["loss_loc"] = j_l
        self.step(self.optimizers["opt"], loss)
        out["loss_total"] = loss
        return {k: v.detach() for k, v in out.items()}

    @torch.no_grad()
    def pictures(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
        """The CAM of the predicted class overlaid on the first 8 validation images."""
        if not self.net.has_feature_maps or len(x) == 0:
            return {}
        xs = to_float(x[:8])
        with eval_mode(self.net):
            logits, cams = self.net.cam(xs)
        pred = logits.argmax(1)
        top = cams[torch.arange(len(xs), device=xs.device), pred]
        return {"cam": plots.cam_overlay(xs, top, pred, y[:8])}
