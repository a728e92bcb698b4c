"""The networks of the conditional GANs with a categorical latent code (vcagan, gan, infogan; VCAGAN paper Sec. 4).

A generator G(concat(z, onehot c)) and a discriminator D* whose shared trunk ends in one linear layer split
into an adversarial output (d_c-dim for CAGAN, 1-dim for a plain GAN) and d_c class logits (none for the
vanilla GAN). On 2-D points both are MLPs with `depth` hidden layers of `width` units (paper: 4 x 512); we
read "four fully connected layers of 512 units" as four hidden layers plus a linear output layer. On images
(`arch=conv`) they are small CNNs (the paper only says "simply composed of CNNs"): D = conv3x3(w),
conv3x3(w), avgpool, conv3x3(2w), avgpool, FC(width); G mirrors it with nearest upsampling and ends in a
sigmoid (images live in [0, 1]). Activations are LeakyReLU(0.2) (Karras et al.'s choice; the paper does not
name one); every weight has an equalized learning rate.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .equalized import EqualizedConv2d, EqualizedLinear


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2)


def _mlp(d_in: int, width: int, depth: int) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [EqualizedLinear(d_in, width), _act()]
        d_in = width
    return layers


class CondGenerator(nn.Module):
    """G(z, c) = net(concat(z, onehot c)): an MLP (linear output for points, sigmoid for images) or a CNN."""

    def __init__(self, d_z: int, d_c: int, out_shape: tuple[int, ...], arch: str, width: int, depth: int,
                 channels: int):
        super().__init__()
        self.d_z, self.d_c, self.out_shape = d_z, d_c, tuple(out_shape)
        image = len(out_shape) == 3
        if arch == "mlp":
            self.net = nn.Sequential(*_mlp(d_z + d_c, width, depth),
                                     EqualizedLinear(width, math.prod(out_shape), gain=1.0),
                                     nn.Sigmoid() if image else nn.Identity())
        else:
            c, h, w = out_shape
            if h % 4 or w % 4:
                raise ValueError(f"the conv generator needs image sides divisible by 4, got {out_shape}")
            s0 = (h // 4, w // 4)
            self.net = nn.Sequential(
                EqualizedLinear(d_z + d_c, 2 * channels * s0[0] * s0[1]), _act(),
                nn.Unflatten(1, (2 * channels, *s0)),
                nn.Upsample(scale_factor=2), EqualizedConv2d(2 * channels, channels, 3, padding=1), _act(),
                nn.Upsample(scale_factor=2), EqualizedConv2d(channels, channels, 3, padding=1), _act(),
                EqualizedConv2d(channels, c, 3, padding=1, gain=1.0), nn.Sigmoid())

    def forward(self, z: torch.Tensor, c_onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, c_onehot], dim=1)).reshape(len(z), *self.out_shape)


class CondDiscriminator(nn.Module):
    """D*(x) -> (adversarial output a (B, n_adv), class logits c' (B, n_cls)) from one shared trunk."""

    def __init__(self, in_shape: tuple[int, ...], n_adv: int, n_cls: int, arch: str, width: int, depth: int,
                 channels: int):
        super().__init__()
        self.n_adv, self.n_cls = n_adv, n_cls
        if arch == "mlp":
            trunk = [nn.Flatten(), *_mlp(math.prod(in_shape), width, depth)]
        else:
            c, h, w = in_shape
            if h % 4 or w % 4:
                raise ValueError(f"the conv discriminator needs image sides divisible by 4, got {in_shape}")
            trunk = [EqualizedConv2d(c, channels, 3, padding=1), _act(),
                     EqualizedConv2d(channels, channels, 3, padding=1), _act(), nn.AvgPool2d(2),
                     EqualizedConv2d(channels, 2 * channels, 3, padding=1), _act(), nn.AvgPool2d(2),
                     nn.Flatten(), EqualizedLinear(2 * channels * (h // 4) * (w // 4), width), _act()]
        self.trunk = nn.Sequential(*trunk)
        self.head = EqualizedLinear(width, n_adv + n_cls, gain=1.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.head(self.trunk(x))
        return h[:, :self.n_adv], h[:, self.n_adv:]
