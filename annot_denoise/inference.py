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
input. What comes back always has the input's size, channels, alpha and bit depth.
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


@dataclass
class Restored:
    image: np.ndarray  # same size, channels, alpha and dtype as the input
    mask: np.ndarray | None  # bool HxW: where a mask-aware model was allowed to write
    changed: float  # fraction of pixels that differ from the input
    detected: np.ndarray | None = None  # bool HxW: the thresholded mask before dilation


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
    ) -> None:
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.channels = channels
        self.device = device
        self.size = (int(size[0]), int(size[1])) if size else None
        self.dtype = amp_dtype(device, amp)
        self.threshold, self.dilate = threshold, dilate
        self.tile, self.batch_size = tile, batch_size
        self.residual = bool(getattr(model, "residual", False))
        self.predicts_mask = bool(getattr(model, "predicts_mask", False))

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
        )

    def restore(self, images: Sequence[np.ndarray]) -> list[Restored]:
        """Clean a batch of images (any sizes, dtypes and channel layouts)."""
        nets = [self._network_input(img) for img in images]
        if self.size is not None:
            preds = self._predict_resized(nets)
        else:
            preds = [self._predict_native(net) for net in nets]
        return [self._finish(img, net, p) for img, net, p in zip(images, nets, preds)]

    # ------------------------------------------------------------------ prediction

    def _network_input(self, image: np.ndarray) -> np.ndarray:
        color, _ = split_alpha(image)
        net = to_float(to_rgb(color) if self.channels == 3 else to_grey(color))
        return net[..., None] if net.ndim == 2 else net

    def _forward(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """B x h x w x C floats -> numpy outputs (``output``, ``content``, ``prob``)."""
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).to(self.device)
        x = x.contiguous(memory_format=torch.channels_last)
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
        tile = self.tile
        while True:
            try:
                if net.shape[0] <= tile and net.shape[1] <= tile:
                    out = self._forward(net[None])
                    return {k: v[0] for k, v in out.items()}
                return self._predict_tiled(net, tile)
            except torch.cuda.OutOfMemoryError:
                if tile <= 128:
                    raise
                torch.cuda.empty_cache()
                tile //= 2
                log.warning("out of GPU memory; retrying with %dx%d tiles", tile, tile)

    def _predict_tiled(self, net: np.ndarray, tile: int) -> dict[str, np.ndarray]:
        """Overlapping tiles (a quarter of a tile), blended with Gaussian weights."""
        h, w, c = net.shape
        overlap = tile // 4
        ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
        weight = _gaussian(min(tile, h), min(tile, w))
        acc = {"main": np.zeros((h, w, c), np.float32)}
        acc.update(prob=np.zeros((h, w), np.float32), hole=np.zeros((h, w), np.float32))
        total = np.zeros((h, w), np.float32)
        boxes = [(y, x) for y in ys for x in xs]
        th, tw = weight.shape
        for start in range(0, len(boxes), self.batch_size):
            chunk = boxes[start : start + self.batch_size]
            out = self._forward(np.stack([net[y : y + th, x : x + tw] for y, x in chunk]))
            main = out["content"] if "content" in out else out["output"]
            for i, (y, x) in enumerate(chunk):
                acc["main"][y : y + th, x : x + tw] += main[i] * weight[..., None]
                for key in ("prob", "hole"):
                    if key in out:
                        acc[key][y : y + th, x : x + tw] += out[key][i] * weight
                total[y : y + th, x : x + tw] += weight
        main = acc["main"] / total[..., None]
        if self.predicts_mask:
            return {"content": main, "prob": acc["prob"] / total, "hole": acc["hole"] / total}
        return {"output": main}

    # ------------------------------------------------------------------ writing back

    def _finish(self, image: np.ndarray, net: np.ndarray, pred: dict) -> Restored:
        color, alpha = split_alpha(image)
        if not self.predicts_mask:
            restored = merge_alpha(_to_layout(pred["output"], color), alpha)
            return Restored(restored, None, _changed(image, restored))
        detected = pred["prob"] > self.threshold
        if "hole" in pred:
            # The network's own hole: the detection plus the fringe it grew into.
            hard = pred["hole"] > 0.5
        else:
            kernel = np.ones((2 * self.dilate + 1,) * 2, np.uint8)
            hard = cv2.dilate(detected.view(np.uint8), kernel).astype(bool)
        out = color.copy()
        if hard.any():
            # Inside the mask the content head is written as is: it is trained to
            # give the clean scan on the annotation and around it (see losses).
            values = pred["content"][hard]
            if values.shape[-1] == 3 and _grey_scan(color, hard):
                # Grey anatomy stored as RGB (most ultrasound): what lies under a
                # coloured mark is grey too, so no tint may leak into the repair.
                values = np.repeat((values @ LUMA)[:, None], 3, axis=1)
            out[hard] = _to_layout(values[:, None], color[hard][:, None])[:, 0]
        restored = merge_alpha(out, alpha)
        return Restored(restored, hard, _changed(image, restored), detected)


def _to_layout(values: np.ndarray, like: np.ndarray) -> np.ndarray:
    """Network-layout floats (...xC) -> integers in ``like``'s layout and dtype."""
    if like.ndim == values.ndim - 1 and values.shape[-1] == 3:  # grey file, RGB network
        values = values @ LUMA
    elif like.ndim == values.ndim - 1:  # grey file, grey network
        values = values[..., 0]
    elif values.shape[-1] == 1:  # colour file, grey network
        values = np.repeat(values, like.shape[-1], axis=-1)
    return from_float(values, like.dtype)


def _grey_scan(color: np.ndarray, mask: np.ndarray) -> bool:
    """True when every pixel outside ``mask`` has R == G == B (within JPEG noise)."""
    if color.ndim != 3:
        return False
    outside = color[~mask].astype(np.int32)
    if not len(outside):
        return False
    spread = outside.max(axis=1) - outside.min(axis=1)
    tolerance = 3 * (257 if color.dtype == np.uint16 else 1)
    return bool(np.percentile(spread, 99) <= tolerance)


def _changed(a: np.ndarray, b: np.ndarray) -> float:
    return float(differs(a, b).mean())


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
