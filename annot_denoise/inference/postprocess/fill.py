"""Steps on the repair itself: what the inpainter painted, before it is written."""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from annot_denoise.inference.postprocess.common import LUMA, with_telea
from annot_denoise.inference.postprocess.frame import Frame, StepConfig


class TeleaBlendConfig(StepConfig):
    share: float = Field(0.25, ge=0, le=1, description="of Telea's fill mixed into the network's")


class GreyScanConfig(StepConfig):
    tolerance: int = Field(
        3, ge=0, le=255, description="8-bit levels R, G and B may differ on a grey scan"
    )


def telea_blend(frame: Frame, cfg: TeleaBlendConfig) -> Frame:
    """Mix a share of OpenCV's Telea fill of the same holes into what the inpainter
    painted, crop by crop: two fills whose errors differ average to a better one."""
    frame.fill = with_telea(frame.net, frame.hole, frame.fill, cfg.share)
    return frame


def grey_scan(frame: Frame, cfg: GreyScanConfig) -> Frame:
    """On grey anatomy stored as RGB (most ultrasound), write the repair grey: what
    lies under a coloured mark is grey too, so no tint may leak into it."""
    hole = frame.hole
    if not hole.any() or frame.fill.shape[-1] != 3:
        return frame
    if not is_grey_scan(frame.image, hole, cfg.tolerance):
        return frame
    if frame.fill is frame.net:
        frame.fill = frame.fill.copy()
    frame.fill[hole] = np.repeat((frame.fill[hole] @ LUMA)[:, None], 3, axis=1)
    return frame


def is_grey_scan(color: np.ndarray, mask: np.ndarray, tolerance: int) -> bool:
    """True when every pixel outside ``mask`` has R == G == B (within JPEG noise)."""
    if color.ndim != 3:
        return False
    # A statistic, so a regular sample of pixels decides it (a full pass costs more
    # than the network on a 2-core CPU).
    step = max(1, int(math.sqrt(mask.size / 16384)))
    outside = color[::step, ::step][~mask[::step, ::step]].astype(np.int32)
    if not len(outside):
        return False
    spread = outside.max(axis=1) - outside.min(axis=1)
    tolerance *= 257 if color.dtype == np.uint16 else 1
    return bool(np.percentile(spread, 99) <= tolerance)
