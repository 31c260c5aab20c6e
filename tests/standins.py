"""Stand-in networks for tests that must know exactly what the restorer writes."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class MarksAreBright(nn.Module):
    """A stand-in mask-aware network: 'annotation' wherever the first channel is
    above 0.9, content a flat 0.25 grey. Lets tests check exactly what is written."""

    residual = True
    predicts_mask = True

    def forward(self, x: torch.Tensor, threshold=0.5, dilate=2) -> dict[str, torch.Tensor]:
        logits = torch.where(x[:, :1] > 0.9, 10.0, -10.0)
        content = torch.full_like(x, 0.25)
        m = torch.sigmoid(logits)
        return {"output": x * (1 - m) + content * m, "mask_logits": logits, "content": content}


class BrightMarksInTwoStages(MarksAreBright):
    """The stand-in with the two stages of ``maskunet``: the same detection, and
    holes painted with the mean of the known pixels of the crop, so a test can see
    what the inpainter was shown around them."""

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)["mask_logits"]

    def inpaint(self, x: torch.Tensor, detected: torch.Tensor, dilate: int = 2):
        hole = torch.nn.functional.max_pool2d(detected, 2 * dilate + 1, 1, dilate)
        known = 1 - hole
        mean = (x * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp(min=1)
        return x * known + mean * hole, hole


class FixedDetections(BrightMarksInTwoStages):
    """The two-stage stand-in, detecting exactly the pixels it is given."""

    def __init__(self, found: np.ndarray) -> None:
        super().__init__()
        self.found = torch.from_numpy(found)

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.where(self.found, 10.0, -10.0)
        return logits[None, None].expand(x.shape[0], 1, -1, -1).to(x.dtype)
