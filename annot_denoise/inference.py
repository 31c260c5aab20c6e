"""Run a trained network on whole images and hand back images of the same kind.

The network works at the size it was trained at; what comes back has the
input's size, channel count, alpha channel and bit depth. Networks that
predict a residual (``model.residual``) have only their *correction* resized
back to full resolution and added to the untouched input, so fine detail that
needs no correction keeps its native resolution. The reference autoencoder,
which repaints the whole image, has its output resized back as the thesis did.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import nn

from annot_denoise.io import from_float, merge_alpha, split_alpha, to_float, to_grey, to_rgb
from annot_denoise.runtime import amp_dtype, autocast


class Restorer:
    """A model plus everything needed to apply it to raw image arrays."""

    def __init__(
        self,
        model: nn.Module,
        *,
        size: Sequence[int],
        channels: int,
        device: torch.device,
        amp: bool = True,
    ) -> None:
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        self.size = (int(size[0]), int(size[1]))
        self.channels = channels
        self.device = device
        self.dtype = amp_dtype(device, amp)
        self.residual = bool(getattr(model, "residual", False))

    @classmethod
    def from_checkpoint(cls, model: nn.Module, ckpt: dict, device: torch.device, amp: bool = True):
        data = ckpt["data"]
        return cls(model, size=data["size"], channels=data["channels"], device=device, amp=amp)

    def restore(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Clean a batch of images (any sizes, dtypes and channel layouts)."""
        if not images:
            return []
        prepared = [self._prepare(img) for img in images]
        small = np.stack([p[1] for p in prepared])  # B x h x w x C at the network size
        batch = torch.from_numpy(small).permute(0, 3, 1, 2).to(self.device)
        batch = batch.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            with autocast(self.device, self.dtype):
                out = self.model(batch)
            out = out.float().clamp_(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        return [self._finish(img, p, o) for img, p, o in zip(images, prepared, out)]

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        color, _ = split_alpha(image)
        net = to_float(to_rgb(color) if self.channels == 3 else to_grey(color))
        if net.ndim == 2:
            net = net[..., None]
        return net, _resize(net, self.size)

    def _finish(
        self, image: np.ndarray, prepared: tuple[np.ndarray, np.ndarray], out: np.ndarray
    ) -> np.ndarray:
        full, small = prepared
        native = full.shape[:2]
        if self.residual:
            restored = full + _resize(out - small, native)
        else:
            restored = _resize(out, native)
        color, alpha = split_alpha(image)
        if color.ndim == 2 and restored.shape[2] == 3:
            restored = restored @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        elif color.ndim == 3 and restored.shape[2] == 1:
            restored = np.repeat(restored, 3, axis=2)
        elif restored.shape[2] == 1:
            restored = restored[..., 0]
        return merge_alpha(from_float(restored, image.dtype), alpha)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HxWxC float to (height, width), keeping the channel axis."""
    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return out[..., None] if out.ndim == 2 else out
