"""Image-quality metrics on float images in [0, 1] (numpy, HxW or HxWxC).

PSNR inside the annotation mask measures how well the marks were removed;
mean absolute change outside the mask measures collateral damage (reported in
8-bit grey levels whatever the file's depth, so numbers read the same for
8- and 16-bit data).
"""

from __future__ import annotations

import math

import numpy as np

# What an exact image (infinite PSNR) counts for in an average over images: dropping
# it instead would average each method over a different set of images, and leave
# out exactly the images a method got right.
PSNR_CAP = 100.0


def psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> float:
    """PSNR in dB over all pixels, or over ``mask`` (HxW bool) only; inf when equal."""
    err = np.square(pred.astype(np.float64) - target.astype(np.float64))
    if mask is not None:
        if not mask.any():
            return math.nan
        err = err[mask]
    mse = float(err.mean())
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(pred: np.ndarray, target: np.ndarray) -> float:
    """Structural similarity (Gaussian 11x11 window), averaged over channels."""
    import torch
    from torchmetrics.functional.image import structural_similarity_index_measure

    def as_tensor(x: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        return t[None, None] if t.ndim == 2 else t.permute(2, 0, 1)[None]

    a, b = as_tensor(pred), as_tensor(target)
    if min(a.shape[-2:]) < 11:
        return math.nan
    return float(structural_similarity_index_measure(a, b, data_range=1.0))


def mean_abs_change(pred: np.ndarray, reference: np.ndarray, region: np.ndarray) -> float:
    """Mean |pred - reference| over ``region`` (HxW bool), in 8-bit grey levels."""
    if not region.any():
        return math.nan
    diff = np.abs(pred.astype(np.float64) - reference.astype(np.float64))
    return float(diff[region].mean() * 255.0)


def mask_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and IoU of a predicted boolean mask."""
    tp = float(np.logical_and(pred, truth).sum())
    fp = float(np.logical_and(pred, ~truth).sum())
    fn = float(np.logical_and(~pred, truth).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    iou = tp / (tp + fp + fn) if tp + fp + fn else math.nan
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}
