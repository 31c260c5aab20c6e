"""Augmentations and crops that keep anatomy plausible.

Ultrasound is never upside down (the probe is at the top), so flips are
left-right only; scale, gain and gamma stay within what scanners produce.
Geometric changes are applied to the clean scan *before* annotations are
drawn, so text is never mirrored.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from annot_denoise.io import from_float, to_float


def augment_scan(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Random left-right flip, scale (0.8-1.25), gain (0.8-1.2), gamma (0.8-1.25)."""
    params = {
        "flip": bool(rng.random() < 0.5),
        "scale": float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
        "gain": float(rng.uniform(0.8, 1.2)),
        "gamma": float(np.exp(rng.uniform(np.log(0.8), np.log(1.25)))),
    }
    out = image[:, ::-1] if params["flip"] else image
    h, w = out.shape[:2]
    size = (max(1, round(w * params["scale"])), max(1, round(h * params["scale"])))
    interp = cv2.INTER_AREA if params["scale"] < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(np.ascontiguousarray(out), size, interpolation=interp)
    if resized.ndim == 2 and out.ndim == 3:
        resized = resized[..., None]
    # Gain and gamma through a lookup table: one pass over the pixels.
    levels = np.arange(np.iinfo(image.dtype).max + 1, dtype=image.dtype)
    table = from_float(np.power(np.clip(to_float(levels) * params["gain"], 0, 1), params["gamma"]),
                       image.dtype)  # fmt: skip
    if image.dtype == np.uint8:  # OpenCV's lookup is several times numpy's indexing
        return cv2.LUT(resized, table).reshape(resized.shape), params
    return table[resized], params


def crop_box(
    shape: Sequence[int],
    patch: int,
    rng: np.random.Generator,
    mask: np.ndarray | None = None,
    focus: float = 0.8,
) -> tuple[int, int]:
    """Top-left corner of a ``patch`` square; with probability ``focus`` it holds a
    random annotated pixel (annotations cover a few percent of a scan, and a crop
    without any teaches nothing about removing them)."""
    h, w = shape[:2]
    max_y, max_x = max(h - patch, 0), max(w - patch, 0)
    if mask is not None and rng.random() < focus:
        ys, xs = np.nonzero(mask)
        if len(ys):
            i = int(rng.integers(len(ys)))
            y = int(np.clip(ys[i] - rng.integers(patch), 0, max_y))
            x = int(np.clip(xs[i] - rng.integers(patch), 0, max_x))
            return y, x
    return int(rng.integers(max_y + 1)), int(rng.integers(max_x + 1))


def crop(arrays: Sequence[np.ndarray], y: int, x: int, patch: int) -> list[np.ndarray]:
    """Cut the same square from every array, zero-padding images smaller than it."""
    out = []
    for a in arrays:
        piece = a[y : y + patch, x : x + patch]
        ph, pw = patch - piece.shape[0], patch - piece.shape[1]
        if ph or pw:
            pad = [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2)
            piece = np.pad(piece, pad)
        out.append(piece)
    return out


def window(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A ``side`` x ``side`` view of ``image`` around a random non-black pixel
    (the scan's content, not the black margin); small images come back whole."""
    return image[window_at(image, side, rng)]


def window_at(
    image: np.ndarray, side: int, rng: np.random.Generator, around: np.ndarray | None = None
) -> tuple[slice, slice]:
    """Where :func:`window` cuts ``image``, for cutting other arrays the same way; with
    ``around`` (bool HxW, not empty), centred on one of its pixels instead."""
    h, w = image.shape[:2]
    if h <= side and w <= side:
        return slice(0, h), slice(0, w)
    if around is not None:
        ys, xs = np.nonzero(around)
        if not len(ys):
            raise ValueError("window_at: 'around' holds no pixel to centre on")
        i = int(rng.integers(len(ys)))
        cy, cx = int(ys[i]), int(xs[i])
    else:
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        for _ in range(8):  # a few tries find the content of any real scan
            y, x = int(rng.integers(h)), int(rng.integers(w))
            if np.any(image[y, x] > 0):
                cy, cx = y, x
                break
    y0 = int(np.clip(cy - side // 2, 0, max(h - side, 0)))
    x0 = int(np.clip(cx - side // 2, 0, max(w - side, 0)))
    return slice(y0, y0 + side), slice(x0, x0 + side)
