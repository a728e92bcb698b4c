"""Vanilla GAN with a continuous and a categorical latent code (the baseline of the VCAGAN paper, Fig. 2).

G(concat(z, onehot c)) with z ~ N(0, I) and c from a fixed prior (uniform by default, as in the paper's
Fig. 2); an unconditional D with one scalar output; the non-saturating adversarial losses
softplus(-D(x)) + softplus(D(G)) for D and softplus(-D(G)) for G, plus the R1 penalty on real data; nothing
ties the generated data to c. Networks, optimiser and penalty weight are the VCAGAN experiments' (see
:mod:`ssl_ray.methods._cgan`).

The vanilla GAN has no classifier, yet tuning needs a finite val_error. Our choice: a real point x is
assigned the category of its nearest generated sample (1-NN, Euclidean in input space) among
`nn_per_category` samples generated per category with a fixed noise seed. This asks the only question a
vanilla GAN can answer ("which category's samples does x look like?"); if G ignores c, as the paper
reports, the categories overlap and the clustering error and NMI are those of a near-random partition.
It is a generator-side measurement and not comparable one-to-one with the classifier-based errors of
vcagan and infogan; read the generation metrics (gen_off_cluster, gen_share_*) for the paper's comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..config import hp
from ..nn.modes import eval_mode
from ._cgan import FixedPriorConfig, FixedPriorGAN
from .registry import register


@dataclass
class GANConfig(FixedPriorConfig):
    nn_per_category: int = hp(256, "generated samples per category behind the 1-NN cluster assignment used as "
                              "the vanilla GAN's 'classifier' for val/test error", low=1)


@register
class GAN(FixedPriorGAN[GANConfig]):
    name = "gan"
    Config = GANConfig
    paper = "vanilla GAN with continuous + categorical latent (baseline of the VCAGAN paper, Fig. 2)"
    has_classifier = False

    @torch.no_grad()
    def generated_bank(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(samples flattened (n * d_c, D), their categories): nn_per_category per category, fixed noise seed."""
        n, d_c = self.cfg.nn_per_category, self.d_c
        z = torch.randn(n * d_c, self.d_z, device=self.device, generator=self._eval_generator())
        c = torch.arange(d_c, device=self.device).repeat_interleave(n)
        with eval_mode(self.G):
            return self.G(z, self.onehot(c)).flatten(1), c

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """One-hot 'logits' of the category of each point's nearest generated sample (see the module doc)."""
        return self.export_module()(x)

    def export_module(self) -> nn.Module:
        return NearestGenerated(*self.generated_bank(), self.d_c).eval()


class NearestGenerated(nn.Module):
    """The plain GAN's classifier as a module: the category of the nearest of a fixed bank of generated samples
    (one-hot), its bank and their categories kept as buffers (an exported model carries them)."""

    bank: torch.Tensor  # buffers
    cats: torch.Tensor

    def __init__(self, bank: torch.Tensor, cats: torch.Tensor, num: int):
        super().__init__()
        self.register_buffer("bank", bank)
        self.register_buffer("cats", cats)
        self.num = num

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(x.flatten(1).float(), self.bank).argmin(dim=1)
        return F.one_hot(self.cats[nearest], self.num).float()
