"""Pictures people would rather look at than read: rendered with matplotlib (Agg) to HxWx3 uint8 arrays."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def figure_to_array(fig) -> np.ndarray:
    import matplotlib.pyplot as plt

    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return img


def new_figure(w: float = 5.0, h: float = 5.0):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(w, h), dpi=100)


@torch.no_grad()
def decision_boundary(predict: Callable[[torch.Tensor], torch.Tensor], x_lab: np.ndarray, y_lab: np.ndarray,
                      x_unl: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, title: str = "",
                      device: torch.device | str = "cpu", grid: int = 200) -> np.ndarray:
    """2-D decision regions with labelled points (large), unlabelled points (small grey) and misclassified
    evaluation points (red crosses)."""
    pts = np.concatenate([x_lab, x_unl, x_eval])
    lo, hi = pts.min(0) - 0.3, pts.max(0) + 0.3
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
    g = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32, device=device)
    zz = predict(g).argmax(1).cpu().numpy().reshape(grid, grid)
    pred = predict(torch.as_tensor(x_eval, dtype=torch.float32, device=device)).argmax(1).cpu().numpy()
    wrong = pred != y_eval
    fig, ax = new_figure()
    ax.contourf(gx, gy, zz, alpha=0.25, cmap="coolwarm", levels=np.arange(zz.max() + 2) - 0.5)
    ax.scatter(x_unl[:, 0], x_unl[:, 1], s=2, c="0.6", label="unlabelled")
    ax.scatter(x_lab[:, 0], x_lab[:, 1], s=80, c=y_lab, cmap="coolwarm", edgecolors="k", label="labelled")
    if wrong.any():
        ax.scatter(x_eval[wrong, 0], x_eval[wrong, 1], s=18, marker="x", c="red",
                   label=f"misclassified ({wrong.mean() * 100:.1f}%)")
    ax.legend(loc="upper right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_aspect("equal")
    return figure_to_array(fig)


def image_grid(images: torch.Tensor, nrow: int) -> np.ndarray:
    """(N, C, H, W) floats in [0, 1] -> one HxWx3 uint8 grid image."""
    import torchvision.utils as vutils

    g = vutils.make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=1, pad_value=1.0)
    if g.shape[0] == 1:
        g = g.repeat(3, 1, 1)
    return (g.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
