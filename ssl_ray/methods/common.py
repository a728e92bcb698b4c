"""Pieces several methods share: weight averaging (EMA, its hyperparameters EMAConfig, the method evaluated through
it), the classifier-architecture knob, Adam, the class labels a predict function gives a split, the one-classifier
method and the input-perturbing one (VAT, advgen)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
from torch import nn

from ..config import BaseConfig, LabelledConfig, hp
from ..data import Batch, to_float
from ..models import ARCHS, build_classifier
from ..nn import plots
from ..nn.modes import eval_mode, frozen_bn
from .base import Method


@dataclass
class ClassifierConfig(LabelledConfig):
    """Hyperparameters of methods that train one classifier network."""

    arch: str = hp("auto", "classifier network: auto (from the data's shape), mlp, conv_small, conv_large, "
                   "improvedgan", choices=ARCHS)
    lr: float = hp(1e-3, "Adam learning rate", low=0, low_open=True)
    weight_decay: float = hp(0.0, "L2 weight decay (Adam's)", low=0)


class EMA:
    """Exponential moving average of a module's weights (and a copy of its buffers), for evaluation.

    shadow <- shadow + (1 - d_n) * (param - shadow) at the n-th update (n = 0, 1, ...), with
    d_n = min(decay, (1 + n) / (10 + n)) when `warmup` is on (TensorFlow's ExponentialMovingAverage
    `num_updates` rule), else d_n = decay. The warm-up makes the average right at any budget: after n
    updates it weights the last ~n/10 steps, so the initial weights are forgotten, until (1 + n) / (10 + n)
    reaches `decay` (for ImprovedGAN's decay 1 - 1e-4: n ~ 9e4) and the plain average takes over.
    The update counter is state (checkpointed), so a resumed run continues the same sequence of d_n.
    """

    def __init__(self, module: nn.Module, decay: float, warmup: bool = True):
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.shadow = copy.deepcopy(module).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """d_n for the next update."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """One averaging step toward `module`'s weights; its buffers (BatchNorm statistics) are copied. Two fused
        kernels over all tensors (torch._foreach_*), not one launch per tensor: on a GPU the update costs two
        launches per step whatever the depth of the network; on the CPU the numbers are those of a loop."""
        d = self.current_decay()
        shadow: list[torch.Tensor] = list(self.shadow.parameters())
        if shadow:
            torch._foreach_lerp_(shadow, [p.detach() for p in module.parameters()], 1.0 - d)
        buffers: list[torch.Tensor] = list(self.shadow.buffers())
        if buffers:
            torch._foreach_copy_(buffers, list(module.buffers()))
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"shadow": self.shadow.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, s: dict) -> None:
        if "shadow" in s and "num_updates" in s:
            self.shadow.load_state_dict(s["shadow"])
            self.num_updates = int(s["num_updates"])
        else:  # a checkpoint from before the counter existed: the shadow weights only
            self.shadow.load_state_dict(s)


@dataclass
class EMAConfig(BaseConfig):
    """The exponential moving average of a network's weights a method evaluates (improvedgan, fixmatch) or learns
    from (meanteacher's teacher), as one pair of hyperparameters with one meaning everywhere (:class:`EMA`):
    `ema_decay` is the decay d, `ema_warmup` the (1 + n) / (10 + n) warm-up. A method sets its own defaults (its
    paper's d) and says in the field's doc what the average is for."""

    ema_decay: float = hp(0.999, "d: decay of the weight average (0 = none: evaluate the raw weights)", low=0,
                          high=1, high_open=True)
    ema_warmup: bool = hp(True, "warm the weight average up: decay min(ema_decay, (1 + n) / (10 + n)) at update n "
                          "(TensorFlow's num_updates rule), so it is right at any number of steps")

    def make_ema(self, module: nn.Module) -> EMA | None:
        """The average of `module`'s weights this config asks for (None when ema_decay is 0)."""
        return EMA(module, self.ema_decay, self.ema_warmup) if self.ema_decay > 0 else None


def adam(params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=weight_decay)


def cross_entropy_or_zero(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy; 0 (keeping the graph) for an empty labelled part."""
    if len(y) == 0:
        return logits.sum() * 0.0
    return nn.functional.cross_entropy(logits, y)


@torch.no_grad()
def predict_labels(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   batch: int = 1024) -> torch.Tensor:
    """The class (argmax of the logits) `predict` gives each raw input of `x` (uint8 images -> floats in [0, 1],
    as the batches of training), `batch` inputs at a time."""
    out = [predict(to_float(x[i:i + batch])).argmax(dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


MC = TypeVar("MC", bound=BaseConfig)


class EMAEvaluated(Method[MC]):
    """A method evaluated through the exponential moving average of its trained network when it keeps one
    (`self.ema`, an :class:`EMA`; None = evaluate the network itself). Subclasses say which network that is
    (`trained_net`). List it before other bases (`class X(EMAEvaluated[C], ClassifierMethod[C])`) so that its
    `predict` is the one used."""

    ema: EMA | None = None

    def trained_net(self) -> nn.Module:
        """The network the EMA follows."""
        raise NotImplementedError

    @property
    def eval_net(self) -> nn.Module:
        return self.ema.shadow if self.ema is not None else self.trained_net()

    def export_module(self) -> nn.Module:
        return self.eval_net.eval()

    def all_modules(self) -> list[nn.Module]:
        return super().all_modules() + ([self.ema.shadow] if self.ema is not None else [])

    def extra_state(self) -> dict[str, Any]:
        """The average's state (its weights and update count) under "ema", besides the other bases' state."""
        return {**super().extra_state(), **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        if self.ema is not None and "ema" in state:
            self.ema.load_state_dict(state["ema"])

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.eval_net):
            return self.eval_net(x)


CC = TypeVar("CC", bound=ClassifierConfig)


class ClassifierMethod(Method[CC]):
    """A method around one classifier, `self.net` (from ClassifierConfig's arch), trained by one Adam
    optimiser, `self.optimizers["opt"]`; it predicts with the network's logits in eval mode."""

    def build_net(self, arch: str | None = None) -> None:
        cfg = self.cfg
        self.net = build_classifier(self.info.input_shape, self.info.num_classes, arch or cfg.arch)
        self.modules["net"] = self.net
        self.optimizers["opt"] = adam(self.net.parameters(), cfg.lr, weight_decay=cfg.weight_decay)

    def build(self) -> None:
        self.build_net()

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.net):
            return self.net(x)

    def export_module(self) -> nn.Module:
        return self.net.eval()


class PerturbationMethod(ClassifierMethod[CC]):
    """A classifier method that compares predictions on inputs and on perturbed inputs (VAT, advgen).

    Forward passes on unlabelled and perturbed inputs go through :meth:`forward_frozen_bn` (BatchNorm
    running statistics untouched). Pictures: for 2-D points the decision boundary (the last training batch's
    labelled and unlabelled points, misclassified validation points); for images pairs of original /
    perturbed images (:meth:`adversarial`, which subclasses define)."""

    _last: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward_frozen_bn(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's forward pass in training mode without BN running-statistics updates."""
        with frozen_bn(self.net):
            return self.net(x)

    def remember(self, batch: Batch) -> None:
        """Keep the batch's points for the decision-boundary picture."""
        self._last = (batch.x_l.detach(), batch.y_l.detach(), batch.x_u.detach())

    def adversarial(self, x: torch.Tensor) -> torch.Tensor:
        """The perturbed version of x that the pictures show."""
        raise NotImplementedError

    def pictures(self, x: torch.Tensor, y: torch.Tensor) -> dict:
        x = to_float(x)
        if not self.info.is_image:
            if self._last is None or x.shape[1] != 2:
                return {}
            xl, yl, xu = (t.cpu().numpy() for t in self._last)
            return {"decision_boundary": plots.decision_boundary(
                self.predict, xl, yl, xu, x.cpu().numpy(), y.cpu().numpy(),
                title=f"{self.name}: validation points", device=x.device)}
        xs = x[:16]
        with torch.enable_grad():
            adv = self.adversarial(xs).detach()
        pairs = torch.stack([xs, adv], 1).flatten(0, 1)  # original, adversarial, original, ...
        return {"original_vs_adversarial": plots.image_grid(pairs, nrow=8)}
