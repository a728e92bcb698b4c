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


def maybe_wn(layer: L, on: bool, *, init_std: float | None = None, train_scale: bool = True,
             data_init_std: float | None = 1.0) -> L:
    """The layer, with weight norm w = g v / ||v|| (a parametrization of the same module) when `on`, set up as
    openai/improved-gan's layers (`nn.py`: DenseLayer, WeightNormLayer, l2normalize):

    - per output unit: rows of a Linear/Conv weight, columns (dim 1) of a ConvTranspose weight (the
      reference's Deconv2DLayer normalises over (0, 2, 3), i.e. per output channel);
    - the scale g starts at 1 (the reference's Constant(1.)), so w = v / ||v|| before the data-dependent init;
    - `init_std`: the direction v is drawn from N(0, init_std^2) and the bias zeroed (the reference:
      N(0, 0.1^2) in the MNIST D, N(0, 0.05^2) in the CIFAR nets); None keeps PyTorch's default init;
    - `train_scale=False`: g is set by the data-dependent init and then fixed (the reference's hidden layers,
      `train_scale=False` / `train_g=False`): it stays a Parameter (in the state dict, broadcast with the
      weights) with requires_grad off, so no optimiser holds it;
    - `data_init_std`: the standard deviation the data-dependent init gives the layer's outputs (the reference's
      `init_stdv`: 1 but for the CIFAR D's classifier head and the CIFAR G's output layer, 0.1; None: a layer
      the reference does not data-initialise, the MNIST G's `l2normalize` output); kept on the layer as
      `layer.data_init_std` for `methods.improvedgan.weight_norm_data_init`.
    """
    if not on:
        return layer
    if init_std is not None:
        with torch.no_grad():
            getattr(layer, "weight").normal_(0.0, init_std)
            bias = getattr(layer, "bias", None)
            if bias is not None:
                bias.zero_()
    layer = _wn(layer, dim=1 if isinstance(layer, nn.ConvTranspose2d) else 0)
    g: torch.Tensor = getattr(getattr(layer, "parametrizations").weight, "original0")
    with torch.no_grad():
        g.fill_(1.0)
    g.requires_grad_(train_scale)
    setattr(layer, "data_init_std", data_init_std)
    return layer


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
    after each hidden layer; `wn_init_std` 0.1 and `wn_hidden_scale_trainable=False` as in the reference:
    see `maybe_wn`).

    `features(x)` is the last hidden layer's output after its activation and before its noise and dropout
    (the reference's feature matching reads `layers[-3]`, the last dense layer, not the noise layer after
    it); `forward` applies that noise and dropout (`tail`) before the head.
    """

    def __init__(self, input_dim: int, num_classes: int, hidden: Sequence[int] = (100, 50), *,
                 batch_norm: bool = False, weight_norm: bool = False, input_noise: float = 0.0,
                 hidden_noise: float = 0.0, dropout: float = 0.0, activation: str = "relu",
                 wn_init_std: float | None = None, wn_hidden_scale_trainable: bool = True):
        super().__init__()
        self.num_classes = num_classes
        acts: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(0.2),
                                                   "softplus": nn.Softplus}
        act = acts[activation]
        layers: list[nn.Module] = [nn.Flatten()]
        if input_noise:
            layers.append(GaussianNoise(input_noise))
        d = input_dim
        tail: list[nn.Module] = []
        for h in hidden:
            layers.extend(tail)
            layers.append(maybe_wn(nn.Linear(d, h), weight_norm, init_std=wn_init_std,
                                   train_scale=wn_hidden_scale_trainable))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(act())
            tail = ([GaussianNoise(hidden_noise)] if hidden_noise else []) + ([nn.Dropout(dropout)] if dropout else [])
            d = h
        self.trunk = nn.Sequential(*layers)
        self.tail = nn.Sequential(*tail)
        self.feature_dim = d
        self.head = maybe_wn(nn.Linear(d, num_classes), weight_norm, init_std=wn_init_std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tail(self.trunk(x)))


class ConvNet(Classifier):
    """Conv trunk -> global average pooling -> Linear(K).

    `conv_small` (digits, MNIST): 2 blocks of 3x3 convs (32, 64) with BN, ReLU, a 2x2 max-pool between.
    `conv_large` (CIFAR-10/100, SVHN): the conv-large of VAT / Pi-model papers: 3x conv3x3-128, max-pool,
    dropout 0.5, 3x conv3x3-256, max-pool, dropout 0.5, conv3x3-512 valid, conv1x1-256, conv1x1-128,
    all with BN and LeakyReLU(0.1). `improvedgan` (CIFAR/SVHN): ImprovedGAN's discriminator with weight
    norm, LeakyReLU(0.2), dropout 0.2/0.5, stride-2 convs, 2 NIN layers (`width` = (96, 192) for CIFAR,
    (64, 128) for SVHN); initialised as `train_cifar_feature_matching.py` (see `maybe_wn`): directions
    N(0, 0.05^2), hidden scales fixed after the data-dependent init, the head's scale trained and its outputs
    initialised to std 0.1.
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

            def c(i, o, k=3, s=1, p=1):  # the reference: W ~ N(0, 0.05^2), scale fixed after the data init
                return [maybe_wn(nn.Conv2d(i, o, k, stride=s, padding=p), wn, init_std=0.05, train_scale=False),
                        nn.LeakyReLU(0.2)]

            self.trunk = nn.Sequential(
                nn.Dropout(0.2), *c(in_channels, w[0]), *c(w[0], w[0]), *c(w[0], w[0], s=2), nn.Dropout(0.5),
                *c(w[0], w[1]), *c(w[1], w[1]), *c(w[1], w[1], s=2), nn.Dropout(0.5),
                *c(w[1], w[1], 3, 1, 0), *c(w[1], w[1], 1, 1, 0), *c(w[1], w[1], 1, 1, 0))
            d = w[1]
        else:
            raise ValueError(f"unknown conv arch {arch!r}")
        self.feature_dim = d
        if arch == "improvedgan":  # the reference's head: W ~ N(0, 0.05^2), trained scale, data init to std 0.1
            self.head = maybe_wn(nn.Linear(d, num_classes), wn, init_std=0.05, data_init_std=0.1)
        else:
            self.head = nn.Linear(d, num_classes)

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
