"""How the network runs: batches on the device, flips, tiles, crops, memory.

Execution details the restorer needs and no post-processing step cares about:
mixed precision, test-time flips (``tta``), overlapping tiles blended with
Gaussian weights (nnU-Net's way) so a 4000x4000 scan runs in bounded memory,
halving the tile when the GPU runs out of memory, and the crops around the
detections that the inpainter is run on.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import torch
from torch import nn

from annot_denoise.config import MASK_DILATE
from annot_denoise.models import model_outputs
from annot_denoise.runtime import StageTimes, amp_dtype, autocast

log = logging.getLogger(__name__)

# Inpainting crops: this much scan around each detection (the inpainter's useful
# reach; checked against whole-image inpainting in tests/test_inference.py), on a
# grid of CELL pixels, which keeps crops aligned with the network's pooling grid.
CONTEXT = 32
CELL = 16
# When the crops would cover more than this fraction, inpaint the whole image.
CROP_LIMIT = 0.5
# Crops grow to a multiple of this many pixels a side, into more of the scan around
# them, so that the crops of a batch fall into a few shapes and go through the
# inpainter together: a small crop alone costs the network's per-layer overhead
# many times over its arithmetic (measurements in commit f35d89f's message).
BUCKET = 128
# Test-time augmentation (``tta``): the four flips of a batch (numpy axes of
# B x H x W [x C]). Transposes scored worse: text and speckle are not isotropic.
FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (1, 2))
# On the CPU, tiles are batched up to this many pixels per network pass.
TILE_PIXELS_CPU = 1024 * 1024


class Network:
    """A model on a device, run on numpy batches (B x H x W x C floats in [0, 1])."""

    def __init__(
        self,
        model: nn.Module,
        *,
        device: torch.device,
        amp: bool = True,
        threshold: float = 0.5,
        dilate: int = MASK_DILATE,
        tile: int = 1024,
        batch_size: int = 4,
        tta: bool = False,
    ) -> None:
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.device = device
        self.dtype = amp_dtype(device, amp)
        self.threshold, self.dilate = threshold, dilate
        self.tile, self.batch_size = tile, batch_size
        # Every network pass is averaged over the four flips of its input (FLIPS).
        self.tta = tta
        self.residual = bool(getattr(model, "residual", False))
        self.predicts_mask = bool(getattr(model, "predicts_mask", False))
        self.two_stage = hasattr(model, "detect") and hasattr(model, "inpaint")
        # Where the time goes: the network's stages here, the rest by the caller.
        self.stages = StageTimes()

    def _forward(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """B x h x w x C floats -> numpy outputs (``output``, ``content``, ``prob``)."""
        if not self.tta:
            return self._forward_once(batch)
        if self.two_stage:
            # A mask model gets one hole for all views, as in the two-stage path:
            # averaging four 0/1 holes would let part of the marks through.
            prob = self._detect(batch)["prob"]
            detected = (prob > self.threshold).astype(np.float32)[..., None]
            painted = self._inpaint(np.concatenate([batch, detected], axis=-1))
            hole = painted["hole"][..., None]
            output = batch * (1 - hole) + painted["content"] * hole
            return {"output": output, "prob": prob, **painted}
        views = [self._forward_once(flip(batch, axes)) for axes in FLIPS]
        return {
            key: np.mean([flip(v[key], axes) for v, axes in zip(views, FLIPS)], axis=0)
            for key in views[0]
        }

    def _forward_once(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        with self.stages("network"):
            return self._forward_network(batch)

    def _forward_network(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        x = self._tensor(batch)
        kwargs = {"threshold": self.threshold, "dilate": self.dilate} if self.predicts_mask else {}
        with torch.inference_mode():
            with autocast(self.device, self.dtype):
                parts = model_outputs(self.model(x, **kwargs))
            out = {"output": parts["output"].float().permute(0, 2, 3, 1).cpu().numpy()}
            if "mask_logits" in parts:
                out["prob"] = torch.sigmoid(parts["mask_logits"].float())[:, 0].cpu().numpy()
                out["content"] = parts["content"].float().permute(0, 2, 3, 1).cpu().numpy()
            if "hole" in parts:
                out["hole"] = parts["hole"].float()[:, 0].cpu().numpy()
        return out

    def _with_oom_fallback(self, run):
        tile = self.tile
        while True:
            try:
                return run(tile)
            except torch.cuda.OutOfMemoryError:
                if tile <= 128:
                    raise
                torch.cuda.empty_cache()
                tile //= 2
                log.warning("out of GPU memory; retrying with %dx%d tiles", tile, tile)

    def _tiled(
        self, net: np.ndarray, tile: int, forward, plane: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """``forward`` over ``net``: whole if it fits in ``tile``, else overlapping tiles
        (a quarter of a tile) blended with Gaussian weights. ``plane`` (H x W), when
        given, is appended to each tile as its last channel (the detections the
        inpainter takes), tile by tile: a whole-image copy with it would cost a
        third more than the image on a large scan."""
        h, w, _ = net.shape

        def cut(y: int, x: int, th: int, tw: int) -> np.ndarray:
            part = net[y : y + th, x : x + tw]
            return part if plane is None else with_plane(part, plane[y : y + th, x : x + tw])

        if h <= tile and w <= tile:
            return {k: v[0] for k, v in forward(cut(0, 0, h, w)[None]).items()}
        overlap = tile // 4
        ys, xs = starts(h, tile, overlap), starts(w, tile, overlap)
        weight = gaussian(min(tile, h), min(tile, w))
        th, tw = weight.shape
        acc: dict[str, np.ndarray] = {}
        total = np.zeros((h, w), np.float32)
        boxes = [(y, x) for y in ys for x in xs]
        per_pass = self.tiles_per_pass(th * tw)
        for start in range(0, len(boxes), per_pass):
            chunk = boxes[start : start + per_pass]
            out = forward(np.stack([cut(y, x, th, tw) for y, x in chunk]))
            for i, (y, x) in enumerate(chunk):
                for key, value in out.items():
                    if key not in acc:
                        acc[key] = np.zeros((h, w, *value.shape[3:]), np.float32)
                    wk = weight if value.ndim == 3 else weight[..., None]
                    acc[key][y : y + th, x : x + tw] += value[i] * wk
                total[y : y + th, x : x + tw] += weight
        for value in acc.values():
            value /= total if value.ndim == 2 else total[..., None]
        return acc

    def tiles_per_pass(self, pixels: int) -> int:
        """How many tiles of ``pixels`` go through the network at once.

        On a GPU a batch fills the device (``batch_size``). On the CPU a large tile
        already keeps every core busy, and a batch only multiplies the memory the
        network's activations take: tiles go one by one up to a megapixel per pass
        (the outputs are the same either way: each tile is computed on its own).
        """
        if self.device.type != "cpu":
            return self.batch_size
        return max(1, min(self.batch_size, TILE_PIXELS_CPU // max(pixels, 1)))

    def crops_per_pass(self, pixels: int) -> int:
        """How many inpainting crops of ``pixels`` go through the network at once: as
        many as a pass of full tiles holds (crops are small: their number, not their
        pixels, is what costs)."""
        if self.device.type == "cpu":
            budget = TILE_PIXELS_CPU
        else:
            budget = self.batch_size * self.tile**2
        return max(1, budget // max(pixels, 1))

    def _detect(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        views = FLIPS if self.tta else FLIPS[:1]
        with self.stages("detect"):
            prob = sum(flip(self._detect_once(flip(batch, axes)), axes) for axes in views)
            return {"prob": prob / len(views)}

    def _detect_once(self, batch: np.ndarray) -> np.ndarray:
        x = self._tensor(batch)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            logits = self.model.detect(x)
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    def _inpaint(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Content and hole for a batch of scans with their detection as last channel."""
        with self.stages("inpaint"):
            content, hole = self._inpaint_once(batch, self.dilate)
            if self.tta:
                # The other views paint the very same hole (grown by 0 px it stays as
                # given), so only the content is averaged.
                given = np.concatenate([batch[..., :-1], hole[..., None]], axis=-1)
                for axes in FLIPS[1:]:
                    content += flip(self._inpaint_once(flip(given, axes), 0)[0], axes)
                content /= len(FLIPS)
            return {"content": content, "hole": hole}

    def _inpaint_once(self, batch: np.ndarray, dilate: int) -> tuple[np.ndarray, np.ndarray]:
        x = self._tensor(batch[..., :-1])
        detected = self._tensor(batch[..., -1:])
        with torch.inference_mode(), autocast(self.device, self.dtype):
            content, hole = self.model.inpaint(x, detected, dilate)
            return (
                content.float().permute(0, 2, 3, 1).cpu().numpy(),
                hole.float()[:, 0].cpu().numpy(),
            )

    def _tensor(self, batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(self.device)
        return x.contiguous(memory_format=torch.channels_last)


def with_plane(net: np.ndarray, plane: np.ndarray) -> np.ndarray:
    """``net`` (H x W x C) with ``plane`` (H x W: the detections) as its last channel,
    the input the inpainter takes."""
    return np.concatenate([net, plane[..., None].astype(net.dtype)], axis=2)


def flip(batch: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``batch`` (B x H x W [x C]) flipped along ``axes``; flipping twice restores it."""
    # A copy: on an axis of length 1 np.ascontiguousarray keeps the negative
    # stride, which torch.from_numpy refuses.
    return np.flip(batch, axes).copy() if axes else batch


def starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets covering ``length`` with at least ``overlap`` between tiles."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def gaussian(h: int, w: int) -> np.ndarray:
    """Blending weights peaking at the tile centre (sigma = 1/8 of the side, as nnU-Net)."""
    gy = np.exp(-0.5 * ((np.arange(h) - (h - 1) / 2) / max(h / 8, 1)) ** 2)
    gx = np.exp(-0.5 * ((np.arange(w) - (w - 1) / 2) / max(w / 8, 1)) ** 2)
    weight = np.outer(gy, gx).astype(np.float32)
    return np.maximum(weight, 1e-3)  # edges keep a little weight: no division by zero


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HxWxC float to (height, width), keeping the channel axis."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out


def bucket(box: tuple[slice, slice], shape: tuple[int, int]) -> tuple[slice, slice]:
    """``box`` grown to a multiple of ``BUCKET`` px a side (or the whole side of the
    image where that is shorter), evenly around it in steps of ``CELL`` px and
    shifted to stay inside the image: a box of the same shape for every crop of
    the same size class. (The shift can take a box at the image's far edge off
    the ``CELL`` grid; its repair then differs a little, as any crop's does with
    where it is cut.)"""
    grown = []
    for part, length in zip(box, shape):
        size = part.stop - part.start
        side = min(-(-size // BUCKET) * BUCKET, length)
        start = part.start - (side - size) // (2 * CELL) * CELL
        start = min(max(start, 0), length - side)
        grown.append(slice(start, start + side))
    return grown[0], grown[1]


def crops(detected: np.ndarray) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """Boxes to inpaint: each group of detections with ``CONTEXT`` px around it, on a
    ``CELL`` grid, and the part of the box that group owns (boxes may overlap)."""
    h, w = detected.shape
    hc, wc = -(-h // CELL), -(-w // CELL)
    cells = np.zeros((hc * CELL, wc * CELL), bool)
    cells[:h, :w] = detected
    cells = cells.reshape(hc, CELL, wc, CELL).any(axis=(1, 3)).astype(np.uint8)
    reach = -(-CONTEXT // CELL)
    grown = cv2.dilate(cells, np.ones((2 * reach + 1,) * 2, np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(grown, connectivity=8)
    area = int(stats[1:, cv2.CC_STAT_WIDTH] @ stats[1:, cv2.CC_STAT_HEIGHT])
    if area > CROP_LIMIT * hc * wc:
        return [((slice(0, h), slice(0, w)), np.ones((h, w), bool))]
    crops = []
    for k in range(1, count):
        x, y, bw, bh = stats[k, :4]
        box = (slice(y * CELL, min((y + bh) * CELL, h)), slice(x * CELL, min((x + bw) * CELL, w)))
        own = np.kron(labels[y : y + bh, x : x + bw] == k, np.ones((CELL, CELL), bool))
        crops.append((box, own[: box[0].stop - box[0].start, : box[1].stop - box[1].start]))
    return crops
