"""advgen's generator G(x, z): an encoder-decoder whose noise z enters at the latent code.

The slides (Ma et al., WISE 2019) say only that z is injected "in the latent space" so that the encoder
and the decoder have different responsibilities; how is not given. Two choices, selected by `z_mode`:
- ``concat`` (default): the decoder reads [E(x), z] (latent_dim + noise_dim inputs);
- ``add``: the decoder reads E(x) + z (needs noise_dim == latent_dim).
Encoder and decoder are MLPs (points, small gray images) or small conv nets (two stride-2 4x4 convs and
their transposes, for images whose side is divisible by 4). Outputs are linear for points and sigmoid
for images (inputs live in [0, 1]).
"""
from __future__ import annotations

import math

import torch
from torch import nn

Z_MODES = ("concat", "add")
G_ARCHS = ("auto", "mlp", "conv")


def _mlp(d_in: int, hidden: int, layers: int, d_out: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    return nn.Sequential(*mods)


class EncoderDecoder(nn.Module):
    """G(x, z) = Dec(inject(Enc(x), z)); `forward(x, z=None)` draws z ~ N(0, I) when none is given."""

    def __init__(self, in_shape: tuple[int, ...], latent_dim: int = 16, noise_dim: int = 16, hidden: int = 128,
                 z_mode: str = "concat", arch: str = "auto", layers: int = 2):
        super().__init__()
        if z_mode not in Z_MODES:
            raise ValueError(f"z_mode must be one of {Z_MODES}, got {z_mode!r}")
        if z_mode == "add" and noise_dim != latent_dim:
            raise ValueError(f"z_mode 'add' needs noise_dim == latent_dim, got {noise_dim} and {latent_dim}")
        if arch == "auto":
            arch = "conv" if len(in_shape) == 3 and in_shape[0] > 1 else "mlp"
        self.in_shape, self.latent_dim, self.noise_dim, self.z_mode, self.arch = (
            tuple(in_shape), latent_dim, noise_dim, z_mode, arch)
        self.image = len(in_shape) == 3
        dec_in = latent_dim + noise_dim if z_mode == "concat" else latent_dim
        if arch == "mlp":
            d = math.prod(in_shape)
            self.encoder = nn.Sequential(nn.Flatten(), _mlp(d, hidden, layers, latent_dim))
            self.decoder = _mlp(dec_in, hidden, layers, d)
        elif arch == "conv":
            if not self.image or in_shape[1] % 4 or in_shape[2] % 4:
                raise ValueError(f"conv encoder-decoder needs images with sides divisible by 4, got {in_shape}")
            c, h, w = in_shape
            self.s = (h // 4, w // 4)
            ch = max(1, hidden // 2)
            flat = 2 * ch * self.s[0] * self.s[1]
            self.encoder = nn.Sequential(
                nn.Conv2d(c, ch, 4, 2, 1), nn.ReLU(), nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                nn.Linear(flat, latent_dim))
            self.decoder = nn.Sequential(
                nn.Linear(dec_in, flat), nn.ReLU(), nn.Unflatten(1, (2 * ch, *self.s)),
                nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(ch, c, 4, 2, 1))
        else:
            raise ValueError(f"arch must be one of {G_ARCHS}, got {arch!r}")
        self.out = nn.Sigmoid() if self.image else nn.Identity()

    def sample_noise(self, n: int, device: torch.device | str) -> torch.Tensor:
        return torch.randn(n, self.noise_dim, device=device)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder(x)
        if z is None:
            z = self.sample_noise(len(x), x.device)
        h = torch.cat([h, z], 1) if self.z_mode == "concat" else h + z
        return self.out(self.decoder(h)).view(len(x), *self.in_shape)
