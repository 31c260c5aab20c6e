"""Non-learned methods that every evaluation reports beside the model.

``identity`` changes nothing (the floor any method must beat inside the mask);
``telea`` is OpenCV's fast-marching inpainting given the *true* mask, an oracle
that no blind method gets, so beating it means the network restores better
than classical inpainting even after being told where the marks are.
"""

from __future__ import annotations

import cv2
import numpy as np

from annot_denoise.io import merge_alpha, split_alpha


def identity(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return image.copy()


def telea(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """Inpaint ``mask`` (HxW bool) with Telea's method; any dtype and layout."""
    color, alpha = split_alpha(image)
    m = mask.astype(np.uint8) * 255
    if color.dtype == np.uint8 and (color.ndim == 2 or color.shape[2] == 3):
        out = cv2.inpaint(color, m, radius, cv2.INPAINT_TELEA)
    else:
        # OpenCV inpaints 16-bit data one channel at a time only.
        planes = [color] if color.ndim == 2 else [color[..., c] for c in range(color.shape[2])]
        done = [cv2.inpaint(np.ascontiguousarray(p), m, radius, cv2.INPAINT_TELEA) for p in planes]
        out = done[0] if color.ndim == 2 else np.stack(done, axis=2)
    return merge_alpha(out, alpha)


BASELINES = {"identity": identity, "telea": telea}
