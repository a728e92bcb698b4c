"""Classifiers shared by the methods.

Every classifier maps inputs to K logits and exposes `features(x)` (the penultimate representation:
ImprovedGAN's feature matching and the metric-learning view of I2GAN use it). Conv nets end in global
average pooling + one linear layer and also expose `feature_maps(x)`, so class activation maps
(CAM = head weights . feature maps) are available for the locality penalty.
"""
from __future__ import annotations

from typing import Callable, Sequence, TypeVar

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _wn


L = TypeVar("L", bound=nn.Module)


def maybe_wn(layer: L, on: bool) -> L:
    """The layer, with weight norm (a parametrization of the same module) when `on`."""
    return _wn(layer) if on else layer


class GaussianNoise(nn.Module):
    """Additive N(0, sigma^2) noise during training only (ImprovedGAN's MNIST discriminator)."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.sigma > 0:
            return x + self.sigma * torch.randn_like(x)
        return x


class Classifier(nn.Module):
    """Base: forward(x) = head(features(x))."""

    head: nn.Linear
    num_classes: int

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no convolutional feature maps (CAM needs a conv net)")

    @property
    def has_feature_maps(self) -> bool:
        return False

    def cam(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, class activation maps) where `has_feature_maps`."""
        raise NotImplementedError(f"{type(self).__name__} has no convolutional feature maps (CAM needs a conv net)")


class MLP(Classifier):
    """Flatten -> [noise] -> (Linear [-> BN] -> act [-> noise] [-> dropout]) x L -> Linear(K).

    Covers the 2-D toy nets (2-100-50-2), VAT's MNIST net (784-1200-1200-10, BN) and ImprovedGAN's
    MNIST discriminator (1000-500-250-250-250, weight norm, Gaussian noise 0.3 on the input and 0.5
    after each hidden layer).
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: Sequence[int] = (100, 50), *,
                 batch_norm: bool = False, weight_norm: bool = False, input_noise: float = 0.0,
                 hidden_noise: float = 0.0, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        self.num_classes = num_classes
        acts: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2),
                                                   "softplus": nn.Softplus}
        act = acts[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        if input_noise:
            layers.append(GaussianNoise(input_noise))
        d = input_dim
        for h in hidden:
            layers.append(maybe_wn(nn.Linear(d, h), weight_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(act())
            if hidden_noise:
                layers.append(GaussianNoise(hidden_noise))
            if dropout:
                layers.append(nn.Dropout(dropout))
            d = h
        self.trunk = nn.Sequential(*layers)
        self.feature_dim = d
        self.head = maybe_wn(nn.Linear(d, num_classes), weight_norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class ConvNet(Classifier):
    """Conv trunk -> global average pooling -> Linear(K).

    `conv_small` (digits, MNIST): 2 blocks of 3x3 convs (32, 64) with BN, ReLU, a 2x2 max-pool between.
    `conv_large` (CIFAR-10/100, SVHN): the conv-large of VAT / Pi-model papers: 3x conv3x3-128, max-pool,
    dropout 0.5, 3x conv3x3-256, max-pool, dropout 0.5, conv3x3-512 valid, conv1x1-256, conv1x1-128,
    all with BN and LeakyReLU(0.1). `improvedgan` (CIFAR/SVHN): ImprovedGAN's discriminator with weight
    norm, LeakyReLU(0.2), dropout 0.2/0.5, stride-2 convs, 2 NIN layers (`width` = (96, 192) for CIFAR,
    (64, 128) for SVHN).
    """

    def __init__(self, in_channels: int, num_classes: int, arch: str = "conv_small", *,
                 width: Sequence[int] | None = None, weight_norm: bool | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.arch = arch
        if arch == "conv_small":
            w = tuple(width or (32, 64))
            self.trunk = nn.Sequential(
                nn.Conv2d(in_channels, w[0], 3, padding=1), nn.BatchNorm2d(w[0]), nn.ReLU(),
                nn.Conv2d(w[0], w[0], 3, padding=1), nn.BatchNorm2d(w[0]), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(w[0], w[1], 3, padding=1), nn.BatchNorm2d(w[1]), nn.ReLU(),
                nn.Conv2d(w[1], w[1], 3, padding=1), nn.BatchNorm2d(w[1]), nn.ReLU())
            d = w[1]
        elif arch == "conv_large":
            w = tuple(width or (128, 256, 512))

            def blk(i, o, k=3, p=1):
                return [nn.Conv2d(i, o, k, padding=p), nn.BatchNorm2d(o), nn.LeakyReLU(0.1)]

            self.trunk = nn.Sequential(
                *blk(in_channels, w[0]), *blk(w[0], w[0]), *blk(w[0], w[0]), nn.MaxPool2d(2), nn.Dropout(0.5),
                *blk(w[0], w[1]), *blk(w[1], w[1]), *blk(w[1], w[1]), nn.MaxPool2d(2), nn.Dropout(0.5),
                *blk(w[1], w[2], 3, 0), *blk(w[2], w[1], 1, 0), *blk(w[1], w[0], 1, 0))
            d = w[0]
        elif arch == "improvedgan":
            w = tuple(width or (96, 192))
            wn = True if weight_norm is None else weight_norm

            def c(i, o, k=3, s=1, p=1):
                return [maybe_wn(nn.Conv2d(i, o, k, stride=s, padding=p), wn), nn.LeakyReLU(0.2)]

            self.trunk = nn.Sequential(
                nn.Dropout(0.2), *c(in_channels, w[0]), *c(w[0], w[0]), *c(w[0], w[0], s=2), nn.Dropout(0.5),
                *c(w[0], w[1]), *c(w[1], w[1]), *c(w[1], w[1], s=2), nn.Dropout(0.5),
                *c(w[1], w[1], 3, 1, 0), *c(w[1], w[1], 1, 1, 0), *c(w[1], w[1], 1, 1, 0))
            d = w[1]
        else:
            raise ValueError(f"unknown conv arch {arch!r}")
        self.feature_dim = d
        self.head = maybe_wn(nn.Linear(d, num_classes), bool(weight_norm) and arch == "improvedgan")

    @property
    def has_feature_maps(self) -> bool:
        return True

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3))

    def cam(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, CAMs): CAM_k = sum_c w_kc * A_c over feature maps A (Zhou et al. 2016), (B, K, h, w)."""
        a = self.feature_maps(x)
        logits = self.head(a.mean(dim=(2, 3)))
        w = self.head.weight if weights is None else weights
        return logits, torch.einsum("kc,bchw->bkhw", w, a)


ARCHS = ("auto", "mlp", "conv_small", "conv_large", "improvedgan")


def build_classifier(input_shape: tuple[int, ...], num_classes: int, arch: str = "auto", **kw) -> Classifier:
    """The classifier for a dataset shape. `auto`: MLP 100-50 for points, MLP 256-128 for small gray images,
    conv_large for colour images. `hidden` (for MLPs) and `width` (for conv nets) override the sizes."""
    if arch == "auto":
        if len(input_shape) == 1:
            arch = "mlp"
            kw.setdefault("hidden", (100, 50))
        elif input_shape[0] == 1:
            arch = "mlp"
            kw.setdefault("hidden", (256, 128))
        else:
            arch = "conv_large"
    if arch == "mlp":
        dim = 1
        for s in input_shape:
            dim *= s
        return MLP(dim, num_classes, **kw)
    if len(input_shape) != 3:
        raise ValueError(f"{arch} needs image inputs (C, H, W), got shape {input_shape}")
    return ConvNet(input_shape[0], num_classes, arch, **kw)
