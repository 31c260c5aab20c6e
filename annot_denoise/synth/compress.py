"""JPEG re-compression of drawn pairs, as real exports are compressed after marks are burned in.

``jpeg_roundtrip`` encodes and decodes one image in memory (Pillow's libjpeg, 4:2:0
chroma subsampling for colour, the way most exports are written); the pipeline sends the
clean and the annotated image of a pair through it at the same quality. JPEG holds 8 bits
per channel: 16-bit and float scans come back on the 8-bit grid, in their own dtype.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from annot_denoise.io import merge_alpha, split_alpha

JpegQuality = int | tuple[int, int] | None
# Differences up to this many 8-bit levels between a compressed pair are compression
# noise, not part of a mark; the benches count "changed" from the same 2 levels on.
JPEG_TOLERANCE = 2


def check_jpeg_quality(spec: object) -> int | tuple[int, int] | None:
    """``spec`` as None, one quality or an inclusive (lo, hi) range, all in 1..100.

    Accepts the forms a config or command line gives: ``None``, ``85``, ``[70, 95]``,
    ``"85"`` or ``"70-95"``. Raises ValueError naming the value otherwise.
    """
    if spec is None:
        return None
    value: object = spec
    if isinstance(spec, str):
        parts = spec.replace(" ", "").split("-")
        if not 1 <= len(parts) <= 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"JPEG quality {spec!r}: give a number or a range like 70-95")
        value = int(parts[0]) if len(parts) == 1 else (int(parts[0]), int(parts[1]))
    if isinstance(value, bool):
        raise ValueError(f"JPEG quality {spec!r}: give a number 1-100 or a range lo-hi")
    if isinstance(value, (int, np.integer)):
        value = int(value)
        if not 1 <= value <= 100:
            raise ValueError(f"JPEG quality {value} is outside 1-100")
        return value
    if isinstance(value, Sequence) and len(value) == 2:
        lo, hi = (check_jpeg_quality(v) for v in value)
        if lo is None or hi is None or isinstance(lo, tuple) or isinstance(hi, tuple) or lo > hi:
            raise ValueError(f"JPEG quality range {spec!r}: give lo-hi with 1 <= lo <= hi <= 100")
        return lo, hi
    raise ValueError(f"JPEG quality {spec!r}: give a number 1-100 or a range lo-hi")


def draw_quality(spec: JpegQuality, rng: np.random.Generator) -> int | None:
    """The quality for one pair: ``spec`` itself, or uniform over a (lo, hi) range."""
    spec = check_jpeg_quality(spec)
    if isinstance(spec, tuple):
        return int(rng.integers(spec[0], spec[1], endpoint=True))
    return spec


def _to_u8(color: np.ndarray) -> np.ndarray:
    if color.dtype == np.uint8:
        return color
    if color.dtype == np.uint16:
        return ((color.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return np.round(np.clip(color, 0.0, 1.0) * 255).astype(np.uint8)


def _from_u8(color: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype == np.uint8:
        return color
    if dtype == np.uint16:
        return color.astype(np.uint16) * 257
    return (color.astype(np.float64) / 255.0).astype(dtype)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` encoded as JPEG at ``quality`` and decoded again; alpha is kept as it was."""
    color, alpha = split_alpha(image)
    grey = color.ndim == 2 or color.shape[2] == 1
    pixels = _to_u8(color[..., 0] if color.ndim == 3 and grey else color)
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels), "L" if grey else "RGB").save(
        buffer, "JPEG", quality=int(quality)
    )
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("L" if grey else "RGB"))
    return merge_alpha(_from_u8(decoded, color.dtype).reshape(color.shape), alpha)


def jpeg_changed(a: np.ndarray, b: np.ndarray, tolerance: int = JPEG_TOLERANCE) -> np.ndarray:
    """HxW bool: where any colour channel of ``a`` and ``b`` differs by more than
    ``tolerance`` 8-bit levels (scaled to uint16 and float data); alpha is ignored."""
    ca, cb = split_alpha(a)[0], split_alpha(b)[0]
    if ca.dtype == np.uint16:
        limit = tolerance * 257
    elif np.issubdtype(ca.dtype, np.floating):
        limit = (tolerance + 0.5) / 255.0  # decoded floats sit on the 1/255 grid
    else:
        limit = tolerance
    wide = np.float64 if np.issubdtype(ca.dtype, np.floating) else np.int32
    diff = np.abs(ca.astype(wide) - cb.astype(wide))
    return (diff.max(axis=2) if diff.ndim == 3 else diff) > limit
