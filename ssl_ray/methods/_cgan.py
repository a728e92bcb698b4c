"""Shared pieces of the conditional GANs with a categorical latent code (vcagan, gan, infogan).

Not a method itself (the leading underscore keeps the registry away). It holds:

- the hyperparameters the three share (paper Sec. 4: Z ~ N(0, I), Adam lr 1e-3 betas (0, 0.99), batch 32,
  1000 steps per epoch, R1 weight 1, equalized learning rate for all weights);
- the networks (:mod:`ssl_ray.models.conditional`): a generator G(concat(z, onehot c)) and a discriminator
  D* with an adversarial output (d_c-dim for CAGAN, 1-dim for a plain GAN) and d_c class logits;
- the losses as pure functions (non-saturating f_d, f_g on an adversarial value; gradient penalties);
- the train step skeleton: one D step, then one G step on the same fake batch through the updated D (the
  paper's Algorithm 1 computes both losses before either update; sequential updates are what
  :meth:`Method.step` supports and are the usual practice);
- the metrics (learned or fixed prior P(C), active categories, entropy, NMI, and on the Gaussian clusters
  the off-cluster share and per-cluster share of generated points, :mod:`ssl_ray.data.synthetic`) and the
  pictures (:mod:`ssl_ray.nn.plots`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..config import BaseConfig, hp
from ..data import Batch
from ..data.synthetic import GAUSSIAN_CENTRES, GAUSSIAN_SIGMA, gaussian_generation_metrics
from ..errors import ConfigError
from ..models.conditional import CondDiscriminator, CondGenerator
from ..nn.metrics import categorical_entropy, nmi
from ..nn.modes import eval_mode, frozen
from ..nn.plots import image_grid, scatter_by_category
from .base import Method
from .common import adam, predict_labels

ACTIVE_THRESHOLD = 0.01
"""Categories with P(C) below 1% are ignored (paper Fig. 4-7)."""


class ClassHead(nn.Module):
    """The class logits of a discriminator that returns (adversarial output, class logits): what a conditional
    GAN predicts with (CatGAN.export_module)."""

    def __init__(self, d: nn.Module):
        super().__init__()
        self.d = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.d(x)[1]


# ---- hyperparameters --------------------------------------------------------------------------------------
@dataclass
class CatGANConfig(BaseConfig):
    batch_size: int = hp(32, "samples per batch, real and generated alike (paper: 32)", low=1)
    steps_per_epoch: int = hp(1000, "optimiser steps (one D and one G update each) per epoch (paper: 1000)", low=0)
    arch: str = hp("auto", "networks: auto (mlp for points, conv for images), mlp or conv",
                   choices=("auto", "mlp", "conv"))
    width: int = hp(512, "units of each hidden fully connected layer (paper, Gaussians: 512)", low=1)
    depth: int = hp(4, "hidden fully connected layers of G and D in the mlp arch (paper, Gaussians: 4)", low=1)
    channels: int = hp(64, "conv arch: channels of the first conv block (the second has twice as many)", low=1)
    d_z: int = hp(0, "dimension of the continuous latent z ~ N(0, I); 0 = the paper's for the data: 16 for points "
                  "(Gaussians), 128 for images (MNIST)", low=0)
    d_c: int = hp(0, "number of categories of the categorical latent code; 0 = the paper's for the data: 8 for "
                  "points (Gaussians), 16 for images (MNIST), or the number of weights of a fixed prior", low=0)
    lr: float = hp(1e-3, "Adam learning rate of G and D (paper: 1e-3)", low=0, low_open=True)
    beta1: float = hp(0.0, "Adam beta1 (paper: 0)", low=0, high=1, high_open=True)
    beta2: float = hp(0.99, "Adam beta2 (paper: 0.99)", low=0, high=1, high_open=True)
    lambda_r1: float = hp(1.0, "weight of the R1 penalty mean ||grad_x D(x)||^2 on real data (paper: 1)", low=0)
    eval_samples: int = hp(4000, "generated samples behind the generation metrics and the 2-D picture", low=1)


@dataclass
class FixedPriorConfig(CatGANConfig):
    prior: str = hp("uniform", "the fixed categorical prior P(C): 'uniform' over d_c categories, or d_c "
                    "comma-separated weights such as '0.1,0.2,0.3,0.4' (normalised to sum to 1)")

    def check(self) -> None:
        if self.d_c:
            parse_prior(self.prior, self.d_c)
        else:
            prior_weights(self.prior)


def prior_weights(text: str) -> list[float] | None:
    """None for 'uniform'; for 'w1,w2,...' (positive, finite) the weights normalised to sum to 1."""
    if text.strip() == "uniform":
        return None
    try:
        w = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"prior: {text!r} is neither 'uniform' nor comma-separated numbers") from None
    if any(not math.isfinite(v) or v <= 0 for v in w):
        raise ConfigError(f"prior: weights must be positive and finite, got {text!r}")
    s = sum(w)
    return [v / s for v in w]


def parse_prior(text: str, d_c: int) -> list[float]:
    """'uniform' -> [1/d_c] * d_c; 'w1,w2,...' (d_c positive weights) -> the normalised weights."""
    w = prior_weights(text)
    if w is None:
        return [1.0 / d_c] * d_c
    if len(w) != d_c:
        raise ConfigError(f"prior: {len(w)} weights given but d_c = {d_c}")
    return w


PAPER_LATENT = {"points": (16, 8), "images": (128, 16)}
"""(d_z, d_c) of the paper's experiments (Sec. 4): the 2-D Gaussian clusters, and MNIST."""


def latent_sizes(cfg: CatGANConfig, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(d_z, d_c) a model is built with: the config's, and for a 0 the paper's setting for the kind of data
    (images: inputs of shape (C, H, W); points otherwise). A fixed prior given as weights sets d_c 0 to their
    number."""
    d_z, d_c = PAPER_LATENT["images" if len(input_shape) == 3 else "points"]
    weights = prior_weights(getattr(cfg, "prior", "uniform"))
    if not cfg.d_c and weights is not None:
        d_c = len(weights)
    return cfg.d_z or d_z, cfg.d_c or d_c


# ---- losses (pure functions) -----------------------------------------------------------------------------
def adversarial_value(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """CAGAN's adversarial value a.c per sample (B,). A plain GAN is the case a: (B, 1), c = ones."""
    return (a * c).sum(dim=1)


def d_adversarial_loss(v_real: torch.Tensor, v_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating f_d: mean softplus(-v_real) + mean softplus(v_fake)."""
    return F.softplus(-v_real).mean() + F.softplus(v_fake).mean()


def g_adversarial_loss(v_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating f_g: mean softplus(-v_fake)."""
    return F.softplus(-v_fake).mean()


def input_gradient_penalty(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """mean_i ||d out_i / d x_i||^2 for per-sample outputs out (B,) of inputs x (B, ...) (graph kept)."""
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return g.flatten(1).pow(2).sum(dim=1).mean()


def classifier_gradient_penalty(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """VCAGAN's L_creg (Eq. 6): mean ||grad_x (Q(x) . onehot(argmax Q(x)))||^2, Q = softmax(logits).

    Q(x) . onehot(argmax Q(x)) is the largest class probability; its gradient flows through that entry only.
    """
    return input_gradient_penalty(F.softmax(logits, dim=1).max(dim=1).values, x)


# ---- the method skeleton ---------------------------------------------------------------------------------
G_C = TypeVar("G_C", bound=CatGANConfig)


class CatGAN(Method[G_C]):
    """A GAN whose generator takes (z, c) with c drawn from a categorical prior P(C).

    Subclasses set `adv_kind` ("cagan": d_c outputs, "scalar": 1) and `has_classifier`, and implement
    :meth:`discriminator_loss` and :meth:`generator_loss`; VCAGAN also overrides :meth:`update_prior`.
    """

    uses_labels = False
    clustering = True
    adv_kind: str = "scalar"
    has_classifier: bool = True

    # -- building --
    def build(self) -> None:
        cfg = self.cfg
        shape = self.info.input_shape
        arch = cfg.arch if cfg.arch != "auto" else ("conv" if len(shape) == 3 else "mlp")
        self.d_z, self.d_c = latent_sizes(cfg, shape)
        n_adv = self.d_c if self.adv_kind == "cagan" else 1
        n_cls = self.d_c if self.has_classifier else 0
        self.G = CondGenerator(self.d_z, self.d_c, shape, arch, cfg.width, cfg.depth, cfg.channels)
        self.D = CondDiscriminator(shape, n_adv, n_cls, arch, cfg.width, cfg.depth, cfg.channels)
        self.modules = {"G": self.G, "D": self.D}
        betas = (cfg.beta1, cfg.beta2)
        self.optimizers = {"D": adam(self.D.parameters(), cfg.lr, betas), "G": adam(self.G.parameters(), cfg.lr, betas)}
        self.prior = torch.tensor(self.initial_prior(), dtype=torch.float32, device=self.device)

    @property
    def num_clusters(self) -> int:
        return self.d_c

    def initial_prior(self) -> list[float]:
        return parse_prior(getattr(self.cfg, "prior", "uniform"), self.d_c)

    # -- latent codes --
    def onehot(self, c: torch.Tensor) -> torch.Tensor:
        return F.one_hot(c, self.d_c).float()

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ N(0, I_{d_z}) and category indices c ~ P(C) (the current prior). Training noise comes from the
        stream shared by data-parallel workers (Method.global_rand); `generator` gives a fixed one (pictures)."""
        if generator is None:
            return self.global_rand(n, self.d_z, normal=True), self.global_multinomial(self.prior, n)
        z = torch.randn(n, self.d_z, device=self.device, generator=generator)
        c = torch.multinomial(self.prior, n, replacement=True, generator=generator)
        return z, c

    def adversarial(self, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Per-sample adversarial value: a.onehot(c) for CAGAN, the scalar output otherwise."""
        return adversarial_value(a, self.onehot(c)) if self.adv_kind == "cagan" else a[:, 0]

    # -- training --
    def discriminator_loss(self, x: torch.Tensor, x_fake: torch.Tensor, c_fake: torch.Tensor
                           ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(L_d, its detached parts, the real data's class logits) for real x (requires grad) and fake data."""
        raise NotImplementedError

    def generator_loss(self, x_fake: torch.Tensor, c_fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update_prior(self, real_logits: torch.Tensor) -> None:
        """Fixed priors do nothing; VCAGAN moves P(C) toward the batch mean of Q(x_real)."""

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.x_u.detach().requires_grad_(True)  # gradient penalties differentiate w.r.t. real inputs
        z, c = self.sample_latent(len(x))
        x_fake = self.G(z, self.onehot(c))
        loss_d, parts, real_logits = self.discriminator_loss(x, x_fake.detach(), c)
        self.step(self.optimizers["D"], loss_d)
        self.update_prior(real_logits.detach())
        with frozen(self.D):
            loss_g = self.generator_loss(x_fake, c)
        self.step(self.optimizers["G"], loss_g)
        return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(), **parts}

    # -- evaluation --
    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits c' of D*'s classifier head (the cluster of x)."""
        with eval_mode(self.D):
            _, logits = self.D(x)
        return logits

    def export_module(self) -> nn.Module:
        return ClassHead(self.D).eval()

    def _eval_generator(self) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(12345)  # same eval samples every epoch

    @torch.no_grad()
    def generate(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n samples (and their categories) from the current prior, with a fixed evaluation noise seed."""
        z, c = self.sample_latent(n, self._eval_generator())
        return self.G(z, self.onehot(c)), c

    def prior_metrics(self) -> dict[str, float]:
        p = self.prior.detach().cpu()
        out = {f"prior_{k}": float(v) for k, v in enumerate(p)}
        out["active_categories"] = float((p >= ACTIVE_THRESHOLD).sum())
        out["prior_entropy"] = categorical_entropy(p)
        return out

    @torch.no_grad()
    def eval_metrics(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        out = self.prior_metrics()
        if len(y):
            pred = predict_labels(self.predict, x)
            out["val_nmi"] = nmi(pred, y)
            # Where the learned prior is heading (its fixed point is E_x[Q(x)]): the categories that the
            # classifier gives at least 1% of the real validation points.
            share = torch.bincount(pred, minlength=self.d_c).double() / len(pred)
            out["real_active_categories"] = float((share >= ACTIVE_THRESHOLD).sum())
        if self.info.name == "gaussians":
            out.update(gaussian_generation_metrics(self.generate(self.cfg.eval_samples)[0]))
        return out

    def extra_state(self) -> dict:
        return {"prior": self.prior.detach().cpu().clone()}

    def load_extra_state(self, state: dict) -> None:
        if "prior" in state:
            self.prior = state["prior"].to(self.device, torch.float32).clone()

    @torch.no_grad()
    def pictures(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
        if self.info.input_shape == (2,):
            xf, c = self.generate(self.cfg.eval_samples)
            return {"generated": scatter_by_category(xf.cpu().numpy(), c.cpu().numpy(), self.prior.cpu().numpy(),
                                                     f"{self.name}: generated points by category",
                                                     centres=GAUSSIAN_CENTRES, sigma=GAUSSIAN_SIGMA,
                                                     label_min=ACTIVE_THRESHOLD)}
        if len(self.info.input_shape) == 3:
            return {"generated": self.category_grid()}
        return {}

    @torch.no_grad()
    def category_grid(self, rows: int = 8) -> np.ndarray:
        """One row per continuous code z, one column per category with P(C) >= 1%."""
        cats = torch.nonzero(self.prior >= ACTIVE_THRESHOLD).flatten()
        if len(cats) == 0:
            cats = self.prior.argmax().reshape(1)
        g = self._eval_generator()
        z = torch.randn(rows, self.d_z, device=self.device, generator=g)
        zz = z.repeat_interleave(len(cats), dim=0)
        cc = cats.repeat(rows)
        with eval_mode(self.G):
            imgs = self.G(zz, self.onehot(cc))
        return image_grid(imgs, nrow=len(cats))


F_C = TypeVar("F_C", bound=FixedPriorConfig)


class FixedPriorGAN(CatGAN[F_C]):
    """gan and infogan: a fixed prior, D's scalar adversarial output s with the non-saturating losses
    softplus(-s_r) + softplus(s_f) + lambda_r1 R1(s_r) for D and softplus(-s_f) for G; with a classifier head
    (infogan) both players also minimise :meth:`classification_weight` * CE(c'(G(z, c)), c)."""

    adv_kind = "scalar"

    def classification_weight(self) -> float:
        """The weight of the classification loss on generated data (with a classifier head)."""
        return 0.0

    def discriminator_loss(self, x, x_fake, c_fake):
        s_f, logits_f = self.D(x_fake)
        s_r, logits_r = self.D(x)
        loss_adv = d_adversarial_loss(s_r[:, 0], s_f[:, 0])
        lam = self.cfg.lambda_r1
        loss_r1 = input_gradient_penalty(s_r[:, 0], x) if lam > 0 else loss_adv.new_zeros(())
        parts = {"loss_adv_d": loss_adv.detach(), "loss_r1": loss_r1.detach()}
        loss = loss_adv + lam * loss_r1
        if self.has_classifier:
            loss_cls = F.cross_entropy(logits_f, c_fake)
            parts["loss_cls"] = loss_cls.detach()
            loss = loss + self.classification_weight() * loss_cls
        return loss, parts, logits_r

    def generator_loss(self, x_fake, c_fake):
        s_f, logits_f = self.D(x_fake)
        loss = g_adversarial_loss(s_f[:, 0])
        if self.has_classifier:
            loss = loss + self.classification_weight() * F.cross_entropy(logits_f, c_fake)
        return loss
