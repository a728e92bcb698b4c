"""Evaluation metrics: error rates on a whole split (plain, or clustering error after Hungarian matching), NMI,
the entropy of a categorical distribution, and the generation metrics on the Gaussian clusters."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..data import to_float
from ..data.synthetic import GAUSSIAN_CENTRES, GAUSSIAN_PROBS, GAUSSIAN_SIGMA
from .devices import to_device


@torch.no_grad()
def predict_labels(predict: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   batch: int = 1024) -> torch.Tensor:
    out = [predict(to_float(x[i:i + batch])).argmax(dim=1) for i in range(0, len(x), batch)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=x.device)


def error_rate(pred: torch.Tensor, y: torch.Tensor) -> float:
    """Percent misclassified."""
    if len(y) == 0:
        return float("nan")
    return float((pred != y).float().mean().item() * 100.0)


def hungarian_match(pred: np.ndarray, y: np.ndarray, n_clusters: int, n_classes: int) -> dict[int, int]:
    """Cluster -> class mapping maximising agreement (one-to-one; unmatched clusters map to -1)."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(counts, (pred, y), 1)
    rows, cols = linear_sum_assignment(-counts)
    mapping = {c: -1 for c in range(n_clusters)}
    mapping.update({int(r): int(c) for r, c in zip(rows, cols)})
    return mapping


def clustering_error(pred: torch.Tensor, y: torch.Tensor, n_clusters: int, n_classes: int) -> float:
    """Percent misclassified after the optimal one-to-one (Hungarian) matching of clusters to classes."""
    if len(y) == 0:
        return float("nan")
    p, t = pred.cpu().numpy(), y.cpu().numpy()
    m = hungarian_match(p, t, n_clusters, n_classes)
    mapped = np.vectorize(m.get)(p) if len(p) else p
    return float((mapped != t).mean() * 100.0)


def nmi(pred: torch.Tensor, y: torch.Tensor) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    return float(normalized_mutual_info_score(y.cpu().numpy(), pred.cpu().numpy()))


def categorical_entropy(p: torch.Tensor) -> float:
    """Entropy in nats of a probability vector (0 log 0 = 0)."""
    p = p.double()
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def gaussian_generation_shares(points: torch.Tensor, centres=GAUSSIAN_CENTRES, sigma: float = GAUSSIAN_SIGMA,
                                probs=GAUSSIAN_PROBS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tensors behind :func:`gaussian_generation_metrics`, on the points' device (nothing waits for it):
    the off-cluster share (0-d), the on-cluster share at each centre (K,) and their total variation distance
    to `probs` (0-d)."""
    cen = to_device(torch.as_tensor(centres, dtype=points.dtype), points.device)
    d = torch.cdist(points.reshape(len(points), -1), cen)  # (N, K)
    dmin, near = d.min(dim=1)
    on = dmin <= 3 * sigma
    # points per nearest centre, counting the on-cluster ones (a bincount of near[on] without the mask's sync)
    counts = torch.zeros(len(centres), dtype=torch.double, device=points.device).index_add_(0, near, on.double())
    share = counts / counts.sum().clamp_min(1)
    truth = to_device(torch.as_tensor(probs, dtype=torch.double), points.device)
    return (~on).float().mean(), share, 0.5 * (share - truth).abs().sum()


def gaussian_generation_metrics(points: torch.Tensor, centres=GAUSSIAN_CENTRES, sigma: float = GAUSSIAN_SIGMA,
                                probs=GAUSSIAN_PROBS) -> dict[str, float]:
    """Share of generated points farther than 3 sigma from every true centre ("lines between clusters"),
    the share of the on-cluster points at each true cluster (truth: `probs`), and the total variation
    distance between those shares and `probs`. One host sync for all of them."""
    off, share, tv = gaussian_generation_shares(points, centres, sigma, probs)
    values = torch.cat([off.double().reshape(1), share, tv.reshape(1)]).tolist()
    out = {"gen_off_cluster": values[0]}
    out.update({f"gen_share_{k}": v for k, v in enumerate(values[1:-1])})
    out["gen_share_tv"] = values[-1]
    return out
