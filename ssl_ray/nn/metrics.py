"""Evaluation metrics: error rates on a whole split (plain, or clustering error after Hungarian matching), NMI,
the entropy of a categorical distribution. (The generation metrics on the Gaussian clusters are the dataset's:
data/synthetic.py; class labels of a method's predictions over a split: methods/common.predict_labels.)"""
from __future__ import annotations

import numpy as np
import torch


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
