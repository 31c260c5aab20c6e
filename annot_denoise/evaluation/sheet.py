"""Contact sheets: grids of small images for a person to look at."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from annot_denoise.io import to_rgb


def as_display(image: np.ndarray) -> np.ndarray:
    """Any of our arrays (bool mask, grey, RGB(A), 8/16-bit, float) as 8-bit RGB."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype.kind == "f":
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    return np.ascontiguousarray(to_rgb(image))


def thumbnail(image: np.ndarray, max_side: int = 256) -> np.ndarray:
    """A small 8-bit RGB copy (keeps memory flat when sheets are built from huge scans)."""
    shown = as_display(image)
    h, w = shown.shape[:2]
    scale = max_side / max(h, w)
    if scale < 1:
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        shown = cv2.resize(shown, size, interpolation=cv2.INTER_AREA)
    return shown


def contact_sheet(
    rows: Sequence[Sequence[np.ndarray]],
    *,
    labels: Sequence[str] | None = None,
    tile_height: int = 160,
    gap: int = 4,
) -> np.ndarray:
    """Lay ``rows`` of images out as a grid (each scaled to ``tile_height``)."""
    rendered = []
    for row in rows:
        tiles = []
        for img in row:
            img = as_display(img)
            h, w = img.shape[:2]
            width = max(1, round(w * tile_height / h))
            tiles.append(cv2.resize(img, (width, tile_height), interpolation=cv2.INTER_AREA))
        spacer = np.zeros((tile_height, gap, 3), np.uint8)
        parts = [t for tile in tiles for t in (tile, spacer)][:-1]
        rendered.append(np.concatenate(parts, axis=1))
    width = max(r.shape[1] for r in rendered)
    padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0))) for r in rendered]
    sheet = np.concatenate(padded, axis=0)
    if labels:
        header = np.zeros((22, width, 3), np.uint8)
        x = 4
        tile_w = rendered[0].shape[1] // max(len(rows[0]), 1)
        for label in labels:
            cv2.putText(
                header,
                label,
                (x, 16),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
            x += tile_w
        sheet = np.concatenate([header, sheet], axis=0)
    return sheet
