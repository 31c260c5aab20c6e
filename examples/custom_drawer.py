"""An example custom drawer: a vendor's "distance" readout with a bracket.

Use it with::

    annot-denoise synth scans/ data/ --drawer custom_drawer:draw

(with this folder on PYTHONPATH, e.g. ``PYTHONPATH=examples``), or put your own
function in any importable module and pass ``my_pkg.my_module:my_function``.

The contract: ``draw(image, rng) -> mask``. ``image`` is an HxW (grey) or
HxWx3/HxWx4 (RGB/RGBA) uint8 or uint16 array: draw on it in place. ``rng`` is a
``numpy.random.Generator``: take every random choice from it, so the same seed
gives the same bytes. Return the boolean HxW mask of what you meant to draw;
the pipeline records the exact mask from the pixels that really changed.
"""

from __future__ import annotations

import cv2
import numpy as np


def draw(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    top = 65535 if image.dtype == np.uint16 else 255
    channels = 1 if image.ndim == 2 else image.shape[2]
    # Yellow on colour scans, white on grey ones; alpha (a 4th channel) stays opaque.
    color = (top, top, 0, top)[:channels] if channels >= 3 else (top,) * channels

    layer = np.zeros((h, w), np.uint8)  # what we draw, as coverage
    x0, y0 = (
        int(rng.integers(0, max(w // 2, 1))),
        int(rng.integers(h // 4, max(h // 4 + 1, h - 10))),
    )
    length = int(rng.integers(max(w // 8, 4), max(w // 3, 5)))
    cv2.line(layer, (x0, y0), (x0 + length, y0), 255, 1)
    for x in (x0, x0 + length):
        cv2.line(layer, (x, y0 - 4), (x, y0 + 4), 255, 1)
    label = f"Dist {rng.uniform(0.5, 9.9):.2f} cm"
    cv2.putText(layer, label, (x0, max(y0 - 8, 10)), cv2.FONT_HERSHEY_PLAIN, 0.9, 255, 1)

    mask = layer > 0
    image[mask] = color if channels > 1 else color[0]
    return mask
