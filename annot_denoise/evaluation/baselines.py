"""Non-learned methods that every evaluation reports beside the model.

Each takes ``(image, true_mask)`` and returns ``(output, predicted_mask | None)``.

- ``identity`` changes nothing: the floor any method must beat inside the mask.
- ``telea`` is OpenCV's fast-marching inpainting *given the true mask*: an oracle
  no blind method has, so beating it means the network restores better than
  classical inpainting even after that is told where the marks are.
- ``classical`` is the blind pipeline published for ultrasound: find the marks by
  colour and by a morphological white top-hat (thin bright strokes), dilate, and
  inpaint with Telea. It needs no training and fails on marks that are neither
  coloured nor thin and bright.
"""

from __future__ import annotations

import cv2
import numpy as np

from annot_denoise.io import merge_alpha, split_alpha, to_float, to_rgb


def identity(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, None]:
    return image.copy(), None


def telea(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> tuple[np.ndarray, None]:
    """Inpaint the true ``mask`` (HxW bool) with Telea's method; any dtype and layout."""
    return inpaint(image, mask, radius), None


def classical(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Blind: detect marks by colour and top-hat, dilate by 1 px, inpaint with Telea.

    The mask returned (and scored) is the detection before the dilation, as for
    the learned models.
    """
    found = detect_marks(image)
    grown = cv2.dilate(found.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    return inpaint(image, grown), found


def detect_marks(image: np.ndarray) -> np.ndarray:
    """Boolean mask of likely annotation pixels, from colour and thin bright strokes."""
    rgb = to_float(to_rgb(split_alpha(image)[0]))
    grey = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.15
    # Strokes narrower than the kernel stand out of the white top-hat; anatomy
    # (broad bright regions) does not.
    side = min(image.shape[:2])
    k = max(5, (side // 40) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    tophat = cv2.morphologyEx(grey, cv2.MORPH_TOPHAT, kernel)
    bright = (tophat > 0.25) & (grey > 0.7)
    return coloured | bright


def inpaint(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """OpenCV Telea inpainting of ``mask`` for any of our layouts and dtypes."""
    color, alpha = split_alpha(image)
    if not mask.any():
        return image.copy()
    m = mask.astype(np.uint8) * 255
    if color.dtype == np.uint8 and (color.ndim == 2 or color.shape[2] == 3):
        out = cv2.inpaint(color, m, radius, cv2.INPAINT_TELEA)
    else:
        # OpenCV inpaints 16-bit data one channel at a time only.
        planes = [color] if color.ndim == 2 else [color[..., c] for c in range(color.shape[2])]
        done = [cv2.inpaint(np.ascontiguousarray(p), m, radius, cv2.INPAINT_TELEA) for p in planes]
        out = done[0] if color.ndim == 2 else np.stack(done, axis=2)
    return merge_alpha(out, alpha)


BASELINES = {"identity": identity, "telea": telea, "classical": classical}
