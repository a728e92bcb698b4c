"""Generators: an MLP for flat inputs and 2-D points, a DCGAN-style deconvolution net for images."""
from __future__ import annotations

import math
from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

from .classifiers import maybe_wn

L = TypeVar("L", nn.Linear, nn.ConvTranspose2d)


def _fixed_bn_scale(bn: nn.BatchNorm1d | nn.BatchNorm2d) -> nn.BatchNorm1d | nn.BatchNorm2d:
    """BatchNorm whose scale stays 1 (requires_grad off; only its shift trains) and whose eps is 1e-6 (PyTorch's
    default is 1e-5): the reference's `nn.batch_norm(..., g=None)` (its BatchNormLayer divides by
    sqrt(1e-6 + var))."""
    bn.weight.requires_grad_(False)
    bn.eps = 1e-6
    return bn


class MLPGenerator(nn.Module):
    """z -> (Linear [-> BN] -> act) x L -> Linear -> output activation -> reshape.

    ImprovedGAN's MNIST generator (`train_mnist_feature_matching.py`) is hidden (500, 500), BN, softplus,
    weight-normed output, sigmoid; with `init="glorot"` it is initialised as there: Glorot-uniform weights and
    zero biases (Lasagne's DenseLayer defaults), BN without a trained scale (`g=None`), and the output layer's
    weight-norm scale starting at 1 and trained (`l2normalize`, no data-dependent init). `init="torch"` keeps
    PyTorch's default initialisation and trained BN scales (the 2-D point generator).
    For 2-D points use output="linear".
    """

    def __init__(self, z_dim: int, out_shape: tuple[int, ...], hidden: Sequence[int] = (500, 500), *,
                 batch_norm: bool = True, activation: str = "softplus", output: str = "sigmoid",
                 weight_norm_out: bool = True, init: str = "glorot"):
        super().__init__()
        if init not in ("glorot", "torch"):
            raise ValueError(f"unknown generator init {init!r}")
        self.z_dim, self.out_shape = z_dim, tuple(out_shape)
        acts: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "softplus": nn.Softplus,
                                                   "lrelu": lambda: nn.LeakyReLU(0.2)}
        act = acts[activation]
        ref = init == "glorot"

        def linear(i: int, o: int) -> nn.Linear:
            layer = nn.Linear(i, o)
            if ref:
                with torch.no_grad():
                    nn.init.xavier_uniform_(layer.weight)
                    layer.bias.zero_()
            return layer

        layers: list[nn.Module] = []
        d = z_dim
        for h in hidden:
            layers.append(linear(d, h))
            if batch_norm:
                bn = nn.BatchNorm1d(h)
                layers.append(_fixed_bn_scale(bn) if ref else bn)
            layers.append(act())
            d = h
        layers.append(maybe_wn(linear(d, math.prod(self.out_shape)), weight_norm_out, data_init_std=None))
        layers.append({"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "linear": nn.Identity}[output]())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), *self.out_shape)


class TanhToUnit(nn.Module):
    """(tanh(a) + 1) / 2: the reference's tanh output on [-1, 1], mapped to the [0, 1] images used here."""

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(a) + 1.0) / 2.0


class ConvGenerator(nn.Module):
    """ImprovedGAN's CIFAR generator (`train_cifar_feature_matching.py`), sized to the image: Linear to
    (base, s0, s0) -> BN -> ReLU, then stride-2 5x5 transposed convs halving the channels (BN, ReLU), the last
    to C channels with weight norm and tanh, mapped to [0, 1] (images live in [0, 1] here; the reference's
    are in [-1, 1]). Initialised as the reference: weights N(0, 0.05^2), zero biases, BN without a trained
    scale (`g=None`); the output layer's weight-norm scale is trained and set by the data-dependent init to
    outputs of std 0.1 (`init_stdv=0.1`; `methods.improvedgan.weight_norm_data_init` on noise batches)."""

    def __init__(self, z_dim: int, out_shape: tuple[int, ...], base: int = 512):
        super().__init__()
        c, h, w = out_shape
        ups = 3 if h % 8 == 0 and h >= 32 else 2
        if h % (2 ** ups) or h != w:
            raise ValueError(f"ConvGenerator needs square images with side divisible by {2 ** ups}, got {out_shape}")
        self.z_dim, self.out_shape, self.s0, self.base = z_dim, tuple(out_shape), h // 2 ** ups, base

        def init(layer: L) -> L:
            with torch.no_grad():
                layer.weight.normal_(0.0, 0.05)
                if layer.bias is not None:
                    layer.bias.zero_()
            return layer

        n0 = base * self.s0 * self.s0
        self.fc = nn.Sequential(init(nn.Linear(z_dim, n0)), _fixed_bn_scale(nn.BatchNorm1d(n0)), nn.ReLU())
        blocks: list[nn.Module] = []
        ch = base
        for _ in range(ups - 1):
            blocks += [init(nn.ConvTranspose2d(ch, ch // 2, 5, 2, padding=2, output_padding=1)),
                       _fixed_bn_scale(nn.BatchNorm2d(ch // 2)), nn.ReLU()]
            ch //= 2
        blocks += [maybe_wn(nn.ConvTranspose2d(ch, c, 5, 2, padding=2, output_padding=1), True, init_std=0.05,
                            data_init_std=0.1), TanhToUnit()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(len(z), self.base, self.s0, self.s0))


def build_generator(z_dim: int, out_shape: tuple[int, ...], arch: str = "auto", **kw) -> nn.Module:
    """`auto`: MLP (128, 128, linear output, PyTorch's init) for points, the MNIST MLP (500, 500) for gray
    images up to 28x28, the deconvolution net for colour images."""
    if arch == "auto":
        if len(out_shape) == 1:
            kw.setdefault("hidden", (128, 128))
            kw.setdefault("output", "linear")
            kw.setdefault("activation", "relu")
            kw.setdefault("weight_norm_out", False)
            kw.setdefault("init", "torch")
            return MLPGenerator(z_dim, out_shape, **kw)
        arch = "mlp" if out_shape[0] == 1 else "conv"
    if arch == "mlp":
        return MLPGenerator(z_dim, out_shape, **kw)
    if arch == "conv":
        return ConvGenerator(z_dim, out_shape, **kw)
    raise ValueError(f"unknown generator arch {arch!r}")
