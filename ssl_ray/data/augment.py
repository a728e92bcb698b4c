"""Weak and strong augmentation of image batches, on the batch's device, reproducible and data-parallel exact.

- weak (FixMatch's "flip-and-shift", Mean Teacher's translation): a random horizontal flip (p = 0.5, only
  where the dataset's labels survive it: not digits, not SVHN) and a random translation by up to 12.5 % of
  the image side (integer shifts, reflect padding: the reference codes' pad-and-crop);
- strong (the weak view, then FixMatch's RandAugment with random magnitudes and Cutout, as USB's strong
  transform): `n_ops` operations drawn uniformly,
  per sample, from FixMatch's list (USB's `augment_list`: AutoContrast, Brightness, Color, Contrast,
  Equalize, Identity, Posterize, Rotate, Sharpness, ShearX/Y, Solarize, TranslateX/Y), each with a magnitude
  drawn uniformly from its range; then a Cutout square of side U(0, 0.5) x the image side, filled with grey.

Why not `torchvision.transforms.v2.RandAugment` on the batch: on a batched tensor it draws ONE operation and
ONE magnitude for the whole batch (and from torch's global RNG), so every image of a batch gets the same
transformation. Here every parameter is drawn per sample from an explicit generator; the operations are
batched tensor code (torchvision's functional `equalize` and `autocontrast`, which work per image on a
batch, an affine `grid_sample` for the geometric ones, blends for the colour ones), so they run on any device.

Randomness: all parameters of a step come from `torch.Generator().manual_seed(step_seed(seed, step))`, drawn
for the GLOBAL batch (world x n samples, on the CPU) and sliced to this rank's n, like the batch itself
(splits.BatchStream). So a run is reproducible, a resumed run draws what the uninterrupted one would (no
state beyond the step counter), different ranks get different views, and N workers with batch n see exactly
the views one worker with batch N x n sees. Non-image inputs (2-D points) are returned unchanged.

On a GPU nothing here waits for the device: the parameters are drawn on the host, every decision that depends
on them (the largest shift, which samples get which RandAugment operation) is taken there, and they reach
the device by asynchronous copies (:func:`ssl_ray.nn.devices.to_device`; a blocking copy would wait for all the
work queued on the GPU). The image operations themselves are batched device code without
data-dependent shapes (no `.item()`, `nonzero()` or boolean-mask indexing on the device). On the CPU the
numbers are the same as when every parameter was moved and used where it was drawn.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..config import BaseConfig, hp
from ..nn.devices import to_device

AUGMENTS = ("none", "weak", "strong")
FLIP_DATASETS = frozenset({"cifar10", "cifar100", "fashion_mnist", "imagefolder"})
"""Datasets whose classes are invariant to a horizontal flip (FixMatch flips CIFAR, not SVHN; digits never)."""
SHIFT = 0.125
"""Weak translation: up to this share of the image side (FixMatch: 12.5 %, i.e. 4 pixels on 32x32)."""
GREY = 0.5
"""Cutout's fill (USB fills (125, 123, 114) / 255 on CIFAR)."""


@dataclass
class FlipConfig(BaseConfig):
    flip: str = hp("auto", "horizontal flips in the weak view: auto (only for datasets whose labels survive a "
                   "flip: cifar10/100, fashion_mnist, imagefolder), yes, no", choices=("auto", "yes", "no"))


@dataclass
class AugmentConfig(FlipConfig):
    """The augmentation hyperparameters a method can expose (any method: the training step calls `augment`)."""

    augment: str = hp("none", "augmentation of the training inputs: none, weak (flip where the dataset allows "
                      "it + translate up to 12.5%) or strong (weak, then RandAugment with random magnitudes "
                      "and Cutout)", choices=AUGMENTS)


def flip_allowed(dataset: str, flip: str = "auto") -> bool:
    return flip == "yes" or (flip == "auto" and dataset in FLIP_DATASETS)


def step_seed(seed: int, step: int) -> int:
    """One 63-bit seed per (run seed, step), the same on every rank (SplitMix64-style mixing)."""
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(step) * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return (z ^ (z >> 31)) >> 1


class _Draw:
    """Per-sample parameters for this rank's n samples, drawn for all world * n from one generator, on the host
    (the callers move them to the images' device with `to_device`)."""

    def __init__(self, seed: int, n: int, rank: int, world: int):
        self.gen = torch.Generator().manual_seed(seed)
        self.n, self.rank, self.world = n, rank, world

    def uniform(self, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        u = torch.rand(self.world * self.n, generator=self.gen)[self.rank * self.n:(self.rank + 1) * self.n]
        return low + (high - low) * u

    def integers(self, low: int, high: int) -> torch.Tensor:
        """Uniform integers in [low, high]."""
        i = torch.randint(low, high + 1, (self.world * self.n,), generator=self.gen)
        return i[self.rank * self.n:(self.rank + 1) * self.n]



# ---- weak ------------------------------------------------------------------------------------------------
def flip_and_shift(x: torch.Tensor, flip: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """Per sample: mirror left-right where `flip`, then translate by (dy, dx) pixels with reflect padding
    (out[i, :, r, c] = padded[i, :, r + s - dy, c + s - dx]). The padding s is the largest shift, read from
    dy and dx: give them on the host (as :func:`weak` does) and nothing waits for the device."""
    s = int(max(dy.abs().max().item() if len(dy) else 0, dx.abs().max().item() if len(dx) else 0))
    flip, dy, dx = (to_device(t, x.device) for t in (flip, dy, dx))
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    if s == 0:
        return x
    h, w = x.shape[-2:]
    xp = F.pad(x, (s, s, s, s), mode="reflect" if s < min(h, w) else "replicate")
    rows = (torch.arange(h, device=x.device) + s - dy.view(-1, 1)).long()  # (B, H)
    cols = (torch.arange(w, device=x.device) + s - dx.view(-1, 1)).long()  # (B, W)
    b = torch.arange(len(x), device=x.device).view(-1, 1, 1)
    return xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()


def weak(x: torch.Tensor, draw: _Draw, flip: bool) -> torch.Tensor:
    h, w = x.shape[-2:]
    flips = (draw.uniform() < 0.5) & flip
    sy, sx = int(round(SHIFT * h)), int(round(SHIFT * w))
    return flip_and_shift(x, flips, draw.integers(-sy, sy), draw.integers(-sx, sx))


# ---- strong: RandAugment (FixMatch's variant) + Cutout ----------------------------------------------------
def _grey(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(a: torch.Tensor, b: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PIL ImageEnhance: b + v * (a - b), clipped; v per sample (v = 1 keeps a)."""
    return (b + v.view(-1, 1, 1, 1) * (a - b)).clamp(0, 1)


def _sharp_degenerate(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter ([[1,1,1],[1,5,1],[1,1,1]] / 13) inside, the original on the border."""
    k = to_device(torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype) / 13, x.device)
    c = x.shape[1]
    out = x.clone()
    out[:, :, 1:-1, 1:-1] = F.conv2d(x, k.expand(c, 1, 3, 3), groups=c)
    return out


def affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per-sample affine warps (theta: (B, 2, 3) in normalised coordinates), black outside, bilinear."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _geometric(kind: str, v: torch.Tensor) -> torch.Tensor:
    """theta for rotate (v degrees), shear_x/shear_y (v), translate_x/translate_y (v x side)."""
    t = torch.zeros(len(v), 2, 3, device=v.device)
    t[:, 0, 0] = t[:, 1, 1] = 1.0
    if kind == "rotate":
        a = v * math.pi / 180
        t[:, 0, 0], t[:, 0, 1], t[:, 1, 0], t[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
    elif kind == "shear_x":
        t[:, 0, 1] = v
    elif kind == "shear_y":
        t[:, 1, 0] = v
    elif kind == "translate_x":
        t[:, 0, 2] = 2 * v  # normalised coordinates span 2
    elif kind == "translate_y":
        t[:, 1, 2] = 2 * v
    return t


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL's autocontrast of float images in [0, 1], per image and channel: (x - min) / (max - min), a constant
    channel unchanged. torchvision's `autocontrast` computes the same numbers but handles constant channels
    with boolean-mask assignments, each a host sync on a GPU; here they are `torch.where`s."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    hi = x.amax(dim=(-2, -1), keepdim=True)
    flat = hi == lo
    lo, scale = torch.where(flat, 0.0, lo), torch.where(flat, 1.0, hi - lo)
    return (x - lo).div_(scale).clamp_(0, 1)


def _apply(name: str, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    from torchvision.transforms.v2 import functional as TF

    if name == "identity":
        return x
    if name == "autocontrast":
        return autocontrast(x)
    if name == "equalize":
        return TF.equalize(x)
    if name == "brightness":
        return _blend(x, torch.zeros_like(x), v)
    if name == "color":
        return _blend(x, _grey(x).expand_as(x), v)
    if name == "contrast":
        return _blend(x, _grey(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x), v)
    if name == "sharpness":
        return _blend(x, _sharp_degenerate(x), v)
    if name == "posterize":  # keep the top v bits of the 8-bit value
        q = (2.0 ** (8 - v.floor())).view(-1, 1, 1, 1)
        return (torch.floor(torch.round(x * 255) / q) * q / 255).clamp(0, 1)
    if name == "solarize":  # invert the pixels at or above the threshold v (in [0, 1])
        return torch.where(x >= v.view(-1, 1, 1, 1), 1.0 - x, x)
    return affine(x, _geometric(name, v))


RANDAUGMENT_OPS: tuple[tuple[str, float, float], ...] = (
    ("autocontrast", 0, 1), ("brightness", 0.05, 0.95), ("color", 0.05, 0.95), ("contrast", 0.05, 0.95),
    ("equalize", 0, 1), ("identity", 0, 1), ("posterize", 4, 8), ("rotate", -30, 30),
    ("sharpness", 0.05, 0.95), ("shear_x", -0.3, 0.3), ("shear_y", -0.3, 0.3), ("solarize", 0, 1),
    ("translate_x", -0.3, 0.3), ("translate_y", -0.3, 0.3))
"""FixMatch's RandAugment list with USB's magnitude ranges (solarize's threshold 0..256 rescaled to [0, 1])."""
_OP_LOW = torch.tensor([o[1] for o in RANDAUGMENT_OPS], dtype=torch.float64)
_OP_HIGH = torch.tensor([o[2] for o in RANDAUGMENT_OPS], dtype=torch.float64)


def rand_augment(x: torch.Tensor, ops: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Apply, per sample i and slot j, operation RANDAUGMENT_OPS[ops[i, j]] at magnitude levels[i, j]
    (already in the operation's range), slot after slot.

    Which samples get which operation is decided on the host (give `ops` there, as :func:`strong` does): the
    index lists reach the device in one asynchronous copy instead of one `nonzero()` (a host sync) per
    operation and slot."""
    ops = ops.cpu()
    groups = [(j, k, (ops[:, j] == k).nonzero().flatten()) for j in range(ops.shape[1])
              for k in range(len(RANDAUGMENT_OPS))]
    groups = [g for g in groups if len(g[2])]
    if not groups:
        return x
    flat = to_device(torch.cat([idx for _, _, idx in groups]), x.device)
    on_device = flat.split([len(idx) for _, _, idx in groups])
    levels = to_device(levels, x.device)
    for j in range(ops.shape[1]):
        out = x.clone()
        for (slot, k, _), idx in zip(groups, on_device):
            if slot == j:
                out[idx] = _apply(RANDAUGMENT_OPS[k][0], x[idx], levels[idx, j])
        x = out
    return x


def cutout(x: torch.Tensor, size: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, fill: float = GREY) -> torch.Tensor:
    """Per sample: a square of side size[i] (pixels) centred at (cy[i], cx[i]), clipped to the image, set to fill."""
    h, w = x.shape[-2:]
    r = torch.arange(h, device=x.device).view(1, h, 1)
    c = torch.arange(w, device=x.device).view(1, 1, w)
    y0, x0 = (cy - size / 2).floor().view(-1, 1, 1), (cx - size / 2).floor().view(-1, 1, 1)
    s = size.view(-1, 1, 1)
    hole = (r >= y0) & (r < y0 + s) & (c >= x0) & (c < x0 + s)
    return torch.where(hole.unsqueeze(1), torch.full_like(x, fill), x)


def strong(x: torch.Tensor, draw: _Draw, flip: bool, n_ops: int = 2) -> torch.Tensor:
    """The weak view, then RandAugment and Cutout (USB's strong transform: crop, flip, RandAugment, Cutout)."""
    x = weak(x, draw, flip)
    n = len(x)
    ops = torch.stack([draw.integers(0, len(RANDAUGMENT_OPS) - 1) for _ in range(n_ops)], 1)  # (n, n_ops), host
    u = torch.stack([draw.uniform() for _ in range(n_ops)], 1)
    lo, hi = _OP_LOW.to(x.dtype)[ops], _OP_HIGH.to(x.dtype)[ops]
    x = rand_augment(x, ops, lo + (hi - lo) * u)
    if not n:
        return x
    h, w = x.shape[-2:]
    size = (draw.uniform(0.0, 0.5) * h).round()
    cy, cx = draw.uniform(0, h), draw.uniform(0, w)
    return cutout(x, to_device(size, x.device), to_device(cy, x.device), to_device(cx, x.device))


def augment(x: torch.Tensor, kind: str, *, seed: int, step: int, rank: int = 0, world: int = 1,
            flip: bool = False, n_ops: int = 2, salt: int = 0) -> torch.Tensor:
    """The `kind` view (none, weak, strong) of this rank's images x (floats in [0, 1], (n, C, H, W)) at a step.

    `salt` separates independent views of the same step (e.g. the labelled and the unlabelled batch, or two
    weak views): views with different salts use different parameters. Points (x.dim() != 4) pass through."""
    if kind == "none" or x.dim() != 4 or len(x) == 0:
        return x
    draw = _Draw(step_seed(step_seed(seed, step), salt), len(x), rank, world)
    if kind == "weak":
        return weak(x, draw, flip)
    if kind == "strong":
        return strong(x, draw, flip, n_ops)
    raise ValueError(f"unknown augmentation {kind!r}; one of {', '.join(AUGMENTS)}")


def augment_batch(batch, kind: str, *, seed: int, step: int, rank: int = 0, world: int = 1, flip: bool = False,
                  n_ops: int = 2):
    """The `kind` view of a whole R/T batch (splits.Batch), for a training loop that augments for its method.

    Each part (labelled, unlabelled, second unlabelled) is viewed on its own with its own salt: a part is this
    rank's slice of a global part, so N workers see the views one worker with the N x larger batch sees
    (viewing `batch.x_all` instead would mix the labelled and unlabelled slices of different ranks)."""
    if kind == "none":
        return batch
    from dataclasses import replace

    def view(x, salt):
        return None if x is None else augment(x, kind, seed=seed, step=step, rank=rank, world=world, flip=flip,
                                               n_ops=n_ops, salt=salt)

    return replace(batch, x_l=view(batch.x_l, 0), x_u=view(batch.x_u, 1), x_u2=view(batch.x_u2, 2))
