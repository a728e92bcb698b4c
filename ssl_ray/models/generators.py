"""Generators: an MLP for flat inputs and 2-D points, a DCGAN-style deconvolution net for images."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from .classifiers import maybe_wn


class MLPGenerator(nn.Module):
    """z -> (Linear [-> BN] -> act) x L -> Linear -> output activation -> reshape.

    ImprovedGAN's MNIST generator is hidden (500, 500), BN, softplus, weight-normed output, sigmoid.
    For 2-D points use output="linear".
    """

    def __init__(self, z_dim: int, out_shape: tuple[int, ...], hidden: Sequence[int] = (500, 500), *,
                 batch_norm: bool = True, activation: str = "softplus", output: str = "sigmoid",
                 weight_norm_out: bool = True):
        super().__init__()
        self.z_dim, self.out_shape = z_dim, tuple(out_shape)
        acts: dict[str, Callable[[], nn.Module]] = {"relu": nn.ReLU, "softplus": nn.Softplus,
                                                   "lrelu": lambda: nn.LeakyReLU(0.2)}
        act = acts[activation]
        layers: list[nn.Module] = []
        d = z_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(act())
            d = h
        layers.append(maybe_wn(nn.Linear(d, math.prod(self.out_shape)), weight_norm_out))
        layers.append({"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "linear": nn.Identity}[output]())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(len(z), *self.out_shape)


class ConvGenerator(nn.Module):
    """ImprovedGAN's CIFAR generator, sized to the image: Linear to (base, s0, s0) -> BN -> ReLU, then
    stride-2 5x5 transposed convs halving the channels (BN, ReLU), the last to C channels with weight
    norm and a sigmoid (images live in [0, 1] here; the reference's tanh on [-1, 1] is the same map)."""

    def __init__(self, z_dim: int, out_shape: tuple[int, ...], base: int = 512):
        super().__init__()
        c, h, w = out_shape
        ups = 3 if h % 8 == 0 and h >= 32 else 2
        if h % (2 ** ups) or h != w:
            raise ValueError(f"ConvGenerator needs square images with side divisible by {2 ** ups}, got {out_shape}")
        self.z_dim, self.out_shape, self.s0, self.base = z_dim, tuple(out_shape), h // 2 ** ups, base
        self.fc = nn.Sequential(nn.Linear(z_dim, base * self.s0 * self.s0), nn.BatchNorm1d(base * self.s0 * self.s0),
                                nn.ReLU())
        blocks: list[nn.Module] = []
        ch = base
        for _ in range(ups - 1):
            blocks += [nn.ConvTranspose2d(ch, ch // 2, 5, 2, padding=2, output_padding=1), nn.BatchNorm2d(ch // 2),
                       nn.ReLU()]
            ch //= 2
        blocks += [maybe_wn(nn.ConvTranspose2d(ch, c, 5, 2, padding=2, output_padding=1), True), nn.Sigmoid()]
        self.net = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(len(z), self.base, self.s0, self.s0))


def build_generator(z_dim: int, out_shape: tuple[int, ...], arch: str = "auto", **kw) -> nn.Module:
    """`auto`: MLP (128, 128, linear output) for points, MLP (500, 500) for gray images up to 28x28,
    the deconvolution net for colour images."""
    if arch == "auto":
        if len(out_shape) == 1:
            kw.setdefault("hidden", (128, 128))
            kw.setdefault("output", "linear")
            kw.setdefault("activation", "relu")
            kw.setdefault("weight_norm_out", False)
            return MLPGenerator(z_dim, out_shape, **kw)
        arch = "mlp" if out_shape[0] == 1 else "conv"
    if arch == "mlp":
        return MLPGenerator(z_dim, out_shape, **kw)
    if arch == "conv":
        return ConvGenerator(z_dim, out_shape, **kw)
    raise ValueError(f"unknown generator arch {arch!r}")
