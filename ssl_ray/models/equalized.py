"""Equalized learning rate (Karras et al., "Progressive Growing of GANs", ICLR 2018, Sec. 4.1).

Weights are stored as N(0, 1) samples and scaled at every forward pass by the He constant
c = gain / sqrt(fan_in); biases start at zero. With Adam, whose steps are scale-free, this makes the
effective learning rate the same for every layer. The VCAGAN paper uses it for all weights.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

RELU_GAIN = math.sqrt(2.0)


class EqualizedLinear(nn.Module):
    """y = x (c W)^T + b with W ~ N(0, 1), c = gain / sqrt(in_features)."""

    def __init__(self, in_features: int, out_features: int, gain: float = RELU_GAIN, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)

    def extra_repr(self) -> str:
        return f"in={self.weight.shape[1]}, out={self.weight.shape[0]}, scale={self.scale:.4g}"


class EqualizedConv2d(nn.Module):
    """Conv2d with W ~ N(0, 1) scaled by c = gain / sqrt(in_channels * k * k)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 gain: float = RELU_GAIN, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"in={i}, out={o}, k={k}, stride={self.stride}, padding={self.padding}, scale={self.scale:.4g}"
