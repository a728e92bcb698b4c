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


def scatter_by_category(points: np.ndarray, cats: np.ndarray, prior: np.ndarray, title: str, *,
                        centres, sigma: float, label_min: float = 0.01) -> np.ndarray:
    """Generated 2-D points coloured by their category (as in the paper's Fig. 2-4), the true `centres` as black
    crosses with their 3-`sigma` circles; the legend gives P(C) of each category with P(C) >= label_min."""
    fig, ax = new_figure(5.0, 5.0)
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if len(prior) <= 10 else "tab20")
    for k in range(len(prior)):
        m = cats == k
        if not m.any():
            continue
        label = f"c={k}: P={prior[k]:.3f}" if prior[k] >= label_min else None
        ax.scatter(points[m, 0], points[m, 1], s=2, color=cmap(k % cmap.N), label=label, rasterized=True)
    for cx, cy in centres:
        ax.add_patch(plt.Circle((cx, cy), 3 * sigma, fill=False, ls="--", lw=0.8, color="k"))
    cen = np.asarray(centres)
    ax.scatter(cen[:, 0], cen[:, 1], marker="x", s=60, c="k", label="true centres")
    ax.set_xlim(-4, 4)
    ax.set_ylim(-4, 4)
    ax.set_aspect("equal")
    leg = ax.legend(loc="upper right", fontsize=6)
    for handle in leg.legend_handles:  # one readable marker size in the legend (the dots are tiny, the x large)
        handle.set_sizes([16])
    ax.set_title(title, fontsize=9)
    return figure_to_array(fig)


def cam_overlay(images: torch.Tensor, cams: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] with their CAMs (N, h, w) stretched over them (bilinear), titled pred/true."""
    n = len(images)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, ax = new_figure(2.0 * cols, 2.1 * rows)
    ax.remove()
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for i, a in enumerate(axes):
        a.axis("off")
        if i >= n:
            continue
        img = images[i].detach().cpu().permute(1, 2, 0).numpy()
        extent = (0, img.shape[1], img.shape[0], 0)  # the coarse CAM stretched over the whole image
        a.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1, extent=extent)
        a.imshow(cams[i].detach().float().cpu().numpy(), cmap="jet", alpha=0.45, extent=extent,
                 interpolation="bilinear")
        ok = int(pred[i]) == int(y[i])
        a.set_title(f"pred {int(pred[i])} / true {int(y[i])}", fontsize=8, color="black" if ok else "red")
    fig.tight_layout()
    return figure_to_array(fig)
