"""InfoGAN with a categorical code (Chen et al., NIPS 2016), as the VCAGAN paper uses it (Eqs. 1-3, Fig. 3).

G(concat(z, onehot c)) with c from a FIXED prior; D has one shared trunk with a scalar adversarial output
and d_c class logits (Q). Mutual information is maximised through the classification loss
L_cls = CE(c, Q(G(z, c))), which BOTH players minimise: L_d = L_adv^d + lambda_cls L_cls (+ lambda_r1 R1),
L_g = L_adv^g + lambda_cls L_cls. This generator-side classification term is what VCAGAN drops.

Choices: the adversarial output is the standard scalar one with the non-saturating loss (the VCAGAN
paper's f_d, f_g), not CAGAN's inner product; networks, optimiser and R1 weight are the VCAGAN experiments'
(:mod:`ssl_ray.methods._cgan`). The prior is a hyperparameter: `prior=uniform` with d_c = 8 (the default
on points) is the paper's Fig. 3 right, `prior=0.1,0.2,0.3,0.4` (d_c 4 from its weights) its "optimal"
4-dim prior (Fig. 3 left).
The clustering prediction is Q's argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import hp
from ._cgan import FixedPriorConfig, FixedPriorGAN
from .registry import register


@dataclass
class InfoGANConfig(FixedPriorConfig):
    lambda_cls: float = hp(1.0, "weight of the classification (mutual information) loss in both L_d and L_g "
                           "(VCAGAN paper: 1)", low=0)


@register
class InfoGAN(FixedPriorGAN[InfoGANConfig]):
    name = "infogan"
    Config = InfoGANConfig
    paper = "Chen et al. 2016, InfoGAN (categorical code), as the baseline of the VCAGAN paper (Fig. 3)"
    has_classifier = True

    def classification_weight(self) -> float:
        return self.cfg.lambda_cls
