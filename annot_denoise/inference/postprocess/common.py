"""Definitions and helpers the post-processing steps share.

What counts as flat (``FLAT_TOLERANCE``), as colour (``CHROMA``) and as a colour
scan (``COLOUR_SHARE``) is one definition for every step that asks; each step's
own constants live in its config.
"""

from __future__ import annotations

import cv2
import numpy as np

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Two values within this many 8-bit levels (per channel) are the same flat value.
FLAT_TOLERANCE = 2
# Colour on a grey scan: an R, G, B spread above CHROMA (4 of 255 levels, above
# JPEG's rounding) is colour; above COLOUR_SHARE of the pixels it is a colour scan.
CHROMA = 4 / 255
COLOUR_SHARE = 0.05
TELEA_RADIUS = 3  # px: OpenCV's Telea reads this far from each pixel it fills


def border_value(color: np.ndarray) -> np.ndarray | None:
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


def near_value(color: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Where every channel of ``color`` is within ``FLAT_TOLERANCE`` of ``value``."""
    return np.logical_and.reduce(within(color, value))


def within(color: np.ndarray, value: np.ndarray) -> list[np.ndarray]:
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


def coloured(net: np.ndarray) -> np.ndarray:
    """Where an RGB float image's channels spread by more than ``CHROMA``."""
    # OpenCV's per-channel max/min: ten times numpy's reductions over a 3-long axis.
    r, g, b = cv2.split(np.ascontiguousarray(net, np.float32))
    return cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b)) > CHROMA


def square(reach: int) -> np.ndarray:
    """A square structuring element reaching ``reach`` px from its centre."""
    return np.ones((2 * reach + 1,) * 2, np.uint8)


def box_around(mask: np.ndarray, reach: int = 0) -> tuple[slice, slice]:
    """The box of ``mask``'s True pixels (there must be one), grown by ``reach``
    px and kept inside the image."""
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    h, w = mask.shape
    return (
        slice(max(ys[0] - reach, 0), min(ys[-1] + reach + 1, h)),
        slice(max(xs[0] - reach, 0), min(xs[-1] + reach + 1, w)),
    )


def both_ends(
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


def with_telea(
    net: np.ndarray,
    hole: np.ndarray,
    content: np.ndarray,
    share: float,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """``content`` (H x W x C) with ``share`` of Telea's fill of ``hole`` mixed
    in, in ``where`` (by default the whole hole).
    ``content`` is changed in place (on a 4000x4000 scan a copy is 190 MB) and
    returned."""
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
