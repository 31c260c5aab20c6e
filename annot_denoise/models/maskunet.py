"""Mask-aware restoration: find the annotation, then inpaint only there.

Two half-resolution U-Nets in one module:

- the **detector** predicts annotation-mask logits from the scan;
- the **inpainter** sees the scan with the holes blanked out, plus the hole
  mask, and paints the content under them. Blanking matters: a network that
  sees the mark's own bright pixels tends to leave a ghost of them.

The training output is the composite ``x * (1 - m) + content * m`` with the soft
mask ``m``, so the loss sees what inference writes. While training, the holes are
the true mask grown by ``train_dilate`` pixels plus whatever the detector already
finds (teacher forcing, so the inpainter learns from the first step), or the true
mask and the finds grown as inference grows them; at inference they are the
thresholded prediction grown by up to ``dilate`` pixels, exactly the region the
caller writes.

For speed each U-Net runs at half resolution: the input is folded into 4x the
channels with a pixel unshuffle (lossless, so 1-px lines stay visible) and a
light full-resolution stage draws the fine edges.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from annot_denoise.config import MASK_DILATE
from annot_denoise.models.common import conv_block, pad_to_multiple


class _HalfResUNet(nn.Module):
    """U-Net on pixel-unshuffled input; returns (half-res features, full-res features)."""

    def __init__(self, in_channels: int, width: int, depth: int, norm: str) -> None:
        super().__init__()
        chans = [width * 2**i for i in range(depth + 1)]
        self.depth, self.out_channels = depth, chans[0]
        self.fold = nn.PixelUnshuffle(2)
        self.stem = conv_block(4 * in_channels, chans[0], norm)
        self.down = nn.ModuleList(conv_block(chans[i], chans[i + 1], norm) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(depth)
        )
        self.fuse = nn.ModuleList(conv_block(2 * chans[i], chans[i], norm) for i in range(depth))
        self.fine_channels = max(width // 2, 4)
        self.unfold = nn.Sequential(
            nn.Conv2d(chans[0], 4 * self.fine_channels, 1), nn.PixelShuffle(2)
        )
        self.refine = conv_block(self.fine_channels + in_channels, self.fine_channels, "none")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skips = [self.stem(self._folded(x))]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for i in reversed(range(self.depth)):
            y = self.fuse[i](torch.cat([self.up[i](y), skips.pop()], dim=1))
        # One dtype for the concatenation (autocast casts it for the conv anyway):
        # mixed inputs take a slow promoting path.
        up = self.unfold(y)
        return y, self.refine(torch.cat([up, x.to(up.dtype)], dim=1))

    def _folded(self, x: torch.Tensor) -> torch.Tensor:
        """``self.fold(x)``; on the CPU a channels-last input is unshuffled in the
        contiguous layout, where PyTorch's kernel is several times faster for three
        channels (the same values either way)."""
        if x.device.type != "cpu" or not x.is_contiguous(memory_format=torch.channels_last):
            return self.fold(x)
        folded = self.fold(x.contiguous())
        return folded.contiguous(memory_format=torch.channels_last)


# The submodules of each stage, for MaskUNet.freeze.
STAGES = {
    "detector": ("detector", "mask_head"),
    "inpainter": ("inpainter", "content_coarse", "content_head"),
}


class MaskUNet(nn.Module):
    residual = True
    predicts_mask = True

    def __init__(
        self,
        in_channels: int = 3,
        width: int = 16,
        depth: int = 3,
        norm: str = "batch",
        train_dilate: int = 2,
        smooth_steps: int = 4,
        detector_width: int | None = None,
    ) -> None:
        super().__init__()
        self.depth, self.train_dilate, self.smooth_steps = depth, train_dilate, smooth_steps
        self.frozen: tuple[str, ...] = ()
        # The detector sees every pixel of every scan, the inpainter only the boxes
        # around the marks: a narrower detector is most of the speed there is to gain.
        self.detector = _HalfResUNet(in_channels, detector_width or width, depth, norm)
        self.mask_head = nn.Conv2d(self.detector.fine_channels, 1, 3, padding=1)
        self.inpainter = _HalfResUNet(in_channels + 1, width, depth, norm)
        # Content comes mostly from the inpainter's full-width features (unfolded to
        # full resolution), with a fine correction from its full-resolution stage.
        self.content_coarse = nn.Sequential(
            nn.Conv2d(self.inpainter.out_channels, 4 * in_channels, 3, padding=1),
            nn.PixelShuffle(2),
        )
        self.content_head = nn.Conv2d(self.inpainter.fine_channels, in_channels, 3, padding=1)
        # Start as "no annotation anywhere" and, inside holes, the smooth fill alone.
        nn.init.constant_(self.mask_head.bias, -4.0)
        for head in (self.content_coarse[0], self.content_head):
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def freeze(self, stages: list[str] | tuple[str, ...]) -> None:
        """Keep the weights and batch-norm statistics of ``stages`` fixed while training.

        Fine-tuning one stage against the other: a new, narrower detector trained in
        front of a finished inpainter, say.
        """
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {sorted(STAGES)}")
        self.frozen = tuple(stages)
        for stage in self.frozen:
            for name in STAGES[stage]:
                getattr(self, name).requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> MaskUNet:
        super().train(mode)
        for stage in self.frozen:
            for name in STAGES[stage]:
                getattr(self, name).eval()
        return self

    def forward(
        self,
        x: torch.Tensor,
        true_mask: torch.Tensor | None = None,
        threshold: float = 0.5,
        dilate: int = MASK_DILATE,
        train_holes: Literal["grown", "inference"] = "grown",
    ) -> dict[str, torch.Tensor]:
        """``output`` (soft composite), ``mask_logits``, ``content`` and ``hole`` (Bx1xHxW).

        ``true_mask`` (training only) makes the holes the true mask grown by
        ``train_dilate`` plus the detector's own finds at 0.5 (``train_holes="grown"``),
        or the true mask plus those finds grown as at inference (``"inference"``: by up
        to ``dilate`` pixels where the ring looks like a mark's fringe); without it the
        holes are ``sigmoid(logits) > threshold`` grown as at inference.
        """
        padded, (h, w) = pad_to_multiple(x, 2 ** (self.depth + 1))
        _, fine = self.detector(padded)
        logits = self.mask_head(fine)
        prob = torch.sigmoid(logits.detach().float())
        if true_mask is not None:
            truth = F.pad(true_mask, (0, padded.shape[-1] - w, 0, padded.shape[-2] - h))
            finds = (prob > 0.5).float()
            if train_holes == "inference":
                known = torch.maximum(truth, finds)
                hole = _adaptive_hole(padded, known, dilate, self.smooth_steps)
            elif train_holes == "grown":
                hole = torch.maximum(_grow(truth, self.train_dilate), finds)
            else:
                raise ValueError(f"train_holes is {train_holes!r}; choose grown or inference")
        else:
            hole = _adaptive_hole(padded, (prob > threshold).float(), dilate, self.smooth_steps)
        hole = hole.to(padded.dtype)
        content = self._paint(padded, hole)
        crop = (..., slice(0, h), slice(0, w))
        logits, content, hole = logits[crop], content[crop], hole[crop]
        m = torch.sigmoid(logits.float())
        output = x * (1 - m) + content.float() * m
        return {"output": output, "mask_logits": logits, "content": content, "hole": hole}

    # Inference in two stages, so the caller can inpaint only around what was found
    # (marks cover a few percent of a scan; the inpainter is half of the compute).

    def detect(self, x: torch.Tensor) -> torch.Tensor:
        """Annotation-mask logits (Bx1xHxW) for ``x``."""
        padded, (h, w) = pad_to_multiple(x, 2 ** (self.depth + 1))
        _, fine = self.detector(padded)
        return self.mask_head(fine)[..., :h, :w]

    def inpaint(
        self, x: torch.Tensor, detected: torch.Tensor, dilate: int = MASK_DILATE
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(content, hole) for ``x`` given the thresholded detection (Bx1xHxW, 0/1)."""
        padded, (h, w) = pad_to_multiple(x, 2 ** (self.depth + 1))
        det = F.pad(detected.to(padded.dtype), (0, padded.shape[-1] - w, 0, padded.shape[-2] - h))
        hole = _adaptive_hole(padded, det, dilate, self.smooth_steps).to(padded.dtype)
        content = self._paint(padded, hole)
        return content[..., :h, :w], hole[..., :h, :w]

    def _paint(self, padded: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
        """The scan with its holes painted: smooth fill plus the inpainter's correction."""
        coarse = fill_holes(padded, hole, self.smooth_steps)
        y, fine = self.inpainter(torch.cat([coarse, hole], dim=1))
        delta = self.content_coarse(y) + self.content_head(fine)
        return padded * (1 - hole) + (coarse + delta.to(padded.dtype)) * hole


def fill_holes(x: torch.Tensor, hole: torch.Tensor, smooth_steps: int = 0) -> torch.Tensor:
    """Smooth fill of ``hole`` from the surrounding pixels: the guess classical
    inpainting makes, on the GPU and differentiable; the inpainter corrects it.

    A push-pull pyramid (known pixels averaged down until every hole is covered,
    coarse levels pulled back into the holes) with ``smooth_steps`` Jacobi steps of
    Laplace's equation inside the holes at every level, coarse to fine: a multigrid
    way to the harmonic interpolant at the cost of a few full-resolution passes.
    With the exact mask, on thin marks, this beats OpenCV's Telea by about 1 dB.
    """
    known = 1 - hole
    if not bool((hole > 0).any()):
        return x
    levels = [(x * known, known)]
    while levels[-1][0].shape[-1] > 1 and levels[-1][0].shape[-2] > 1:
        value, weight = levels[-1]
        if bool((weight > 0).all()):
            break
        v, w = F.avg_pool2d(value, 2, ceil_mode=True), F.avg_pool2d(weight, 2, ceil_mode=True)
        levels.append((v, w))
    value, weight = levels[-1]
    filled = value / weight.clamp_min(1e-6)
    for value, weight in reversed(levels[:-1]):
        up = F.interpolate(filled, size=value.shape[-2:], mode="bilinear", align_corners=False)
        seen = (weight > 0).to(x.dtype)
        mean = value / weight.clamp_min(1e-6)
        filled = _smooth(seen * mean + (1 - seen) * up, mean, seen, smooth_steps)
    return x * known + filled * hole


def _smooth(filled: torch.Tensor, fixed: torch.Tensor, seen: torch.Tensor, steps: int):
    """Jacobi steps of Laplace's equation where ``seen`` is 0; elsewhere ``fixed``.

    The 4-neighbour mean is four shifted adds rather than a convolution: exact in
    fp32 whatever autocast is active, and faster on the CPU. Without autograd only
    the unseen pixels are visited (marks cover a few percent of a scan), with the
    same sums in the same order, so both paths give the same bits.
    """
    if steps and (not torch.is_grad_enabled() or not filled.requires_grad):
        unseen = (seen[:, 0] == 0).nonzero()
        if len(unseen) * 4 < seen[:, 0].numel():
            return _smooth_sparse(filled, unseen, steps)
    for _ in range(steps):
        p = F.pad(filled, (1, 1, 1, 1), mode="replicate")
        mean = (p[..., :-2, 1:-1] + p[..., 2:, 1:-1] + p[..., 1:-1, :-2] + p[..., 1:-1, 2:]) / 4
        filled = seen * fixed + (1 - seen) * mean
    return filled


def _smooth_sparse(filled: torch.Tensor, unseen: torch.Tensor, steps: int) -> torch.Tensor:
    """:func:`_smooth` on the listed (b, y, x) pixels only; the others keep their value."""
    if not steps or not len(unseen):
        return filled
    h, w = filled.shape[-2:]
    b, y, x = unseen.unbind(1)
    # Replicate padding is a clamp of the neighbour's coordinate.
    up, down = (y - 1).clamp_min(0), (y + 1).clamp_max(h - 1)
    left, right = (x - 1).clamp_min(0), (x + 1).clamp_max(w - 1)
    values = filled.permute(0, 2, 3, 1).clone()  # B x H x W x C: one gather per pixel
    for _ in range(steps):
        v = values
        values[b, y, x] = (v[b, up, x] + v[b, down, x] + v[b, y, left] + v[b, y, right]) / 4
    return values.permute(0, 3, 1, 2)


# A ring pixel joins the hole when it differs from a first fill by more than this
# (8% of full scale, ~20 grey levels): anti-aliased fringes of marks do, clean
# speckle does not; smaller holes fill better.
FRINGE = 0.08


def _adaptive_hole(
    x: torch.Tensor, detected: torch.Tensor, dilate: int, smooth_steps: int
) -> torch.Tensor:
    """The detected pixels plus those within ``dilate`` px that look like marks."""
    if dilate <= 0 or not bool((detected > 0).any()):
        return detected
    grown = _grow(detected, dilate)
    ring = grown - detected
    first = fill_holes(x, grown, smooth_steps)
    deviates = ((x - first).abs().amax(dim=1, keepdim=True) > FRINGE).to(x.dtype)
    return torch.clamp(detected + ring * deviates, 0, 1)


def _grow(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Binary dilation by ``pixels`` with a square kernel (max pooling)."""
    if pixels <= 0:
        return mask
    # Shifted maxima, rows then columns: the same result as a (2p+1)^2 max pool
    # (zero padding is the pool's -inf padding, masks being >= 0) at a fraction
    # of its cost on one-channel CPU tensors, where the pool has no fast kernel.
    h, w = mask.shape[-2:]
    span = 2 * pixels + 1
    padded = F.pad(mask, (pixels, pixels, pixels, pixels))
    rows = padded[..., :, :w]
    for i in range(1, span):
        rows = torch.maximum(rows, padded[..., :, i : i + w])
    grown = rows[..., :h, :]
    for i in range(1, span):
        grown = torch.maximum(grown, rows[..., i : i + h, :])
    return grown
