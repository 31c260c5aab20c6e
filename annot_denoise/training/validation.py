"""Validation during training: loss, PSNR, mask F1 and the mask threshold to ship.

Each rank of a distributed run scores its shard; the sums are all-reduced, so
every rank sees the same numbers and takes the same decisions.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader

from annot_denoise.config import TrainConfig
from annot_denoise.distributed import World, all_sum
from annot_denoise.models import model_outputs
from annot_denoise.runtime import autocast
from annot_denoise.training.rundir import sample_row

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: DataLoader,
    cfg: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    objective,
    world: World | None = None,
) -> dict:
    """Validation loss, PSNR (image and inside the mask), mask F1, sample triplets.

    For mask-aware models the threshold with the best F1 over the whole
    validation set is reported; training stores it in the checkpoint as the
    default for ``clean``. Masks are predicted as at inference (no teacher forcing).
    """
    world = world or World()
    model.eval()
    # loss*n, n, psnr sum, psnr count, in-mask psnr sum, its count, then tp/fp/fn
    # per threshold: plain sums, so ranks add up.
    sums = [0.0] * (6 + 3 * len(THRESHOLDS))
    samples: list[torch.Tensor] = []
    for batch in loader:
        x = batch["annotated"].to(device, memory_format=torch.channels_last)
        y = batch["clean"].to(device, memory_format=torch.channels_last)
        m = batch["mask"].to(device)
        ui = batch.get("interface")
        with autocast(device, dtype):
            parts = model_outputs(model(x))
        ui = None if ui is None else ui.to(device)
        sums[0] += float(objective(parts, y, m, cfg, ui)) * x.shape[0]
        sums[1] += x.shape[0]
        pred = parts["output"].float().clamp(0, 1)
        err = (pred - y).square().mean(dim=1)  # B x H x W
        sums[2] += float((-10 * torch.log10(err.flatten(1).mean(1).clamp_min(1e-10))).sum())
        sums[3] += x.shape[0]
        inside = m[:, 0] > 0
        for e, k in zip(err, inside):
            if k.any():
                sums[4] += float(-10 * torch.log10(e[k].mean().clamp_min(1e-10)))
                sums[5] += 1
        if "mask_logits" in parts:
            prob = torch.sigmoid(parts["mask_logits"].float())[:, 0]
            for t, threshold in enumerate(THRESHOLDS):
                hit = prob > threshold
                sums[6 + 3 * t] += float((hit & inside).sum())
                sums[7 + 3 * t] += float((hit & ~inside).sum())
                sums[8 + 3 * t] += float((~hit & inside).sum())
        for i in range(min(x.shape[0], cfg.train.samples - len(samples))):
            samples.append(sample_row(x[i], pred[i], y[i]))
    sums = all_sum(sums, world, device)
    result = {
        "val_loss": sums[0] / max(sums[1], 1),
        "val_psnr": sums[2] / max(sums[3], 1),
        "val_psnr_mask": sums[4] / sums[5] if sums[5] else math.nan,
        "samples": samples,
    }
    f1 = []
    for t in range(len(THRESHOLDS)):
        tp, fp, fn = sums[6 + 3 * t : 9 + 3 * t]
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    if any(not math.isnan(v) for v in f1):
        best = max(range(len(f1)), key=lambda i: -1 if math.isnan(f1[i]) else f1[i])
        result["val_mask_f1"] = f1[best]
        result["mask_threshold"] = THRESHOLDS[best]
    return result
