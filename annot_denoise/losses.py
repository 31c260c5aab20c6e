"""Training losses: reconstruction weighted towards the annotated pixels.

Annotations cover a few percent of a scan, so a plain MSE is dominated by the
pixels that need no change. The weighted loss gives annotated pixels weight
``alpha`` and the rest ``beta``: loss = sum(w * err^2) / sum(w).
"""

from __future__ import annotations

import torch


def weighted_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """Weighted MSE; ``mask`` is Bx1xHxW in [0, 1] (1 = annotated), broadcast over channels."""
    weight = beta + (alpha - beta) * mask
    err = (pred.float() - target.float()).square()
    return (weight * err).sum() / (weight.sum() * pred.shape[1]).clamp_min(1e-8)


def ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - SSIM (11x11 Gaussian window), differentiable."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    ssim = structural_similarity_index_measure(pred.float(), target.float(), data_range=1.0)
    return 1.0 - ssim


def restoration_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    ssim_weight: float = 0.0,
) -> torch.Tensor:
    """The configured training objective."""
    loss = weighted_mse(pred, target, mask, alpha, beta)
    if ssim_weight > 0:
        loss = loss + ssim_weight * ssim_loss(pred, target)
    return loss
