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
- eps, the L2 norm of the perturbation, depends on the input's scale (vat_tf's 8.0 is for ZCA-whitened
  CIFAR-10, where it would be as large as a whole digit on [0, 1] images). `eps: 0` (the default) picks it
  from the data, see :func:`auto_eps`: the references' value for the datasets they used (MNIST 0.3: the
  original Theano code's 100-label setting, takerum/vat; SVHN 2.5: vat_tf without augmentation; both on
  [0, 1]-scaled pixels up to a shift), the slides' 0.1 for the two circles (measured to work at both
  noises, docs/results-circles.md), and for any other data `eps_scale` times the mean L2 norm of the
  inputs, with `eps_scale` = 0.3 / 9.24 = 0.0325 (MNIST's value over MNIST's mean norm, measured on
  mnist5k), e.g. 0.126 on digits (mean norm 3.86). The norm is measured once, on the first training batch
  (averaged over data-parallel workers), and kept in the checkpoint.
- vat_tf's schedule, off by default (a method does not know how many epochs its run has): from epoch
  `lr_decay_start` the learning rate falls linearly, lr * (lr_decay_end - epoch) / (lr_decay_end -
  lr_decay_start) at 0-based epoch `epoch`, and Adam's beta1 switches from 0.9 to `beta1_decay` (0.5).
  vat_tf runs 120 epochs of 400 steps with the decay from epoch 80 (SVHN; CIFAR-10: 500 and 460): set
  `lr_decay_end` to the run's epochs and `lr_decay_start` to two thirds of it for the SVHN proportions.
- Under mixed precision (`--amp`) the power iteration and r_adv are computed in exact float32 (autocast off,
  and no TF32, which the Trainer allows on GPUs: nn.modes.full_precision): neither bfloat16 nor TF32 can
  resolve the xi = 1e-6 probe (the direction's cosine to the float32 one is ~0).
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
from ..nn import distributed
from ..nn.functional import entropy, kl
from ..nn.modes import full_precision
from .common import ClassifierConfig, PerturbationMethod, cross_entropy_or_zero
from .improvedgan import linear_decay
from .registry import register

REFERENCE_EPS = {"mnist": 0.3, "mnist5k": 0.3, "svhn": 2.5, "circles": 0.1}
"""eps where a reference gives one for the dataset (see the module docstring); others: eps_scale x mean norm."""


# ---- pure functions ------------------------------------------------------------------------------
def normalize(d: torch.Tensor) -> torch.Tensor:
    """vat_tf's `get_normalized_vector`, per example: d / (max|d| + 1e-12), then / sqrt(1e-6 + sum d^2)."""
    dims = tuple(range(1, d.dim()))
    d = d / (d.abs().amax(dim=dims, keepdim=True) + 1e-12)
    return d / torch.sqrt(1e-6 + d.pow(2).sum(dim=dims, keepdim=True))


def vat_perturbation(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, logits: torch.Tensor,
                     eps: float, xi: float = 1e-6, ip: int = 1, d: torch.Tensor | None = None) -> torch.Tensor:
    """r_adv = eps * normalize(d) after `ip` power iterations from d (default N(0, I)); no graph kept.

    Computed in exact float32 (autocast and TF32 off), whatever the caller's settings: the finite difference at
    xi = 1e-6 is below bfloat16's resolution. `logits` (the clean prediction the KL starts from) must come
    from a float32 pass too: rounded to bfloat16, their error (~1e-2) swamps the probe's effect and the
    gradient at d = 0 is the rounding error's instead of the KL's Hessian times d."""
    with full_precision(x.device):
        dtype = torch.promote_types(x.dtype, torch.float32)  # bfloat16/float16 -> float32; float64 stays
        x, p_logits = x.detach().to(dtype), logits.detach().to(dtype)
        d = torch.randn_like(x) if d is None else d.to(dtype)
        for _ in range(ip):
            d = (xi * normalize(d)).requires_grad_(True)
            dist = kl(p_logits, forward(x + d))
            d = torch.autograd.grad(dist, d)[0].detach()
        return eps * normalize(d)


def auto_eps(dataset: str, mean_norm: float, eps_scale: float) -> float:
    """eps for `eps: 0`: the reference's value for `dataset` if there is one, else eps_scale * mean_norm."""
    return REFERENCE_EPS.get(dataset, eps_scale * mean_norm)


def mean_l2_norm(x: torch.Tensor) -> float:
    """Mean over examples of ||x_i||_2, averaged over data-parallel workers (all agree on it)."""
    return float(distributed.all_mean(x.detach().float().flatten(1).norm(dim=1).mean()))


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
    eps: float = hp(0.0, "epsilon: L2 norm of the virtual adversarial perturbation; 0 = from the data: mnist/mnist5k "
                    "0.3 (reference), svhn 2.5 (reference), circles 0.1 (the slides), otherwise eps_scale x the "
                    "inputs' mean L2 norm (digits: 0.126). vat_tf's 8.0 is for ZCA-whitened CIFAR-10", low=0)
    eps_scale: float = hp(0.0325, "eps / mean L2 norm of the inputs when eps is 0 and the dataset has no reference "
                          "value (0.0325 = MNIST's 0.3 / its mean norm 9.24)", low=0, low_open=True)
    xi: float = hp(1e-6, "xi: norm of the finite-difference probe in the power iteration (reference 1e-6)",
                   low=0, low_open=True)
    ip: int = hp(1, "Ip: number of power iterations (reference 1)", low=1)
    alpha: float = hp(1.0, "weight of L_vat in CE + alpha * L_vat (reference 1)", low=0)
    entmin_weight: float = hp(0.0, "weight of the entropy of p(y|x_u) (VAT+EntMin uses 1; 0 = plain VAT)", low=0)
    lr_decay_start: int = hp(0, "epoch from which the lr decays linearly and Adam's beta1 is beta1_decay (0 with "
                             "lr_decay_end 0 = constant; reference: 80 of 120 epochs SVHN, 460 of 500 CIFAR-10)", low=0)
    lr_decay_end: int = hp(0, "epoch at which the decayed lr would reach 0: the run's epochs (reference: 120, 500)",
                           low=0)
    beta1_decay: float = hp(0.5, "Adam beta1 from lr_decay_start on (reference mom2: 0.5; 0.9 before)", low=0,
                            high=1, high_open=True)
    vat_inputs: str = hp("all", "inputs L_vat is taken over: all (labelled + unlabelled, the paper's D_l u D_ul) "
                         "or unlabelled (the reference code's unlabelled stream)", choices=("all", "unlabelled"))

    def check(self) -> None:
        if self.vat_inputs == "unlabelled" and self.labeled_ratio >= 1.0:
            raise ConfigError("vat_inputs: 'unlabelled' needs labeled_ratio < 1 (the batch has no unlabelled part)")
        if (self.lr_decay_start or self.lr_decay_end) and self.lr_decay_end <= self.lr_decay_start:
            raise ConfigError(f"lr_decay_end: {self.lr_decay_end} must be after lr_decay_start "
                              f"({self.lr_decay_start})")


@register
class VAT(PerturbationMethod[VATConfig]):
    name = "vat"
    Config = VATConfig
    paper = "Miyato et al., Virtual Adversarial Training, TPAMI 2018 (takerum/vat_tf)"
    data_norm: float | None = None
    """Mean L2 norm of the inputs (first training batch) for `eps: 0`; None until measured."""

    def build(self) -> None:
        cfg = self.cfg
        super().build()
        self.schedulers["opt"] = torch.optim.lr_scheduler.LambdaLR(
            self.optimizers["opt"], linear_decay(cfg.lr_decay_start, cfg.lr_decay_end))

    def eps(self, x: torch.Tensor) -> float:
        """The perturbation's norm: cfg.eps, or for eps 0 the data's (:func:`auto_eps`), from the measured
        data_norm (x's own mean norm before the first training step: pictures of an untrained model)."""
        cfg = self.cfg
        if cfg.eps > 0:
            return cfg.eps
        norm = self.data_norm if self.data_norm is not None else float(x.detach().flatten(1).norm(dim=1).mean())
        return auto_eps(self.info.name, norm, cfg.eps_scale)

    def set_beta1(self) -> None:
        """vat_tf's momentum switch: beta1 0.9 before lr_decay_start, beta1_decay from then on (set every step from
        the scheduler's epoch, so a restored run has it too)."""
        cfg = self.cfg
        decaying = cfg.lr_decay_end > 0 and self.schedulers["opt"].last_epoch >= cfg.lr_decay_start
        for g in self.optimizers["opt"].param_groups:
            g["betas"] = (cfg.beta1_decay if decaying else 0.9, g["betas"][1])

    def extra_state(self) -> dict:
        return {"data_norm": self.data_norm}

    def load_extra_state(self, state: dict) -> None:
        self.data_norm = state.get("data_norm", self.data_norm)

    def vat_batch(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, clean logits) for L_vat: the inputs `vat_inputs` names and their prediction, from ONE frozen-BN
        pass over exactly those inputs. The perturbed passes then run over the same batch, so with
        BatchNorm the clean and the perturbed predictions use the same kind of batch statistics and the
        KL is 0 at r = 0 (clean logits assembled from separate labelled and unlabelled passes would
        differ from the combined perturbed pass by the change of statistics alone)."""
        cfg = self.cfg
        x = batch.x_all if cfg.vat_inputs == "all" else batch.x_u
        with full_precision(x.device):  # float32 under --amp (vat_perturbation)
            return x, self.forward_frozen_bn(x)

    def train_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        self.remember(batch)
        logits_l = self.net(batch.x_l)  # the labelled pass (CE) updates BN statistics, the others do not
        loss_ce = cross_entropy_or_zero(logits_l, batch.y_l)
        x, logits = self.vat_batch(batch)
        if self.data_norm is None:  # once per run, on every worker at once (a collective)
            self.data_norm = mean_l2_norm(batch.x_all)
        r_adv = vat_perturbation(self.forward_frozen_bn, x, logits, self.eps(x), cfg.xi, cfg.ip)
        loss_vat = vat_loss(self.forward_frozen_bn, x, logits, r_adv)
        loss = loss_ce + cfg.alpha * loss_vat
        out = {"loss_ce": loss_ce.detach(), "loss_vat": loss_vat.detach()}
        if cfg.entmin_weight > 0 and len(batch.x_u):
            logits_u = logits[len(x) - len(batch.x_u):]  # the unlabelled part of the clean pass
            loss_ent = entropy(logits_u)
            loss = loss + cfg.entmin_weight * loss_ent
            out["loss_ent"] = loss_ent.detach()
        self.set_beta1()
        self.step(self.optimizers["opt"], loss)
        return out

    def adversarial(self, x: torch.Tensor) -> torch.Tensor:
        """x + r_adv for the current classifier (pictures)."""
        cfg = self.cfg
        with full_precision(x.device):
            logits = self.forward_frozen_bn(x)
        return x + vat_perturbation(self.forward_frozen_bn, x, logits, self.eps(x), cfg.xi, cfg.ip)

