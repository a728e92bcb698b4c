"""Virtual Adversarial Training (Miyato, Maeda, Koyama, Ishii; TPAMI 2018).

VAT smooths the classifier along the direction in input space to which its prediction is most
sensitive. For each input x a random d ~ N(0, I) is refined by `ip` power iterations
(d <- xi * normalize(d); d <- grad_d KL(p(.|x) || p(.|x + d)) with p(.|x) held fixed), which approximates
the dominant eigenvector of the KL's Hessian at r = 0; the virtual adversarial perturbation is
r_adv = eps * normalize(d) and the loss is L_vat = KL(stopgrad p(.|x) || p(.|x + r_adv)), a batch mean.
Total loss: CE(labelled) + alpha * L_vat (+ entmin_weight * H(p(.|x_u)) for "VAT+EntMin").

Defaults follow the official code, takerum/vat_tf (`vat.py`, `train_semisup.py`): xi = 1e-6, ip = 1,
alpha = 1, Adam 1e-3, 32 labelled + 128 unlabelled per batch; `normalize` divides each example by its
max |v| + 1e-12, then by sqrt(1e-6 + sum v^2). Forward passes on unlabelled and perturbed inputs do not
update BatchNorm running statistics (the reference's `update_batch_stats=False`); they still use the
batch statistics in training mode, as there. Choices made here:
- L_vat is taken over all T inputs of the batch (labelled + unlabelled, the paper's D_l u D_ul);
  the reference applies it to its unlabelled stream only: `vat_inputs: unlabelled` does that.
- The entropy term (weight `entmin_weight`, default 0 = plain VAT; the paper's VAT+EntMin uses 1) is on
  the unlabelled part, as in the reference.

KL and entropy of logits are :mod:`ssl_ray.nn.functional`, the frozen-BN forward pass and the pictures
:class:`ssl_ray.methods.common.PerturbationMethod` (shared with advgen).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import hp
from ..data import Batch
from ..data.augment import AugmentConfig
from ..errors import ConfigError
from ..nn.functional import entropy, kl
from .common import ClassifierConfig, PerturbationMethod, cross_entropy_or_zero
from .registry import register


# ---- pure functions ------------------------------------------------------------------------------
def normalize(d: torch.Tensor) -> torch.Tensor:
    """vat_tf's `get_normalized_vector`, per example: d / (max|d| + 1e-12), then / sqrt(1e-6 + sum d^2)."""
    dims = tuple(range(1, d.dim()))
    d = d / (d.abs().amax(dim=dims, keepdim=True) + 1e-12)
    return d / torch.sqrt(1e-6 + d.pow(2).sum(dim=dims, keepdim=True))


def vat_perturbation(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, logits: torch.Tensor,
                     eps: float, xi: float = 1e-6, ip: int = 1, d: torch.Tensor | None = None) -> torch.Tensor:
    """r_adv = eps * normalize(d) after `ip` power iterations from d (default N(0, I)); no graph kept."""
    p_logits = logits.detach()
    d = torch.randn_like(x) if d is None else d
    for _ in range(ip):
        d = (xi * normalize(d)).requires_grad_(True)
        dist = kl(p_logits, forward(x.detach() + d))
        d = torch.autograd.grad(dist, d)[0].detach()
    return eps * normalize(d)


def vat_loss(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, logits: torch.Tensor,
             r_adv: torch.Tensor) -> torch.Tensor:
    """L_vat = KL(softmax(stopgrad(logits)) || softmax(forward(x + r_adv))), batch mean."""
    return kl(logits.detach(), forward(x + r_adv.detach()))


# ---- the method ----------------------------------------------------------------------------------
@dataclass
class VATConfig(ClassifierConfig, AugmentConfig):
    batch_size: int = hp(160, "T: samples per batch (reference: 32 labelled + 128 unlabelled)", low=1)
    labeled_ratio: float = hp(0.2, "R/T: labelled share of each batch (reference: 32/160)", low=0, high=1,
                              low_open=True)
    eps: float = hp(8.0, "epsilon: L2 norm of the virtual adversarial perturbation (reference: 8 for "
                    "CIFAR-10, 2.5-3.5 SVHN, 0.3 MNIST; the circles table uses 0.1 and 1.0)", low=0, low_open=True)
    xi: float = hp(1e-6, "xi: norm of the finite-difference probe in the power iteration (reference 1e-6)",
                   low=0, low_open=True)
    ip: int = hp(1, "Ip: number of power iterations (reference 1)", low=1)
    alpha: float = hp(1.0, "weight of L_vat in CE + alpha * L_vat (reference 1)", low=0)
    entmin_weight: float = hp(0.0, "weight of the entropy of p(y|x_u) (VAT+EntMin uses 1; 0 = plain VAT)", low=0)
    vat_inputs: str = hp("all", "inputs L_vat is taken over: all (labelled + unlabelled, the paper's D_l u D_ul) "
                         "or unlabelled (the reference code's unlabelled stream)", choices=("all", "unlabelled"))

    def check(self) -> None:
        if self.vat_inputs == "unlabelled" and self.labeled_ratio >= 1.0:
            raise ConfigError("vat_inputs: 'unlabelled' needs labeled_ratio < 1 (the batch has no unlabelled part)")


@register
class VAT(PerturbationMethod[VATConfig]):
    name = "vat"
    Config = VATConfig
    paper = "Miyato et al., Virtual Adversarial Training, TPAMI 2018 (takerum/vat_tf)"

    def vat_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, clean logits) for L_vat: the inputs `vat_inputs` names and their prediction, from ONE frozen-BN
        pass over exactly those inputs. The perturbed passes then run over the same batch, so with
        BatchNorm the clean and the perturbed predictions use the same kind of batch statistics and the
        KL is 0 at r = 0 (clean logits assembled from separate labelled and unlabelled passes would
        differ from the combined perturbed pass by the change of statistics alone)."""
        cfg = self.cfg
        x = batch.x_all if cfg.vat_inputs == "all" else batch.x_u
        return x, self.forward_frozen_bn(x)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.remember(batch)
        logits_l = self.net(batch.x_l)  # the labelled pass (CE) updates BN statistics, the others do not
        loss_ce = cross_entropy_or_zero(logits_l, batch.y_l)
        x, logits = self.vat_batch(batch)
        r_adv = vat_perturbation(self.forward_frozen_bn, x, logits, cfg.eps, cfg.xi, cfg.ip)
        loss_vat = vat_loss(self.forward_frozen_bn, x, logits, r_adv)
        loss = loss_ce + cfg.alpha * loss_vat
        out = {"loss_ce": loss_ce.detach(), "loss_vat": loss_vat.detach()}
        if cfg.entmin_weight > 0 and len(batch.x_u):
            logits_u = logits[len(x) - len(batch.x_u):]  # the unlabelled part of the clean pass
            loss_ent = entropy(logits_u)
            loss = loss + cfg.entmin_weight * loss_ent
            out["loss_ent"] = loss_ent.detach()
        self.step(self.optimizers["opt"], loss)
        return out

    def adversarial(self, x: torch.Tensor) -> torch.Tensor:
        """x + r_adv for the current classifier (pictures)."""
        cfg = self.cfg
        logits = self.forward_frozen_bn(x)
        return x + vat_perturbation(self.forward_frozen_bn, x, logits, cfg.eps, cfg.xi, cfg.ip)

