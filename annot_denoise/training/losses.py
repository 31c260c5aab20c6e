"""Training losses: reconstruction weighted towards the annotated pixels.

Annotations cover a few percent of a scan, so a plain MSE is dominated by the
pixels that need no change. The weighted loss gives annotated pixels weight
``alpha`` and the rest ``beta``: loss = sum(w * err^2) / sum(w).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def mask_loss(
    logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """BCE + soft Dice against the exact mask (Bx1xHxW); ``weight`` weighs the BCE
    per pixel.

    BCE alone is swamped by the 95%+ background pixels; Dice scores the overlap
    itself, so thin marks count as much as the background they sit on.
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, mask, weight=weight)
    prob = torch.sigmoid(logits)
    inter = (prob * mask).sum(dim=(1, 2, 3))
    total = prob.sum(dim=(1, 2, 3)) + mask.sum(dim=(1, 2, 3))
    dice = 1 - (2 * inter + 1) / (total + 1)
    return bce + dice.mean()


# The log content term's floor, about a quarter grey level squared ((0.25 / 255)^2):
# smaller errors round away when an 8-bit output is written, so chasing them is noise.
LOG_FLOOR = 1e-6


def content_loss(
    content: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    grow: int = 3,
    metric: str = "mse",
) -> torch.Tensor:
    """Mean squared error of the content head on and around the annotated pixels.

    Inference writes the content wherever the thresholded, dilated mask says, so
    the content must be the clean scan there, also just outside the marks
    (``grow`` pixels). The term also teaches inpainting from the first step,
    before the mask head has learnt where to look.

    ``metric``: ``mse``, one MSE pooled over the batch, or ``log_mse``, the mean over
    patches of log10 of each patch's MSE. Pooled, a textured hole's large errors
    outweigh a flat hole's small ones; eval averages PSNR per image, where every
    patch counts alike, as in the log.
    """
    near = F.max_pool2d(mask, 2 * grow + 1, stride=1, padding=grow) if grow else mask
    err = (content.float() - target.float()).square() * near
    if metric == "mse":
        return err.sum() / (near.sum() * content.shape[1]).clamp_min(1.0)
    if metric != "log_mse":
        raise ValueError(f"content metric {metric!r}; choose mse or log_mse")
    area = near.sum(dim=(1, 2, 3)) * content.shape[1]
    painted = (area > 0).float()  # a patch without marks has nothing to paint
    log_mse = torch.log10(err.sum(dim=(1, 2, 3)) / area.clamp_min(1.0) + LOG_FLOOR)
    return (log_mse * painted).sum() / painted.sum().clamp_min(1.0)


def restoration_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    alpha: float,
    beta: float,
    ssim_weight: float = 0.0,
    mask_logits: torch.Tensor | None = None,
    content: torch.Tensor | None = None,
    mask_weight: float = 1.0,
    content_weight: float = 10.0,
    content_metric: str = "mse",
    interface: torch.Tensor | None = None,
    interface_weight: float = 1.0,
) -> torch.Tensor:
    """The configured training objective; the mask terms apply to mask-aware models.

    ``interface`` (Bx1xHxW, 1 = the scanner's own interface) gets ``interface_weight``
    in the mask's BCE where no mark lies over it: the pixels most like marks that
    must be kept are the costliest to take.
    """
    loss = weighted_mse(pred, target, mask, alpha, beta)
    if ssim_weight > 0:
        loss = loss + ssim_weight * ssim_loss(pred, target)
    if mask_logits is not None:
        weight = None
        if interface is not None and interface_weight != 1.0:
            weight = 1 + (interface_weight - 1) * interface * (1 - mask)
        loss = loss + mask_weight * mask_loss(mask_logits, mask, weight)
    if content is not None:
        loss = loss + content_weight * content_loss(content, target, mask, metric=content_metric)
    return loss
