"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_block(in_ch: int, out_ch: int, norm: str = "batch") -> nn.Sequential:
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def norm_layer(ch: int) -> nn.Module:
        if norm == "batch":
            return nn.BatchNorm2d(ch)
        if norm == "group":
            return nn.GroupNorm(min(8, ch), ch)
        return nn.Identity()

    bias = norm == "none"
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=bias),
        norm_layer(out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=bias),
        norm_layer(out_ch),
        nn.ReLU(inplace=True),
    )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of ``x`` so both sides divide by ``multiple``.

    Returns the padded tensor and the original (height, width) for cropping back.
    Reflection keeps the image statistics at the border; images too small to
    reflect (or smaller than the network's minimum size) are replicated instead.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)
