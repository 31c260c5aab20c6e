"""Colours, per-annotation styles and the one compositing step every drawer goes through.

Each annotation is first rendered as an 8-bit coverage canvas (0 = untouched, 255 = fully
painted) and only then blended into the scan with ``out = img * (1 - a) + colour * a``.
Doing it this way makes anti-aliasing, blurred strokes, semi-transparent boxes, grey/RGB/
RGBA images and uint8/uint16 data all behave the same, and the mask is simply
``coverage > 0``: a pixel outside it is never written.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

COLORS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "yellow": (255, 240, 0),
    "cyan": (80, 220, 255),
    "green": (60, 235, 60),
    "orange": (255, 165, 20),
    "red": (255, 50, 40),
    "magenta": (255, 60, 220),
    "grey": (185, 185, 185),
}
BLACK = (0, 0, 0)
# The colour option that samples a fresh colour per drawing instead of naming one.
SAMPLED = "sampled"
# Hue (degrees) of the colour families scanners draw marks in; white has no hue.
FAMILIES: dict[str, float | None] = {
    "yellow": 55.0,
    "cyan": 188.0,
    "green": 120.0,
    "white": None,
    "orange": 32.0,
    "magenta": 308.0,
}
_FAMILY_ODDS = (0.28, 0.2, 0.14, 0.2, 0.09, 0.09)

# cv2 drawing calls take fixed-point coordinates with this many fractional bits, so that
# anti-aliased strokes land at sub-pixel positions instead of snapping to the grid.
SHIFT = 4
_ONE = 1 << SHIFT


def pick(rng: np.random.Generator, options: Sequence, p: Sequence[float] | None = None):
    """One of ``options`` (any objects, unlike ``rng.choice``), optionally weighted by ``p``."""
    return options[int(rng.choice(len(options), p=p))]


def luminance(rgb: Sequence[float]) -> float:
    """ITU-R 601 luma of an RGB triple, the grey value a grey scanner would show."""
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def sample_color(
    rng: np.random.Generator, family: str | None = None
) -> tuple[str, tuple[int, int, int]]:
    """A mark colour drawn around one of ``FAMILIES``: (family, 8-bit RGB).

    Hue jitters about the family's hue; saturation spreads from pale (0.15) to full and
    value from 0.7 to 1, so washed-out, desaturated and slightly dark variants occur,
    as on screens exported through another monitor gamma or a lossy codec.
    """
    if family is None:
        family = pick(rng, tuple(FAMILIES), _FAMILY_ODDS)
    hue = FAMILIES[family]
    value = rng.uniform(0.7, 1.0)
    if hue is None:
        # White is near-neutral, sometimes faintly tinted, and often dimmed to 75-95%.
        hue, sat = rng.uniform(0.0, 360.0), rng.uniform(0.0, 0.12)
    else:
        hue = (hue + rng.normal(0.0, 6.0)) % 360.0
        # One drawing in three is pale: scanners blend marks or exports wash them out.
        sat = rng.uniform(0.15, 0.55) if rng.random() < 0.35 else rng.uniform(0.55, 1.0)
    rgb = colorsys.hsv_to_rgb(hue / 360.0, sat, value)
    return family, tuple(int(np.round(c * 255)) for c in rgb)


def is_grey(name: str) -> bool:
    """Whether a colour option only ever paints grey levels."""
    return name != SAMPLED and len(set(COLORS[name])) == 1


def check_color_names(colors: Sequence[str] | str) -> list[str]:
    """The colour options as a list, or a ValueError naming the unknown ones."""
    names = [colors] if isinstance(colors, str) else list(colors)
    unknown = [c for c in names if c not in COLORS and c != SAMPLED]
    if not names or unknown:
        choices = [*sorted(COLORS), SAMPLED]
        raise ValueError(f"unknown colours {unknown or names}; choose from {choices}")
    return names


def fixed(points: np.ndarray | Sequence[float]) -> np.ndarray:
    """Float pixel coordinates as int32 fixed point for cv2 calls made with ``shift=SHIFT``."""
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32)


def _color_planes(image: np.ndarray, color: np.ndarray) -> np.ndarray:
    """Colour as the value each painted channel of ``image`` should take (dtype scale)."""
    grey = image.ndim == 2 or image.shape[2] <= 2
    if grey:
        color = np.round(luminance(np.moveaxis(color, -1, 0)))[..., None]
    if image.dtype == np.uint16:
        return color.astype(np.float64) * 257.0
    if np.issubdtype(image.dtype, np.floating):
        return color.astype(np.float64) / 255.0
    return color.astype(np.float64)


def composite(image: np.ndarray, alpha: np.ndarray, color: Sequence[int] | np.ndarray) -> None:
    """Blend ``color`` into ``image`` in place with 8-bit coverage ``alpha`` (HxW uint8).

    ``color`` is one 8-bit RGB triple or an HxWx3 uint8 array (one colour per pixel).
    Grey images receive the colour's luminance; alpha channels (2nd of 2, 4th of 4) are
    left untouched. Where ``alpha`` is 0 the pixel keeps its exact value.
    """
    if alpha.size == 0:
        return
    painted = image if image.ndim == 2 else image[..., : 1 if image.shape[2] <= 2 else 3]
    col = _color_planes(image, np.asarray(color))
    if image.ndim == 2:
        col = col[..., 0]
    a = alpha.astype(np.uint32)
    if np.issubdtype(image.dtype, np.floating):
        af = alpha.astype(np.float64) / 255.0
        if image.ndim == 3:
            af = af[..., None]
        painted[...] = np.where(af > 0, painted * (1.0 - af) + col * af, painted)
        return
    if image.ndim == 3:
        a = a[..., None]
    # Integer blend with round-half-up: alpha 0 reproduces the input bit for bit, alpha 255
    # gives the colour exactly, and uint16 * 255 still fits in uint32.
    col_i = np.round(col).astype(np.uint32)
    out = (painted.astype(np.uint32) * (255 - a) + col_i * a + 127) // 255
    painted[...] = out.astype(image.dtype)


def check_image(image: np.ndarray) -> None:
    """Raise a clear error for arrays the drawers cannot paint on."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 2, 3, 4)):
        raise ValueError(f"image must be HxW or HxWxC with C in 1..4, got shape {image.shape}")
    if image.dtype not in (np.uint8, np.uint16) and not np.issubdtype(image.dtype, np.floating):
        raise TypeError(f"image dtype must be uint8, uint16 or float, got {image.dtype}")


class Painter:
    """Composites coverage layers onto one image, in order, and keeps their union mask."""

    def __init__(self, image: np.ndarray) -> None:
        check_image(image)
        self.image = image
        self.height, self.width = image.shape[:2]
        self.mask = np.zeros((self.height, self.width), dtype=bool)

    def layer(self) -> np.ndarray:
        """A fresh, empty coverage canvas the size of the image."""
        return np.zeros((self.height, self.width), dtype=np.uint8)

    def paint(
        self,
        coverage: np.ndarray,
        color: Sequence[int] | np.ndarray,
        *,
        opacity: float = 1.0,
        blur: float = 0.0,
    ) -> None:
        """Blend one layer; ``color`` may be an HxWx3 array for multi-coloured layers."""
        x, y, w, h = cv2.boundingRect(coverage)
        if w == 0 or h == 0:
            return
        if blur > 0:
            # Pad by the kernel reach so the soft fringe is not cut at the stroke's bbox.
            pad = int(np.ceil(3 * blur))
            x0, y0 = max(0, x - pad), max(0, y - pad)
            x1, y1 = min(self.width, x + w + pad), min(self.height, y + h + pad)
            window = coverage[y0:y1, x0:x1]
            window[...] = cv2.GaussianBlur(window, (0, 0), blur, borderType=cv2.BORDER_CONSTANT)
            x, y, w, h = x0, y0, x1 - x0, y1 - y0
        cov = coverage[y : y + h, x : x + w]
        if opacity < 1.0:
            cov = np.round(cov.astype(np.float32) * opacity).astype(np.uint8)
        col = np.asarray(color)
        if col.ndim == 3:
            col = col[y : y + h, x : x + w]
        composite(self.image[y : y + h, x : x + w], cov, col)
        self.mask[y : y + h, x : x + w] |= cov > 0


@dataclass(frozen=True)
class Style:
    """How one annotation is stroked: colour, line width, anti-aliasing, softening blur."""

    color: str
    rgb: tuple[int, int, int]
    thickness: int
    antialias: bool
    blur: float

    @property
    def line_type(self) -> int:
        return cv2.LINE_AA if self.antialias else cv2.LINE_8

    def record(self) -> dict:
        return {
            "color": self.color,
            "rgb": list(self.rgb),
            "thickness": self.thickness,
            "antialias": self.antialias,
            "blur": round(self.blur, 3),
        }


class Palette:
    """Chooses colours and stroke styles for the annotations of one drawer call.

    Scanners usually draw every mark of a screen in one colour, so with some probability
    the whole call shares one colour; otherwise each annotation draws its own. The option
    ``"sampled"`` stands for a colour drawn by ``sample_color``: a shared sampled colour
    is drawn once per call, an unshared one per annotation. Named colours keep meaning
    exactly those colours (dimmed a little at times, as before).
    """

    def __init__(self, rng: np.random.Generator, colors: Sequence[str], scale: float) -> None:
        names = check_color_names(colors)
        self.rng = rng
        self.names = names
        self.scale = scale
        shared = names[int(rng.integers(len(names)))] if rng.random() < 0.65 else None
        self.shared = sample_color(rng) if shared == SAMPLED else shared
        self.antialias = bool(rng.random() < 0.6)
        # A soft blur mimics scans that were resized after the marks were burned in.
        self.blur = float(rng.uniform(0.35, 0.8)) if rng.random() < 0.25 else 0.0

    def color(self) -> tuple[str, tuple[int, int, int]]:
        if isinstance(self.shared, tuple):
            family, rgb = self.shared
            return f"{SAMPLED}:{family}", rgb
        name = self.shared or self.names[int(self.rng.integers(len(self.names)))]
        if name == SAMPLED:
            family, rgb = sample_color(self.rng)
            return f"{SAMPLED}:{family}", rgb
        rgb = COLORS[name]
        if self.rng.random() < 0.3:
            # Real "white" is often 220-250 after the scanner's gamma; vary the level.
            level = self.rng.uniform(0.78, 0.98)
            rgb = tuple(int(np.round(c * level)) for c in rgb)
        return name, rgb

    def style(self, thickness: float = 1.0) -> Style:
        """A style whose line width is ``thickness`` at 500 px, scaled to this image."""
        name, rgb = self.color()
        width = thickness * self.scale * self.rng.uniform(0.75, 1.3)
        antialias = self.antialias if self.rng.random() < 0.85 else not self.antialias
        return Style(name, rgb, max(1, round(width)), antialias, self.blur)
