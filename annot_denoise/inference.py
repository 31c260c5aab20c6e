"""Apply a trained network to whole images and hand back images of the same kind.

Two ways to run a network, chosen by how it was trained:

- **native** (trained on patches at native scale): the network sees the image at
  its own resolution; images larger than ``tile`` go through overlapping tiles
  blended with Gaussian weights, so memory stays bounded and there are no seams.
- **resize** (trained with ``data.size``): the image is resized to that size for
  the network and the result is brought back to the input's size. Residual
  networks have only their *correction* resized back and added to the untouched
  input; the reference autoencoder has its whole output resized, as the thesis did.

Mask-aware networks (``maskunet``) add a fidelity guarantee: the predicted mask is
thresholded and dilated, and every pixel outside it is copied bit for bit from the
input. They run in two stages: the detector over the whole image, then the
inpainter only on crops around what it found (with ``CONTEXT`` pixels of
surroundings), since marks cover a few percent of a scan; what it paints is
mixed with a share of OpenCV's Telea fill of the same holes. What comes back
always has the input's size, channels, alpha and bit depth.

With ``tta`` every network pass is averaged over the four flips of its input:
fewer false detections and smoother fills, for about three times the compute.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from annot_denoise.io import (
    differs,
    from_float,
    merge_alpha,
    split_alpha,
    to_float,
    to_grey,
    to_rgb,
)
from annot_denoise.models import model_outputs
from annot_denoise.runtime import amp_dtype, autocast

log = logging.getLogger(__name__)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Inpainting crops: this much scan around each detection (the inpainter's useful
# reach; checked against whole-image inpainting in tests/test_inference.py), on a
# grid of CELL pixels, which keeps crops aligned with the network's pooling grid.
# 48 px scored within 0.02 dB of 32 on the quality benchmark and cost 4% more time.
CONTEXT = 32
CELL = 16
# When the crops would cover more than this fraction, inpaint the whole image.
CROP_LIMIT = 0.5
# Holes on a background this flat (8-bit levels) are filled with it exactly.
FLAT_TOLERANCE = 2
FLAT_GROW = 16  # px of a missed rim or dim end the flat fill may take in
SURROUND_AREA = 16  # px: smaller flat pieces are dark speckle, not surround
# Colour on a grey scan: an R, G, B spread above CHROMA (4 of 255 levels, above
# JPEG's rounding) is colour; above COLOUR_SHARE of the pixels it is a colour scan.
CHROMA = 4 / 255
COLOUR_SHARE = 0.05
COLOUR_REACH = 4  # px; 3, 6 and 12 scored the same on validation scans
# The inpainter's content is mixed with this share of OpenCV's Telea fill of the
# same holes: two fills with different errors average to a better one. On 21
# validation scans (seed 777) 0.25 gained 0.35 dB over the whole image and 0.38
# inside the marks; 0.2 to 0.35 alike, 0.5 lost it again. Native two-stage only.
TELEA_SHARE = 0.25
TELEA_RADIUS = 3
# Holes within NEAR_SURROUND px of the surround get SURROUND_TELEA_SHARE of a Telea
# fill from the anatomy alone (see _away_from_surround). On the 21 validation scans,
# with every other rule in place: share 0.5 -> 1 gained 0.27 dB over the whole
# image and 0.18 inside the marks; 1 at 2 to 6 px and 0.5 beyond lay in between;
# 11 and 14 px (share 1) were within 0.03 dB of 8.
NEAR_SURROUND = 8
SURROUND_TELEA_SHARE = 1.0
SURROUND_REACH = 2 * NEAR_SURROUND + TELEA_RADIUS + 1  # px of context around the holes
RECTANGLE_FILL = 0.98  # anatomy filling this much of its box: a rectangular scan
# Islands the detector left inside a mark: taken in when no larger than GAP_AREA px,
# flat, and of the mark's own value within GAP_TOLERANCE (of full scale). On the
# quality bench's held-out arrows this gained 1.2 dB (one solid arrowhead with an
# undetected core); 0.025 began to take in letter counters on grey tissue.
GAP_AREA = 256
GAP_TOLERANCE = 0.01
GAP_REACH = 4  # px around an island whose detected pixels give the mark's value
GAP_ISLANDS = 2000  # more islands than this in one image: none is taken in
# Detections that are only the scan's own edge against the surround (``_scan_edges``):
# every pixel within EDGE_TOLERANCE of the anatomy within EDGE_REACH px of it.
EDGE_REACH = 6
EDGE_TOLERANCE = 4 / 255
EDGE_PROB = 0.1  # below this the detector is sure a pixel is no mark
EDGE_ANATOMY = 1024  # px: smaller pieces off the surround are not anatomy
EDGE_MARGIN = 32  # px around the detections in which those pieces are measured
# Undetected pixels of a mark's own flat value, within MARK_REACH px of it, are
# taken in (``_complete_flat``): within MARK_TOLERANCE 8-bit levels of the value
# most of its detected pixels hold, when that value lies MARK_CONTRAST levels or
# more from the median of the undetected pixels around it.
MARK_REACH = 3
MARK_TOLERANCE = 2
MARK_CONTRAST = 24
MARK_SHARE = 0.05
# Translucent boxes under readouts (``_veils``).
VEIL_JOIN = 6  # px: marks this close belong to one group (the lines of a readout)
VEIL_REACH = 24  # px beyond a group where the edges of its box are sought
VEIL_FLOOR = 4 / 255  # darker pixels outside a box say too little about its ratio
VEIL_MIN, VEIL_MAX = 0.1, 0.7  # the share of light a box lets through
VEIL_SPAN = 12  # px: the shortest side of a box, and of the part of an edge seen
VEIL_SLACK, VEIL_SPREAD = 1.5 / 255, 0.1  # how closely an edge's pixels fit its ratio
VEIL_FIT = 0.8  # share of an edge's pixels that must fit
VEIL_AGREE = 0.1  # largest difference between the ratios of a box's sides
VEIL_BLACK = 1 / 255  # black: beyond the box there is nothing to unveil
VEIL_HUG = 0.6  # share of a side along which detections mean the box's border
VEIL_GROUPS = 100  # more groups of marks than this in one image: no box is sought
# Test-time augmentation (``tta``): the four flips of a batch (numpy axes of
# B x H x W [x C]). Transposes scored worse: text and speckle are not isotropic.
FLIPS: tuple[tuple[int, ...], ...] = ((), (2,), (1,), (1, 2))


@dataclass
class Restored:
    image: np.ndarray  # same size, channels, alpha and dtype as the input
    mask: np.ndarray | None  # bool HxW: where a mask-aware model was allowed to write
    changed: float  # fraction of pixels that differ from the input
    # bool HxW: the thresholded mask before dilation, with what completes it (the
    # rest of a coloured patch, a mark's core, an opaque box under a readout)
    detected: np.ndarray | None = None


class Restorer:
    """A model plus everything needed to apply it to raw image arrays."""

    def __init__(
        self,
        model: nn.Module,
        *,
        channels: int,
        device: torch.device,
        size: Sequence[int] | None = None,
        amp: bool = True,
        threshold: float = 0.5,
        dilate: int = 2,
        tile: int = 1024,
        batch_size: int = 4,
        tta: bool = False,
    ) -> None:
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.channels = channels
        self.device = device
        self.size = (int(size[0]), int(size[1])) if size else None
        self.dtype = amp_dtype(device, amp)
        self.threshold, self.dilate = threshold, dilate
        self.tile, self.batch_size = tile, batch_size
        # Every network pass is averaged over the four flips of its input (FLIPS).
        self.tta = tta
        self.residual = bool(getattr(model, "residual", False))
        self.predicts_mask = bool(getattr(model, "predicts_mask", False))
        self.two_stage = hasattr(model, "detect") and hasattr(model, "inpaint")
        self.takes_masks = self.two_stage and self.size is None  # see inpaint()

    @classmethod
    def from_checkpoint(
        cls,
        model: nn.Module,
        ckpt: dict,
        device: torch.device,
        *,
        amp: bool = True,
        threshold: float | None = None,
        dilate: int | None = None,
        tile: int = 1024,
        batch_size: int = 4,
        tta: bool = False,
    ) -> Restorer:
        """Settings from the checkpoint, each overridable (None = the checkpoint's)."""
        infer = ckpt.get("inference", {})
        return cls(
            model,
            channels=ckpt["data"]["channels"],
            size=ckpt["data"].get("size"),
            device=device,
            amp=amp,
            threshold=infer.get("mask_threshold", 0.5) if threshold is None else threshold,
            dilate=infer.get("mask_dilate", 2) if dilate is None else dilate,
            tile=tile,
            batch_size=batch_size,
            tta=tta,
        )

    def restore(self, images: Sequence[np.ndarray]) -> list[Restored]:
        """Clean a batch of images (any sizes, dtypes and channel layouts)."""
        nets = [self._network_input(img) for img in images]
        if self.size is not None:
            preds = self._predict_resized(nets)
        elif self.two_stage:
            preds = self._predict_two_stage(nets)
        else:
            preds = [self._predict_native(net) for net in nets]
        return [self._finish(img, net, p) for img, net, p in zip(images, nets, preds)]

    def inpaint(self, images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> list[Restored]:
        """Repaint given masks (True = annotation) with the inpainter; no detection.

        What a perfect detector would give (``eval --oracle``), or a way to use
        masks made elsewhere. The holes are the masks grown as at inference
        (``dilate``); every pixel outside them is the input, bit for bit.
        """
        if not self.takes_masks:
            raise ValueError(
                "inpainting given masks needs a mask-aware model at native resolution (maskunet)"
            )
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        restored = []
        for image, mask in zip(images, masks):
            if mask.shape != image.shape[:2]:
                raise ValueError(f"a mask of {mask.shape} for an image of {image.shape[:2]}")
            net = self._network_input(image)
            given = mask.astype(bool)
            pred = self._inpaint_around(net, given.astype(np.float32), given)
            restored.append(self._finish(image, net, pred))
        return restored

    # ------------------------------------------------------------------ prediction

    def _network_input(self, image: np.ndarray) -> np.ndarray:
        color, _ = split_alpha(image)
        net = to_float(to_rgb(color) if self.channels == 3 else to_grey(color))
        return net[..., None] if net.ndim == 2 else net

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
        views = [self._forward_once(_flip(batch, axes)) for axes in FLIPS]
        return {
            key: np.mean([_flip(v[key], axes) for v, axes in zip(views, FLIPS)], axis=0)
            for key in views[0]
        }

    def _forward_once(self, batch: np.ndarray) -> dict[str, np.ndarray]:
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

    def _predict_resized(self, nets: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        preds = []
        for start in range(0, len(nets), self.batch_size):
            chunk = nets[start : start + self.batch_size]
            small = np.stack([_resize(n, self.size) for n in chunk])
            out = self._forward(small)
            for i, net in enumerate(chunk):
                native = net.shape[:2]
                if self.predicts_mask:
                    delta = _resize(out["content"][i] - small[i], native)
                    pred = {"content": net + delta}
                    for key in ("prob", "hole"):
                        if key in out:
                            pred[key] = _resize(out[key][i][..., None], native)[..., 0]
                    preds.append(pred)
                elif self.residual:
                    preds.append({"output": net + _resize(out["output"][i] - small[i], native)})
                else:
                    preds.append({"output": _resize(out["output"][i], native)})
        return preds

    def _predict_native(self, net: np.ndarray) -> dict[str, np.ndarray]:
        return self._with_oom_fallback(lambda tile: self._tiled(net, tile, self._forward))

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

    def _tiled(self, net: np.ndarray, tile: int, forward) -> dict[str, np.ndarray]:
        """``forward`` over ``net``: whole if it fits in ``tile``, else overlapping tiles
        (a quarter of a tile) blended with Gaussian weights."""
        h, w, _ = net.shape
        if h <= tile and w <= tile:
            return {k: v[0] for k, v in forward(net[None]).items()}
        overlap = tile // 4
        ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
        weight = _gaussian(min(tile, h), min(tile, w))
        th, tw = weight.shape
        acc: dict[str, np.ndarray] = {}
        total = np.zeros((h, w), np.float32)
        boxes = [(y, x) for y in ys for x in xs]
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            out = forward(np.stack([net[y : y + th, x : x + tw] for y, x in chunk]))
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

    def _predict_two_stage(self, nets: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Detect on whole images (same-sized ones batched), inpaint around the finds."""
        probs: list[np.ndarray | None] = [None] * len(nets)
        fits = [i for i, n in enumerate(nets) if max(n.shape[:2]) <= self.tile]
        by_shape: dict[tuple, list[int]] = {}
        for i in fits:
            by_shape.setdefault(nets[i].shape, []).append(i)

        def detect(tile: int, chunk: list[int]) -> list[np.ndarray]:
            if tile == self.tile:  # the whole batch at once
                return list(self._detect(np.stack([nets[i] for i in chunk]))["prob"])
            # After running out of GPU memory: one image at a time, in smaller tiles.
            return [self._tiled(nets[i], tile, self._detect)["prob"] for i in chunk]

        for group in by_shape.values():
            for start in range(0, len(group), self.batch_size):
                chunk = group[start : start + self.batch_size]
                found = self._with_oom_fallback(lambda tile, chunk=chunk: detect(tile, chunk))
                for i, prob in zip(chunk, found):
                    probs[i] = prob
        preds = []
        for net, prob in zip(nets, probs):
            if prob is None:  # larger than a tile
                prob = self._with_oom_fallback(
                    lambda tile, net=net: self._tiled(net, tile, self._detect)
                )["prob"]
            detected = _scan_edges(net, prob, prob > self.threshold)
            detected = _close_gaps(net, _complete_flat(net, _complete_colour(net, detected)))
            veils = []
            for box, k in _veils(net, detected):
                if k == 0:  # an opaque box: into the hole
                    detected[box] = True
                else:
                    veils.append((box, k))
            if veils:
                net = net.copy()
                for box, k in veils:
                    net[box] = np.minimum(net[box] / k, 1.0)
            pred = self._inpaint_around(net, prob, detected)
            if veils:
                pred.update(veils=veils, net=net)
            preds.append(pred)
        return preds

    def _inpaint_around(
        self, net: np.ndarray, prob: np.ndarray, detected: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Inpaint around ``detected`` (by default: ``prob`` above the threshold)."""
        detected = prob > self.threshold if detected is None else detected
        hole = np.zeros(prob.shape, np.float32)
        if not detected.any():
            return {"prob": prob, "content": net, "hole": hole, "detected": detected}
        content = net.copy()
        for box, own in _crops(detected):
            sub = np.concatenate([net[box], detected[box][..., None].astype(np.float32)], axis=2)
            out = self._with_oom_fallback(
                lambda tile, sub=sub: self._tiled(sub, tile, self._inpaint)
            )
            painted = out["hole"] > 0.5
            take = own & painted
            content[box][take] = _with_telea(net[box], painted, out["content"])[take]
            hole[box][take] = 1.0
        return {"prob": prob, "content": content, "hole": hole, "detected": detected}

    def _detect(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        views = FLIPS if self.tta else FLIPS[:1]
        prob = sum(_flip(self._detect_once(_flip(batch, axes)), axes) for axes in views)
        return {"prob": prob / len(views)}

    def _detect_once(self, batch: np.ndarray) -> np.ndarray:
        x = self._tensor(batch)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            logits = self.model.detect(x)
            return torch.sigmoid(logits.float())[:, 0].cpu().numpy()

    def _inpaint(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Content and hole for a batch of scans with their detection as last channel."""
        content, hole = self._inpaint_once(batch, self.dilate)
        if self.tta:
            # The other views paint the very same hole (grown by 0 px it stays as
            # given), so only the content is averaged.
            given = np.concatenate([batch[..., :-1], hole[..., None]], axis=-1)
            for axes in FLIPS[1:]:
                content += _flip(self._inpaint_once(_flip(given, axes), 0)[0], axes)
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

    # ------------------------------------------------------------------ writing back

    def _finish(self, image: np.ndarray, net: np.ndarray, pred: dict) -> Restored:
        color, alpha = split_alpha(image)
        if not self.predicts_mask:
            restored = merge_alpha(_to_layout(pred["output"], color), alpha)
            return Restored(restored, None, _changed(image, restored))
        detected = pred["detected"] if "detected" in pred else pred["prob"] > self.threshold
        if "hole" in pred:
            # The network's own hole: the detection plus the fringe it grew into.
            hard = pred["hole"] > 0.5
        else:
            kernel = np.ones((2 * self.dilate + 1,) * 2, np.uint8)
            hard = cv2.dilate(detected.view(np.uint8), kernel).astype(bool)
        veils = pred.get("veils", [])
        if veils:
            # The anatomy under a translucent box, before anything is judged by it.
            net, color = pred["net"], color.copy()
            top = np.iinfo(color.dtype).max
            for box, k in veils:
                color[box] = np.minimum(np.rint(color[box] / k), top).astype(color.dtype)
        out = color.copy()
        border = _border_value(color)
        flat = _flat_fills(color, hard, border) if hard.any() else []
        for box, region, _ in flat:
            hard[box] |= region
        surround = _surround(color, hard, border) if hard.any() else None
        if hard.any():
            # Inside the mask the content head is written as is: it is trained to
            # give the clean scan on the annotation and around it (see losses).
            content = pred["content"]
            if surround is not None:
                # (Edited in place; where nothing was painted, content is the input.)
                content = content.copy() if content is net else content
                content = _away_from_surround(net, color, hard, content, surround)
            values = content[hard]
            if values.shape[-1] == 3 and _grey_scan(color, hard):
                # Grey anatomy stored as RGB (most ultrasound): what lies under a
                # coloured mark is grey too, so no tint may leak into the repair.
                values = np.repeat((values @ LUMA)[:, None], 3, axis=1)
            out[hard] = _to_layout(values[:, None], color[hard][:, None])[:, 0]
        for box, region, value in flat:
            out[box][region] = value
        if surround is not None:
            value, box, pixels = surround
            out[box][_beside_surround(hard[box], pixels)] = value
        for box, _ in veils:
            hard[box] = True
        restored = merge_alpha(out, alpha)
        return Restored(restored, hard, _changed(image, restored), detected)


def _flat_fills(
    color: np.ndarray, hard: np.ndarray, border: np.ndarray | None
) -> list[tuple[tuple[slice, slice], np.ndarray, np.ndarray]]:
    """Holes lying on a flat background, each as (box, region in the box, value).

    Marks on the black surround of a scan sector (labels, colour bars, boxes) are
    filled with that background exactly: the network's guess there is close but not
    exact, and a smudge on black is the most visible error there is. The background
    value is the most common one just outside the hole. The detector may have
    missed a rim of the mark, so the region grows over neighbours that differ from
    that value, by up to ``FLAT_GROW`` px; when it is then surrounded by the value
    alone it is filled (with the faint last pixel of an anti-aliased edge), else
    (anatomy around it) it is left to the network.
    """
    tol = FLAT_TOLERANCE * (257 if color.dtype == np.uint16 else 1)
    # Holes within 3 px of each other are judged together (the letters of a label).
    near = cv2.dilate(hard.view(np.uint8), np.ones((7, 7), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
    h, w = hard.shape
    square = np.ones((3, 3), np.uint8)
    margin = FLAT_GROW + 1
    fills = []
    for k in range(1, count):
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        box = (
            slice(max(y - margin, 0), min(y + bh + margin, h)),
            slice(max(x - margin, 0), min(x + bw + margin, w)),
        )
        group = labels[box] == k
        region = hard[box] & group
        others = hard[box] & ~group
        around = color[box][group & ~region]  # the 3 px just outside the holes
        if len(around) < 8:
            continue
        # The most common value, found on one integer key per pixel.
        keys = around.astype(np.int64)
        if keys.ndim == 2:
            keys = keys @ (np.int64(1) << (16 * np.arange(keys.shape[1], dtype=np.int64)))
        _, first, counts = np.unique(keys, return_index=True, return_counts=True)
        if counts.max() * 2 < len(around):  # no dominant value: anatomy, not a flat surround
            continue
        value = around[first[counts.argmax()]]
        if border is not None and np.abs(value.astype(np.int64) - border).max() <= tol:
            # A backing a level or two off the surround: the surround is what lies under it.
            value = border.astype(color.dtype).reshape(value.shape)
        dev = np.abs(color[box].astype(np.int64) - value)
        dev = dev.max(axis=2) if dev.ndim == 3 else dev
        differs_ = (dev > tol) & ~others
        for _ in range(FLAT_GROW + 1):
            ring = cv2.dilate(region.view(np.uint8), square).astype(bool) & ~region
            rim = ring & differs_
            if not rim.any():
                # The last, faintest steps of an anti-aliased edge or a dark backing,
                # within the tolerance: everything off the value joined to the region.
                faint = (dev > 0) & (dev <= tol) & ~others
                for _ in range(FLAT_GROW):
                    grown = cv2.dilate(region.view(np.uint8), square).view(bool) & faint
                    if not (grown & ~region).any():
                        break
                    region = region | grown
                fills.append((box, region, value))
                break
            region = region | rim
    return fills


def _border_value(color: np.ndarray) -> np.ndarray | None:
    """The value (one per channel, int64) held by at least a quarter of the
    image's outermost pixels: a scan's surround; ``None`` when none is.

    Floats (the network's input, in [0, 1]) are judged in 8-bit levels.
    """
    edge = np.concatenate([color[0], color[-1], color[:, 0], color[:, -1]])
    if np.issubdtype(edge.dtype, np.floating):
        edge = np.rint(edge * 255)
    keys = edge.reshape(len(edge), -1).astype(np.int64)
    # One integer per pixel, channel 0 the most significant (the order, and so
    # the choice between two values held by as many pixels, of unique by rows).
    packed = keys @ (np.int64(1) << (16 * np.arange(keys.shape[1] - 1, -1, -1, dtype=np.int64)))
    _, first, counts = np.unique(packed, return_index=True, return_counts=True)
    if counts.max() * 4 < len(keys):
        return None
    return keys[first[counts.argmax()]]


def _surround(
    color: np.ndarray, hard: np.ndarray, value: np.ndarray | None
) -> tuple[np.ndarray, tuple[slice, slice], np.ndarray] | None:
    """(value, box, pixels in the box): the flat surround of a scan around its holes.

    The value is the one held by at least a quarter of the image's outermost
    pixels (none: no surround). The surround is the pixels within
    ``FLAT_TOLERANCE`` of it, outside the holes, in pieces of ``SURROUND_AREA`` px
    or more, or enclosed by holes alone: a dark speckle at that value inside the
    tissue is not surround. The box is the holes' box grown by ``SURROUND_REACH`` px.
    """
    if value is None:
        return None
    box = _box_around(hard, SURROUND_REACH)
    hole = hard[box]
    near = _near_value(color[box], value)
    flat = near & ~hole
    _, labels, stats, _ = cv2.connectedComponentsWithStats(flat.view(np.uint8), connectivity=8)
    # A small piece is dark speckle when it touches anatomy; one enclosed by holes
    # alone (a letter's counter on the black) is surround.
    beside = cv2.dilate((~near & ~hole).view(np.uint8), _square(1)).view(bool)
    touching = np.zeros(len(stats), bool)
    touching[labels[flat & beside]] = True
    keep = ~(touching & (stats[:, cv2.CC_STAT_AREA] < SURROUND_AREA))
    keep[0] = False  # the label of everything not flat
    pixels = keep[labels]
    if not pixels.any():
        return None
    return value.astype(color.dtype).reshape(color.shape[2:]), box, pixels


def _near_value(color: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Where every channel of ``color`` is within ``FLAT_TOLERANCE`` of ``value``."""
    return np.logical_and.reduce(_within(color, value))


def _within(color: np.ndarray, value: np.ndarray) -> list[np.ndarray]:
    """Per channel of ``color``: where it is within ``FLAT_TOLERANCE`` of ``value``'s
    (8-bit levels; in floats, 1/255 each).

    One channel at a time, in the image's own dtype (a 4000x4000 scan in int64
    would take 400 MB), and against an array, not a Python float: OpenCV reads a
    float as a 4x1 array, and then fails on a 4x1 image.
    """
    if np.issubdtype(color.dtype, np.floating):  # the network's input, in [0, 1]
        tol = np.float32(FLAT_TOLERANCE / 255)
    else:
        tol = FLAT_TOLERANCE * (257 if color.dtype == np.uint16 else 1)
    planes = [color] if color.ndim == 2 else [color[..., c] for c in range(color.shape[2])]
    return [
        cv2.absdiff(np.ascontiguousarray(plane), np.full_like(plane, level)) <= tol
        for plane, level in zip(planes, np.atleast_1d(value))
    ]


def _beside_surround(hole: np.ndarray, surround: np.ndarray) -> np.ndarray:
    """The parts of ``hole`` that lie on the ``surround`` (both in one box).

    A mark across the edge of the black surround (a readout box whose frame runs
    along the top of a linear scan, a label on a sector's rim) is half on black and
    half on anatomy, and the network paints both halves from both sides: a grey
    smear on the black. A hole pixel lies on the surround when the nearest known
    pixels on both sides of it, along its row or its column, are surround, and
    neither line has anatomy at both ends (a line drawn through the anatomy from
    black to black is anatomy across). The tip of a sector under a bar, with black
    above and below it, is taken for black: the rule cannot tell it from the black
    between a colour bar and a scan's straight edge, which is far more common.
    """
    taken = np.zeros_like(hole)
    # Only holes that touch the surround can lie on it: work in their box, grown by
    # the 1 px that holds the ends of every row and column through them.
    _, labels = cv2.connectedComponents(hole.view(np.uint8), connectivity=8)
    touching = np.unique(labels[hole & cv2.dilate(surround.view(np.uint8), _square(1)).view(bool)])
    if not len(touching):
        return taken
    box = _box_around(np.isin(labels, touching), 1)
    hole, surround = hole[box], surround[box]
    anatomy = ~surround & ~hole
    rows_s, rows_a = _both_ends(hole, surround, anatomy)
    cols_s, cols_a = (m.T for m in _both_ends(hole.T, surround.T, anatomy.T))
    taken[box] = hole & (rows_s | cols_s) & ~rows_a & ~cols_a
    return taken


def _away_from_surround(
    net: np.ndarray,
    color: np.ndarray,
    hard: np.ndarray,
    content: np.ndarray,
    surround: tuple[np.ndarray, tuple[slice, slice], np.ndarray],
) -> np.ndarray:
    """``content`` with, in holes in the anatomy within ``NEAR_SURROUND`` px of the
    surround, a ``SURROUND_TELEA_SHARE`` (all of it, by default) of Telea's fill
    from the anatomy alone.

    The network's fill of a hole at the edge of the black is pulled dark by the
    black beside it: a dark notch in the tissue under a label or a box at the
    edge. Telea with the nearby surround hidden fills from the tissue side only.
    Only pixels inside the area the scan shows are mixed (see ``_inside_anatomy``):
    the part of a label on the black side of a sector's slanted edge keeps the
    network's fill, not the tissue's.
    """
    value, box, pixels = surround
    hole = hard[box]
    near = hole & cv2.dilate(pixels.view(np.uint8), _square(NEAR_SURROUND)).view(bool)
    if not near.any():
        return content
    near &= _inside_anatomy(color, hard, value, box)
    if not near.any():
        return content
    hide = hole | (pixels & cv2.dilate(hole.view(np.uint8), _square(2 * NEAR_SURROUND)).view(bool))
    # In place: ``content`` is this image's own (a full copy of a 4000x4000 scan's
    # would cost 190 MB).
    _with_telea(net[box], hide, content[box], SURROUND_TELEA_SHARE, near)
    return content


def _inside_anatomy(
    color: np.ndarray, hard: np.ndarray, value: np.ndarray, box: tuple[slice, slice]
) -> np.ndarray:
    """The pixels of ``box`` inside the area the scan shows, which is convex (a
    sector or a rectangle): the convex hull of the anatomy (every pixel outside the
    holes and more than ``FLAT_TOLERANCE`` from the surround's ``value`` in every
    channel), or its bounding box when the anatomy fills that (``RECTANGLE_FILL``)."""
    # Every channel off the surround's value: the dark, faintly coloured fringe of
    # a mark on the black is not anatomy.
    anatomy = ~hard & ~np.logical_or.reduce(_within(color, value))
    inside = np.zeros(hard[box].shape, np.uint8)
    rows, cols = np.nonzero(anatomy.any(axis=1))[0], np.nonzero(anatomy.any(axis=0))[0]
    if not len(rows):
        return inside.view(bool)
    around = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    if (anatomy[around] | hard[around]).mean() >= RECTANGLE_FILL:
        # A rectangular scan: its corners are the box's, even where a readout box
        # hides one (the hull would cut that corner off).
        full = np.zeros(hard.shape, bool)
        full[around] = True
        return full[box]
    # The hull of all anatomy pixels is the hull of each row's and column's ends.
    h, w = hard.shape
    ends = np.concatenate(
        [
            np.stack([anatomy[rows].argmax(axis=1), rows], axis=1),
            np.stack([w - 1 - anatomy[rows, ::-1].argmax(axis=1), rows], axis=1),
            np.stack([cols, anatomy[:, cols].argmax(axis=0)], axis=1),
            np.stack([cols, h - 1 - anatomy[::-1, cols].argmax(axis=0)], axis=1),
        ]
    ).astype(np.int32)
    hull = cv2.convexHull(ends) - np.array([box[1].start, box[0].start], np.int32)
    cv2.fillConvexPoly(inside, hull, 1)
    return inside.view(bool)


def _square(reach: int) -> np.ndarray:
    """A square structuring element reaching ``reach`` px from its centre."""
    return np.ones((2 * reach + 1,) * 2, np.uint8)


def _box_around(mask: np.ndarray, reach: int = 0) -> tuple[slice, slice]:
    """The box of ``mask``'s True pixels (there must be one), grown by ``reach``
    px and kept inside the image."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    h, w = mask.shape
    return (
        slice(max(ys[0] - reach, 0), min(ys[-1] + reach + 1, h)),
        slice(max(xs[0] - reach, 0), min(xs[-1] + reach + 1, w)),
    )


def _both_ends(
    hole: np.ndarray, first: np.ndarray, second: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Whether the nearest non-hole pixels left and right of each pixel, along its
    row, are both in ``first``, and whether both are in ``second`` (False where a
    row runs out of the image first)."""
    h, w = hole.shape
    at = np.broadcast_to(np.arange(w, dtype=np.int32), hole.shape)
    left = np.maximum.accumulate(np.where(hole, -1, at), axis=1)
    right = np.minimum.accumulate(np.where(hole, w, at)[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    out = []
    for kind in (first, second):
        padded = np.pad(kind, ((0, 0), (1, 1)))  # columns -1 and w: outside, False
        out.append(padded[rows, left + 1] & padded[rows, right + 1])
    return out[0], out[1]


def _flip(batch: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``batch`` (B x H x W [x C]) flipped along ``axes``; flipping twice restores it."""
    # A copy: on an axis of length 1 np.ascontiguousarray keeps the negative
    # stride, which torch.from_numpy refuses.
    return np.flip(batch, axes).copy() if axes else batch


def _with_telea(
    net: np.ndarray,
    hole: np.ndarray,
    content: np.ndarray,
    share: float | None = None,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """``content`` (H x W x C) with ``share`` (by default ``TELEA_SHARE``) of
    Telea's fill of ``hole`` mixed in, in ``where`` (by default the whole hole).
    ``content`` is changed in place (on a 4000x4000 scan a copy is 190 MB) and
    returned."""
    share = TELEA_SHARE if share is None else share
    where = hole if where is None else where
    if not share or not where.any() or hole.all():  # all hole: Telea has nothing to go on
        return content
    # Telea reads only pixels outside the hole: where the channels agree there (grey
    # anatomy stored as RGB), one channel's fill serves all of them.
    grey = net.shape[-1] == 1 or not any(
        ((net[..., c] != net[..., 0]) & ~hole).any() for c in range(1, net.shape[-1])
    )
    mask = hole.astype(np.uint8)
    # On an image one pixel wide or high OpenCV's Telea reads outside it (the
    # result then varies from call to call): such crops get a replicated border.
    pad = int(min(hole.shape) < 2)
    if pad:
        mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    for c in range(net.shape[-1]):
        if c == 0 or not grey:
            # On 16-bit planes: OpenCV's Telea takes float32 too, but returns
            # garbage there. One plane at a time keeps a large crop's memory down.
            plane = np.round(net[..., c] * 65535).astype(np.uint16)
            if pad:
                plane = cv2.copyMakeBorder(plane, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            fill = cv2.inpaint(plane, mask, TELEA_RADIUS, cv2.INPAINT_TELEA)
            telea = fill[pad : fill.shape[0] - pad, pad : fill.shape[1] - pad][where]
            telea = telea / np.float32(65535)
        inside = content[..., c][where]
        content[..., c][where] = inside + share * (telea - inside)
    return content


def _to_layout(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Network-layout floats (...xC) -> integers in ``like``'s layout and dtype."""
    if like.ndim == values.ndim - 1 and values.shape[-1] == 3:  # grey file, RGB network
        values = values @ LUMA
    elif like.ndim == values.ndim - 1:  # grey file, grey network
        values = values[..., 0]
    elif values.shape[-1] == 1:  # colour file, grey network
        values = np.repeat(values, like.shape[-1], axis=-1)
    elif like.shape[-1] == 1:  # grey file with a channel axis, RGB network
        values = (values @ LUMA)[..., None]
    return from_float(values, like.dtype)


def _coloured(net: np.ndarray) -> np.ndarray:
    """Where an RGB float image's channels spread by more than ``CHROMA``."""
    # OpenCV's per-channel max/min: ten times numpy's reductions over a 3-long axis.
    r, g, b = cv2.split(np.ascontiguousarray(net, np.float32))
    return cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b)) > CHROMA


def _complete_colour(net: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """``detected`` plus the rest of every coloured patch it touches, on grey scans.

    On grey anatomy stored as RGB (most ultrasound) a coloured pixel can only be a
    mark. The detector often leaves out the faint anti-aliased or JPEG-bled parts
    of a yellow or green mark; its coloured pixels within ``COLOUR_REACH`` px are
    taken in with it. Coloured patches it did not touch (colour Doppler, say) are
    left alone, and one it touched (a caliper on a vessel) loses no more than that
    rim; scans with more colour than ``COLOUR_SHARE`` are colour scans, where
    this does nothing.
    """
    if net.shape[-1] != 3 or not detected.any():
        return detected
    colour = _coloured(net)
    touched = colour & detected
    if not touched.any() or colour.mean() >= COLOUR_SHARE:
        return detected
    count, labels = cv2.connectedComponents(colour.view(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[labels[touched]] = True
    keep[0] = False
    span = 2 * COLOUR_REACH + 1
    near = cv2.dilate(detected.view(np.uint8), np.ones((span, span), np.uint8)).view(bool)
    return detected | (keep[labels] & near)


def _scan_edges(net: np.ndarray, prob: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """``detected`` without the groups of detections that are the scan's own edge.

    The detector can take the anatomy's edge against the black surround for a
    mark: the sharp corner of a sector (it looks like an arrowhead), or the last
    rows of a rectangular scan a few px from the image's border. Repainted, the
    tissue there is pulled dark by the black beside it. A group of detections
    (those within ``VEIL_JOIN`` px of each other) is dropped when it touches the
    surround and each of its pixels is surround, or lies in every channel within
    ``EDGE_TOLERANCE`` of the range of the anatomy within ``EDGE_REACH`` px, or,
    next to the surround, is no brighter than that anatomy (the anti-aliased
    edge). Marks are brighter, darker or of another colour than the tissue beside
    them, so one such pixel keeps the group, and with it the faint fragments of a
    readout over bright tissue next to its clearly visible letters.

    Anatomy is what the detector is sure is no mark (``EDGE_PROB``), in pieces
    off the surround of ``EDGE_ANATOMY`` px or more: the undetected rest of a mark
    (a letter's missed strokes, its fringe) must not vouch for its detected part.
    White text on saturated tissue at the scan's edge can still be dropped.
    """
    if not detected.any():
        return detected
    border = _border_value(net)
    if border is None:
        return detected
    # Everything happens near the detections: the box around them all, grown by
    # EDGE_MARGIN px, in which pieces of anatomy are measured.
    box = _box_around(detected, EDGE_MARGIN)
    planes = [np.ascontiguousarray(net[box][..., c]) for c in range(net.shape[-1])]
    found = detected[box]
    surround = _near_value(net[box], border / 255)
    joined = cv2.dilate(found.view(np.uint8), _square(VEIL_JOIN // 2))
    count, groups = cv2.connectedComponents(joined, connectivity=8)
    beside = cv2.dilate(surround.view(np.uint8), _square(1)).view(bool)
    touching = np.unique(groups[found & beside])
    if not len(touching):
        return detected
    rest = (~found & ~surround).view(np.uint8)
    _, pieces, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=8)
    large = stats[:, cv2.CC_STAT_AREA] >= EDGE_ANATOMY
    large[0] = False
    anatomy = large[pieces] & (prob[box] < EDGE_PROB)
    # Judged in the box of the groups that touch the surround.
    r = EDGE_REACH
    near = _box_around(found & np.isin(groups, touching), r)
    known = anatomy[near]
    odd = np.zeros(known.shape, bool)
    square = _square(r)
    for plane in planes:
        plane = plane[near]
        # No anatomy within reach: nothing explains the pixel (-1 and 2 are off scale).
        high = cv2.dilate(np.where(known, plane, np.float32(-1)), square)
        low = cv2.erode(np.where(known, plane, np.float32(2)), square)
        odd |= (plane > high + EDGE_TOLERANCE) | ((plane < low - EDGE_TOLERANCE) & ~beside[near])
    if len(planes) == 3 and known.any():
        colour = _coloured(net[box][near])
        if colour[known].mean() <= COLOUR_SHARE:  # on a grey scan colour is a mark
            odd |= colour
    keep = np.ones(count, bool)
    keep[touching] = False
    keep[groups[near][odd & found[near] & ~surround[near]]] = True
    out = detected.copy()
    out[box] = found & keep[groups]
    return out


def _complete_flat(net: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """``detected`` plus the pixels near each group of marks that hold one of its
    flat values.

    Marks are drawn in flat colours (a white caliper, a grey dotted line); the
    detector can skip a pixel of a thin line, and a single missed pixel of a
    bright line on dark tissue costs more inside the mask than all the rest of
    its repair. A group's values are those held by at least 3 of its detected
    pixels and ``MARK_SHARE`` of them, held by fewer of the undetected pixels
    within ``MARK_REACH`` px of the group (its ring: the black around a label is
    not the label's), and lying ``MARK_CONTRAST`` levels or more from the
    median of that ring (so a grey mark on tissue of its own grey takes nothing).
    Undetected pixels within ``MARK_REACH`` px that hold one, within
    ``MARK_TOLERANCE`` levels in every channel, are taken in.
    """
    if not detected.any():
        return detected
    m = MARK_REACH
    box = _box_around(detected, m)
    found = detected[box]
    levels = np.rint(net[box] * 255).astype(np.int64)  # 8-bit levels
    ring = cv2.dilate(found.view(np.uint8), _square(m)).view(bool) & ~found
    count, groups = cv2.connectedComponents((found | ring).view(np.uint8), connectivity=8)
    # Each group's background: the median, per channel, of its ring (the middle
    # of the group's run once sorted by group, then value).
    rid, around = groups[ring], levels[ring]
    starts = np.searchsorted(np.sort(rid), np.arange(count))
    sizes = np.bincount(rid, minlength=count)
    has = sizes > 0
    background = np.zeros((count, levels.shape[-1]), np.int64)
    for c in range(levels.shape[-1]):
        order = np.lexsort((around[:, c], rid))
        low = around[order, c][starts[has] + (sizes[has] - 1) // 2]
        high = around[order, c][starts[has] + sizes[has] // 2]
        background[has, c] = (low + high) // 2
    # Each group's flat values: (group, one integer per value) pairs held often.
    weights = np.int64(1) << (8 * np.arange(levels.shape[-1], dtype=np.int64))
    gid = groups[found].astype(np.int64)
    pairs, held = np.unique((gid << 32) + levels[found] @ weights, return_counts=True)
    group_of = pairs >> 32
    total = np.bincount(gid, minlength=count)
    value = (pairs & 0xFFFFFFFF)[:, None] // weights % 256
    often = (held >= 3) & (held >= MARK_SHARE * total[group_of])
    often &= np.abs(value - background[group_of]).max(axis=1) >= MARK_CONTRAST
    # Most of a mark's pixels are detected: a value its ring holds more often
    # (the black around a label on the surround) is the background's.
    outside, count_out = np.unique(
        (rid.astype(np.int64) << 32) + around @ weights, return_counts=True
    )
    at = np.minimum(np.searchsorted(outside, pairs), len(outside) - 1)
    often &= np.where(outside[at] == pairs, count_out[at], 0) < held
    if not often.any():
        return detected
    group_of, value = group_of[often], value[often]
    # A table of each group's flat values (rank k: its k-th), then per ring pixel:
    # does it hold one of its own group's?
    rank = np.arange(len(group_of)) - np.searchsorted(group_of, group_of)
    table = np.full((rank.max() + 1, count, levels.shape[-1]), -1000, np.int64)
    table[rank, group_of] = value
    take = np.zeros(len(rid), bool)
    for k in range(len(table)):
        take |= np.abs(around - table[k][rid]).max(axis=1) <= MARK_TOLERANCE
    out = detected.copy()
    out[box][ring] |= take
    return out


def _close_gaps(net: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """``detected`` plus the small islands it encloses that are more of the same mark.

    The detector keys on a mark's edges; the flat core of a large solid mark (a
    filled arrowhead) can come out below the threshold. Left as it is, that island
    of pure mark survives the repair and bleeds into the fill around it. An island
    of at most ``GAP_AREA`` px is taken in when it is flat and has the value of the
    detected pixels around it, both within ``GAP_TOLERANCE``. Letter counters and
    the inside of ROI boxes hold anatomy, which is neither, so they stay.
    """
    if not detected.any():
        return detected
    box = _box_around(detected)
    # One px of background around the detections' box: whatever touches it is open.
    free = np.pad(~detected[box], 1, constant_values=True).view(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=4)
    islands = np.nonzero(stats[:, cv2.CC_STAT_AREA] <= GAP_AREA)[0]
    islands = islands[islands != labels[0, 0]]
    if not len(islands) or len(islands) > GAP_ISLANDS:
        # (Thousands of islands: a mesh of detections, not marks with a core; the
        # check below costs about 50 us an island.)
        return detected
    labels = labels[1:-1, 1:-1]
    sub, found = net[box], detected[box]
    h, w = found.shape
    out = detected.copy()
    square = _square(GAP_REACH)
    for k in islands:
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        x, y = x - 1, y - 1  # the padding
        near = (
            slice(max(y - GAP_REACH, 0), min(y + bh + GAP_REACH, h)),
            slice(max(x - GAP_REACH, 0), min(x + bw + GAP_REACH, w)),
        )
        island = labels[near] == k
        around = cv2.dilate(island.view(np.uint8), square).view(bool) & found[near]
        values = sub[near][island]
        level = np.median(values, axis=0)
        flat = np.abs(values - level).max(axis=-1) <= GAP_TOLERANCE
        same = np.abs(np.median(sub[near][around], axis=0) - level).max() <= GAP_TOLERANCE
        if same and flat.mean() >= 0.9:
            out[box][near][island] = True
    return out


def _veils(net: np.ndarray, detected: np.ndarray) -> list[tuple[tuple[slice, slice], float]]:
    """Translucent dark boxes under groups of marks, each as (box, the share ``k``
    of light the box lets through); ``k`` is 0 for a box too dark to undarken.

    Readouts are often printed on a box that darkens the anatomy under it to
    ``k`` times itself (black at an opacity of ``1 - k``). Over dark tissue the
    detector finds the text, and often the box's border, but not the box, and the
    repair leaves a dark box behind. A box is taken when every side of a group of
    marks is accounted for: a straight edge across which the known pixels step
    down to ``k`` times their neighbours outside, or, where no such edge shows,
    black or the box's border among the detections. At least one side must be
    such an edge and all edges must agree on ``k``. A side without an edge is
    then moved in past every line that is not darkened, judged across the edges
    found or against the line beyond it; a line that cannot be judged drops the
    box, unless it lies among the group's own lines (a box holds its text).
    Inside the box the anatomy is the input divided by ``k``, which keeps its
    texture. Below ``VEIL_MIN`` that would multiply the rounding by ``1 / k``: a
    box with an edge on every side is then repainted whole (``k`` = 0), and one
    without is left alone.
    """
    if not detected.any():
        return []
    h, w = detected.shape
    joined = cv2.dilate(detected.view(np.uint8), _square(VEIL_JOIN))
    _, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    # Each group's own extent (the dilation undone): y0, y1, x0, x1.
    extents = [
        (
            y + VEIL_JOIN,
            min(y + bh - VEIL_JOIN, h) - 1,
            x + VEIL_JOIN,
            min(x + bw - VEIL_JOIN, w) - 1,
        )
        for x, y, bw, bh, _ in stats[1:]
    ]
    extents = [e for e in extents if min(e[1] - e[0], e[3] - e[2]) >= VEIL_SPAN]
    if not extents or len(extents) > VEIL_GROUPS:
        # (More: marks all over the image, not a few readouts.)
        return []
    # Work in the box the searches can reach (edges up to VEIL_REACH + 1 px beyond a
    # group, and 3 px either side of an edge).
    reach = VEIL_REACH + 5
    top, left = (
        max(min(e[0] for e in extents) - reach, 0),
        max(min(e[2] for e in extents) - reach, 0),
    )
    crop = (
        slice(top, min(max(e[1] for e in extents) + reach + 1, h)),
        slice(left, min(max(e[3] for e in extents) + reach + 1, w)),
    )
    extents = [(y0 - top, y1 - top, x0 - left, x1 - left) for y0, y1, x0, x1 in extents]
    sub, found = np.ascontiguousarray(net[crop]), np.ascontiguousarray(detected[crop])
    if sub.shape[-1] == 3:
        light = cv2.transform(sub, np.full((1, 3), 1 / 3, np.float32))
    else:
        light = sub[..., 0]
    known = ~cv2.dilate(found.view(np.uint8), _square(1)).view(bool)
    free = ~found
    veils = []
    for extent in extents:
        sides = []
        for s in range(4):
            sides.append(_veil_edge(light, known, s, extent))
            if sides[-1] is None:
                break
        if sides[-1] is None:
            continue
        ratios = np.array([r for _, r in sides if r is not None])
        if not len(ratios):
            continue
        k = float(np.median(ratios))
        if np.abs(ratios - k).max() > VEIL_AGREE:
            continue
        edges = [edge for edge, _ in sides]
        if k < VEIL_MIN:
            # Too dark to undarken (the rounding would be multiplied by 1 / k): a
            # box with an edge on every side is repainted whole instead.
            if len(ratios) < 4:
                continue
            k = 0.0
        steps = [r is not None for _, r in sides]
        for s in range(4):
            if not steps[s]:
                edges[s] = _veil_trim(light, free, s, edges, steps, extent, k)
                if edges[s] is None:
                    break
        y0, y1, x0, x1 = edges
        if None not in edges and y0 < y1 and x0 < x1:
            veils.append(((slice(top + y0, top + y1 + 1), slice(left + x0, left + x1 + 1)), k))
    return veils


def _oriented(arrays: tuple[np.ndarray, ...], side: int) -> tuple[tuple[np.ndarray, ...], int]:
    """``arrays`` turned so that ``side`` (0 top, 1 bottom, 2 left, 3 right) is a
    row, and the step from that side outwards (-1 or 1)."""
    if side >= 2:
        arrays = tuple(a.T for a in arrays)
    return arrays, (-1 if side in (0, 2) else 1)


def _veil_edge(
    light: np.ndarray, known: np.ndarray, side: int, extent: tuple[int, int, int, int]
) -> tuple[int, float | None] | None:
    """(the box's last row or column on ``side`` of a group, the ratio across its
    edge), the ratio ``None`` where black or detections end the side instead, or
    ``None`` when nothing does (see ``_veils``). ``extent``: y0, y1, x0, x1."""
    (light, known), out = _oriented((light, known), side)
    start = extent[side]
    lo, hi = extent[2:] if side < 2 else extent[:2]
    span = slice(lo, hi + 1)
    # Every line out to VEIL_REACH px at once (lines whose outer neighbour is in
    # the image): inner line, the line beyond it, which pairs are known.
    lines = start + out * np.arange(
        min(VEIL_REACH + 1, start if out < 0 else len(light) - 1 - start)
    )
    a, b = light[lines, span], light[lines + out, span]
    usable = known[lines, span] & known[lines + out, span]
    used = usable.sum(axis=1)
    black = (usable & (a <= VEIL_BLACK) & (b <= VEIL_BLACK)).sum(axis=1) > 0.9 * used
    lit = usable & (b >= VEIL_FLOOR)
    bright = lit.sum(axis=1)
    k = _row_medians(a / np.where(lit, b, 1), lit)
    fits = lit & (np.abs(a - k[:, None] * b) <= np.maximum(VEIL_SLACK, VEIL_SPREAD * b))
    fits = fits.sum(axis=1)
    first_black = None
    for i, line in enumerate(lines):
        if used[i] < max(VEIL_SPAN, a.shape[1] // 2):
            continue
        if first_black is None and black[i]:
            first_black = int(line)  # the box may end anywhere in black; an edge beyond counts
        elif (
            bright[i] >= max(VEIL_SPAN, used[i] // 2)
            and k[i] <= VEIL_MAX
            and fits[i] >= VEIL_FIT * bright[i]
        ):
            return int(line), float(k[i])
    if first_black is not None:
        return first_black, None
    rim = ~known[min(start, start - 2 * out) : max(start, start - 2 * out) + 1, span]
    if rim.any(axis=0).mean() >= VEIL_HUG:
        return start, None  # the box's border is among the detections
    return None


def _row_medians(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The median of each row of ``values`` over ``mask`` (NaN for an empty row):
    one sort for all rows, twenty times faster than a median a row."""
    count = mask.sum(axis=1)
    ordered = np.sort(np.where(mask, values, np.inf), axis=1)
    rows = np.arange(len(values))
    last = np.maximum(count - 1, 0)
    middle = 0.5 * (ordered[rows, last // 2] + ordered[rows, last - last // 2])
    return np.where(count > 0, middle, np.nan)


def _veil_trim(
    light: np.ndarray,
    free: np.ndarray,
    side: int,
    edges: list[int],
    steps: list[bool],
    extent: tuple[int, int, int, int],
    k: float,
) -> int | None:
    """The edge on ``side`` of a box whose other edges are ``edges`` (``steps``:
    found by their step), moved in to the first line (row or column) that is
    darkened; ``None`` when a line on the way cannot be judged.

    A line is judged across the edges found at its two ends (just inside them
    against just outside), or else against the line beyond ``edges[side]``.
    Black lines and lines of detections alone are passed over: they come out
    the same either way. A line that cannot be judged is taken for the box's
    when it lies within the group's ``extent`` (the box holds its text), else
    it drops the box. ``free``: pixels not detected.
    """
    (light, free), out = _oriented((light, free), side)
    n = light.shape[1]
    ends = (2, 3) if side < 2 else (0, 1)
    beyond = edges[side] + out
    outside = light[beyond] if 0 <= beyond < light.shape[0] else None
    last = edges[side ^ 1]  # the opposite edge
    span = slice(edges[ends[0]], edges[ends[1]] + 1)
    for line in range(edges[side], last - out, -out):
        row, ok = light[line], free[line]
        if ok[span].sum() < 4 or np.median(row[span][ok[span]]) <= VEIL_BLACK:
            continue
        inner, outer = [], []
        for end, sign in zip(ends, (1, -1)):
            if steps[end]:  # 3 px either side of that edge, along this line
                c = edges[end]
                for near, far in ((c, c + 3 * sign), (c - sign, c - 4 * sign)):
                    cols = np.arange(near, far, 1 if far > near else -1)
                    cols = cols[(cols >= 0) & (cols < n)]
                    (inner if near == c else outer).append(row[cols][ok[cols]])
        inner = np.concatenate([np.empty(0, row.dtype), *inner])
        outer = np.concatenate([np.empty(0, row.dtype), *outer])
        lit = ok[span] & (outside[span] >= VEIL_FLOOR) if outside is not None else None
        if len(inner) >= 2 and len(outer) >= 2 and np.median(outer) >= VEIL_FLOOR:
            ratio = np.median(inner) / np.median(outer)
        elif lit is not None and lit.sum() >= 4:
            ratio = np.median(row[span][lit] / outside[span][lit])
        elif (line - extent[side]) * out <= 0:
            return line  # no judging it, but among the marks' lines: inside the box
        else:
            return None
        if ratio <= (1 + k) / 2:
            return line
    return None


def _grey_scan(color: np.ndarray, mask: np.ndarray) -> bool:
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
    tolerance = 3 * (257 if color.dtype == np.uint16 else 1)
    return bool(np.percentile(spread, 99) <= tolerance)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    return float(differs(a, b).mean())


def _crops(detected: np.ndarray) -> list[tuple[tuple[slice, slice], np.ndarray]]:
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


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets covering ``length`` with at least ``overlap`` between tiles."""
    if length <= tile:
        return [0]
    n = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


def _gaussian(h: int, w: int) -> np.ndarray:
    """Blending weights peaking at the tile centre (sigma = 1/8 of the side, as nnU-Net)."""
    gy = np.exp(-0.5 * ((np.arange(h) - (h - 1) / 2) / max(h / 8, 1)) ** 2)
    gx = np.exp(-0.5 * ((np.arange(w) - (w - 1) / 2) / max(w / 8, 1)) ** 2)
    weight = np.outer(gy, gx).astype(np.float32)
    return np.maximum(weight, 1e-3)  # edges keep a little weight: no division by zero


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HxWxC float to (height, width), keeping the channel axis."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out
