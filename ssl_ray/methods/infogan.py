"""InfoGAN with a categorical code (Chen et al., NIPS 2016), as the VCAGAN paper uses it (Eqs. 1-3, Fig. 3).

G(concat(z, onehot c)) with c from a FIXED prior; D has one shared trunk with a scalar adversarial output
and d_c class logits (Q). Mutual information is maximised through the classification loss
L_cls = CE(c, Q(G(z, c))), which BOTH players minimise: L_d = L_adv^d + lambda_cls L_cls (+ lambda_r1 R1),
L_g = L_adv^g + lambda_cls L_cls. This generator-side classification term is what VCAGAN drops.

Choices: the adversarial output is the standard scalar one with the non-saturating loss (the VCAGAN
paper's f_d, f_g), not CAGAN's inner product; networks, optimiser and R1 weight are the VCAGAN experiments'
(:mod:`ssl_ray.methods._cgan`). The prior is a hyperparameter: `prior=uniform` with d_c = 8 is the
paper's Fig. 3 right, `d_c=4 prior=0.1,0.2,0.3,0.4` its "optimal" 4-dim prior (Fig. 3 left).
The clustering prediction is Q's argmax.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch.nn import functional as F

from ..config import hp
from ._cgan import CatGAN, FixedPriorConfig, g_adversarial_loss
from .registry import register


@dataclass
class InfoGANConfig(FixedPriorConfig):
    lambda_cls: float = hp(1.0, "weight of the classification (mutual information) loss in both L_d and L_g "
                           "(VCAGAN paper: 1)", low=0)


@register
class InfoGAN(CatGAN[InfoGANConfig]):
    name = "infogan"
    Config = InfoGANConfig
    paper = "Chen et al. 2016, InfoGAN (categorical code), as the baseline of the VCAGAN paper (Fig. 3)"
    adv_kind = "scalar"
    has_classifier = True

    def discriminator_loss(self, x, x_fake, c_fake):
        loss, parts, logits_f, logits_r = self.scalar_discriminator_loss(x, x_fake)
        loss_cls = F.cross_entropy(logits_f, c_fake)
        parts["loss_cls"] = loss_cls.detach()
        return loss + self.cfg.lambda_cls * loss_cls, parts, logits_r

    def generator_loss(self, x_fake, c_fake):
        s_f, logits_f = self.D(x_fake)
        return g_adversarial_loss(s_f[:, 0]) + self.cfg.lambda_cls * F.cross_entropy(logits_f, c_fake)
