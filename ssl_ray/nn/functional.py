"""Pure functions of class logits (batch means, in nats)."""
from __future__ import annotations

import torch
from torch.nn import functional as F


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of H(softmax(logits)) = -sum_k p_k log p_k."""
    logp = F.log_softmax(logits, dim=1)
    return -(logp.exp() * logp).sum(1).mean()


def kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(softmax(q) || softmax(p)) = sum_k q_k (log q_k - log p_k) (vat_tf's
    `kl_divergence_with_logit`). No gradient stop here: callers detach what they hold fixed."""
    q_log = F.log_softmax(q_logits, dim=1)
    return (q_log.exp() * (q_log - F.log_softmax(p_logits, dim=1))).sum(1).mean()
