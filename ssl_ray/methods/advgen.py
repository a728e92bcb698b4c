"""Generating Adversarial Examples by Adversarial Networks for Semi-Supervised Learning (Ma, Mao, Chen, Li;
WISE 2019) - "advgen".

A classifier C and an adversarial-example generator G(x, z) play
    min_C max_G  L_nll(C) + alpha * L_adv(G, C) - lambda_rec * L_reconst(G),
    L_adv = E_x KL[C(.|x) || C(.|G(x, z))] over labelled and unlabelled x,  L_reconst = E_x ||x - G(x, z)||^2.
G is an encoder-decoder whose noise z enters at the latent code (`ssl_ray.models.encoder_decoder`), so its
examples may differ from x "semantically" rather than by a pixel-wise perturbation as in VAT; the
reconstruction term keeps them close to x. Only slides exist (no code), so much is chosen here:
- where z enters: concatenated to the encoder's output (`z_mode: concat`), or added (`z_mode: add`);
- the updates alternate per batch: `g_steps` G steps then one C step (`order: gc`), or C first (`cg`);
  each step draws fresh z; G's output is detached in the C step, C is frozen in the G step;
- in the C step the clean prediction C(.|x) is held fixed (stop-gradient, as VAT does), so C is pulled
  toward its clean prediction on G(x, z) rather than the other way round (`stopgrad_clean: false` lets
  both sides learn, the literal min_C of the formula);
- L_reconst sums the squared error over the input's dimensions and averages over the batch;
- alpha = 1 and lambda_rec = 1 (the slides' two-circles row "Ours (lambda = 1.0)"), Adam 1e-3 for both
  players, batch 32 labelled + 128 unlabelled (VAT's reference batch, for a like-for-like comparison);
  latent and noise size 16, encoder/decoder MLPs with two hidden layers of 128 (small conv nets for
  colour images).
C and G's perturbed passes leave C's BatchNorm running statistics untouched, as in VAT.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import hp
from ..data import Batch
from ..data.augment import AugmentConfig
from ..errors import ConfigError
from ..models.encoder_decoder import G_ARCHS, Z_MODES, EncoderDecoder
from ..nn.functional import kl
from ..nn.modes import frozen
from .common import ClassifierConfig, PerturbationMethod, adam, cross_entropy_or_zero
from .registry import register


# ---- pure functions ------------------------------------------------------------------------------
def reconstruction_loss(x: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
    """L_reconst = mean over the batch of ||x - G(x, z)||^2 (summed over the input's dimensions)."""
    return (x - gx).pow(2).flatten(1).sum(1).mean()


def classifier_objective(loss_nll: torch.Tensor, loss_adv: torch.Tensor, alpha: float) -> torch.Tensor:
    """What C minimises: L_nll + alpha * L_adv (the reconstruction term does not depend on C)."""
    return loss_nll + alpha * loss_adv


def generator_objective(loss_adv: torch.Tensor, loss_rec: torch.Tensor, alpha: float,
                        lambda_rec: float) -> torch.Tensor:
    """What G minimises: -(alpha * L_adv - lambda_rec * L_reconst), i.e. G maximises the game's value."""
    return -alpha * loss_adv + lambda_rec * loss_rec


# ---- the method ----------------------------------------------------------------------------------
@dataclass
class AdvGenConfig(ClassifierConfig, AugmentConfig):
    batch_size: int = hp(160, "T: samples per batch (as VAT's reference: 32 labelled + 128 unlabelled)", low=1)
    labeled_ratio: float = hp(0.2, "R/T: labelled share of each batch", low=0, high=1, low_open=True)
    alpha: float = hp(1.0, "weight of L_adv (slides give no value; 1)", low=0)
    lambda_rec: float = hp(1.0, "lambda: weight of the reconstruction term in G's objective (slides: 1.0 on "
                           "two circles)", low=0)
    latent_dim: int = hp(16, "size of the encoder's latent code (not given in the slides)", low=1)
    noise_dim: int = hp(16, "size of the noise z injected at the latent code (must equal latent_dim for "
                        "z_mode add)", low=1)
    z_mode: str = hp("concat", "how z enters the latent code: concat ([E(x), z]) or add (E(x) + z); the slides "
                     "do not say", choices=Z_MODES)
    g_arch: str = hp("auto", "encoder-decoder: auto (conv for colour images, MLP otherwise), mlp, conv",
                     choices=G_ARCHS)
    g_hidden: int = hp(128, "width of the encoder/decoder hidden layers (conv: channels of the last conv)", low=2)
    lr_g: float = hp(1e-3, "Adam learning rate of G", low=0, low_open=True)
    g_steps: int = hp(1, "G steps per C step", low=1)
    order: str = hp("gc", "update order within a batch: gc (G steps, then the C step) or cg",
                    choices=("gc", "cg"))
    stopgrad_clean: bool = hp(True, "hold C(.|x) fixed in L_adv during the C step (as VAT does); false lets "
                              "both sides of the KL learn")

    def check(self) -> None:
        if self.z_mode == "add" and self.noise_dim != self.latent_dim:
            raise ConfigError(f"noise_dim: z_mode 'add' needs noise_dim == latent_dim ({self.latent_dim}), "
                              f"got {self.noise_dim}")


@register
class AdvGen(PerturbationMethod[AdvGenConfig]):
    name = "advgen"
    Config = AdvGenConfig
    paper = "Ma, Mao, Chen, Li, Generating Adversarial Examples by Adversarial Networks for SSL, WISE 2019"

    def build(self) -> None:
        cfg = self.cfg
        self.build_net()  # the classifier C and its optimiser "opt"
        self.gen = EncoderDecoder(self.info.input_shape, cfg.latent_dim, cfg.noise_dim, cfg.g_hidden, cfg.z_mode,
                                  cfg.g_arch)
        self.modules["gen"] = self.gen
        self.optimizers["opt_g"] = adam(self.gen.parameters(), cfg.lr_g)

    # ---- the two phases ----------------------------------------------------------------------------
    def g_step(self, x: torch.Tensor, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One G step on inputs x: maximise alpha * L_adv - lambda_rec * L_reconst with C frozen."""
        cfg = self.cfg
        with frozen(self.net):
            with torch.no_grad():
                clean = self.forward_frozen_bn(x)
            gx = self.gen(x, z)
            loss_adv = kl(clean, self.forward_frozen_bn(gx))
            loss_rec = reconstruction_loss(x, gx)
            self.step(self.optimizers["opt_g"], generator_objective(loss_adv, loss_rec, cfg.alpha, cfg.lambda_rec))
        return {"loss_adv_g": loss_adv.detach(), "loss_rec": loss_rec.detach()}

    def c_step(self, batch: Batch, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One C step: minimise L_nll + alpha * L_adv with G's examples held fixed."""
        cfg = self.cfg
        logits_l = self.net(batch.x_l)  # the labelled pass (NLL) updates BN statistics, the others do not
        x = batch.x_all
        # The clean prediction comes from one pass over the same T inputs as the generated pass, so with
        # BatchNorm both sides of the KL see the same kind of batch statistics (0 when G(x, z) = x).
        if cfg.stopgrad_clean:
            with torch.no_grad():
                clean = self.forward_frozen_bn(x)
        else:
            clean = self.forward_frozen_bn(x)
        with torch.no_grad():
            gx = self.gen(x, z)
        loss_adv = kl(clean, self.forward_frozen_bn(gx))
        loss_nll = cross_entropy_or_zero(logits_l, batch.y_l)
        self.step(self.optimizers["opt"], classifier_objective(loss_nll, loss_adv, cfg.alpha))
        return {"loss_nll": loss_nll.detach(), "loss_adv": loss_adv.detach()}

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.remember(batch)
        out: dict[str, torch.Tensor] = {}
        if cfg.order == "cg":
            out.update(self.c_step(batch))
        for _ in range(cfg.g_steps):
            out.update(self.g_step(batch.x_all))
        if cfg.order == "gc":
            out.update(self.c_step(batch))
        return out

    @torch.no_grad()
    def adversarial(self, x: torch.Tensor) -> torch.Tensor:
        """G(x, z) for fresh z (pictures)."""
        return self.gen(x)

