"""Training self-supervised class-conditional GAN with virtual labels (Jeongik Cho; VCAGAN).

An unsupervised class-conditional GAN that also clusters. D* has one shared trunk and two heads: a
d_c-dim adversarial vector a and d_c class logits c' (the classifier Q = softmax(c')). Real data get the
virtual label c_r = onehot(argmax c'_r); the CAGAN adversarial value is the inner product a.c with the
non-saturating losses of the author's CAGAN code: L_adv^d = softplus(-a_r.c_r) + softplus(a_f.c_f),
L_adv^g = softplus(-a_f.c_f). The classifier is trained on generated data only, L_cls = CE(c_f, c'_f),
and its decision boundaries are flattened by the classifier gradient penalty
L_creg = ||grad_x Q(x).onehot(argmax Q(x))||^2 on real x. L_d = L_adv^d + lambda_cls L_cls +
lambda_creg L_creg + lambda_r1 R1; L_g = L_adv^g only (no classification term: the paper's point against
InfoGAN). The categorical prior P(C), from which c_f is sampled, starts uniform and follows the
classifier: P(C) <- decay P(C) + (1 - decay) mean_batch Q(x_real) every step (decay 0.999); it is
checkpointed with the model. Defaults are the paper's (Sec. 4; Algorithm 1 is the spec); d_z, d_c and the
networks follow the data as in its two experiments: d_z 16, d_c 8 and 4 x 512 MLPs on points (the Gaussian
clusters), d_z 128, d_c 16 and CNNs on images (MNIST; its full scale in search_spaces/vcagan-mnist.yaml).

Choices the paper leaves open (see also :mod:`ssl_ray.methods._cgan`): the R1 penalty is taken on the
real adversarial value a_r.c_r (the quantity D* outputs for real data) with weight lambda_r1 and no 1/2
factor; the prior's EMA uses the pre-update classifier's Q(x_real) of the same step (Algorithm 1, line 12),
averaged over data-parallel workers so every worker keeps the same prior; the default lambda_creg is 1
(the paper shows 0.1, 1 and 10 on the Gaussians and 1, 5, 10 on MNIST); updates are sequential (D, then G
through the updated D, on the same z and c_f).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..config import hp
from ..nn.distributed import all_mean
from ._cgan import (CatGAN, CatGANConfig, classifier_gradient_penalty, d_adversarial_loss, g_adversarial_loss,
                    input_gradient_penalty)
from .registry import register


@dataclass
class VCAGANConfig(CatGANConfig):
    lambda_cls: float = hp(1.0, "weight of the classification loss CE(c_f, Q(G(z, c_f))) in L_d (paper: 1)", low=0)
    lambda_creg: float = hp(1.0, "weight of the classifier gradient penalty L_creg (paper: 0.1 / 1 / 10 on the "
                            "Gaussians; larger merges clusters into fewer categories)", low=0)
    prior_decay: float = hp(0.999, "EMA decay of the learned prior P(C) toward the batch mean of Q(x_real) "
                            "(paper: 0.999; 1 keeps it uniform)", low=0, high=1)


def prior_ema(prior: torch.Tensor, q_real: torch.Tensor, decay: float) -> torch.Tensor:
    """P(C) <- decay * P(C) + (1 - decay) * mean_batch Q(x_real), for class probabilities q_real (B, d_c)."""
    return decay * prior + (1.0 - decay) * q_real.mean(dim=0)


def virtual_labels(logits: torch.Tensor) -> torch.Tensor:
    """c_r = onehot(argmax c'_r): the classifier's hard prediction, without gradient."""
    return F.one_hot(logits.detach().argmax(dim=1), logits.shape[1]).float()


@register
class VCAGAN(CatGAN[VCAGANConfig]):
    name = "vcagan"
    Config = VCAGANConfig
    paper = "Cho, Training self-supervised class-conditional GAN with virtual labels (VCAGAN)"
    adv_kind = "cagan"
    has_classifier = True

    def discriminator_loss(self, x, x_fake, c_fake):
        cfg = self.cfg
        a_f, logits_f = self.D(x_fake)
        a_r, logits_r = self.D(x)
        v_real = (a_r * virtual_labels(logits_r)).sum(dim=1)
        loss_adv = d_adversarial_loss(v_real, self.adversarial(a_f, c_fake))
        loss_cls = F.cross_entropy(logits_f, c_fake)
        zero = loss_adv.new_zeros(())
        loss_creg = classifier_gradient_penalty(logits_r, x) if cfg.lambda_creg > 0 else zero
        loss_r1 = input_gradient_penalty(v_real, x) if cfg.lambda_r1 > 0 else zero
        loss = loss_adv + cfg.lambda_cls * loss_cls + cfg.lambda_creg * loss_creg + cfg.lambda_r1 * loss_r1
        parts = {"loss_adv_d": loss_adv.detach(), "loss_cls": loss_cls.detach(), "loss_creg": loss_creg.detach(),
                 "loss_r1": loss_r1.detach()}
        return loss, parts, logits_r

    def generator_loss(self, x_fake, c_fake):
        a_f, _ = self.D(x_fake)
        return g_adversarial_loss(self.adversarial(a_f, c_fake))  # Eq. 8: adversarial only

    @torch.no_grad()
    def update_prior(self, real_logits: torch.Tensor) -> None:
        q = all_mean(F.softmax(real_logits, dim=1).mean(dim=0, keepdim=True))
        self.prior = prior_ema(self.prior, q, self.cfg.prior_decay)
