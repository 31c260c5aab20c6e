"""Fonts for burned-in text (the label words live in ``vocabulary``).

Two font families are used so the network does not learn one glyph set: OpenCV's
Hershey stroke fonts and Pillow's bundled TrueType sans (``ImageFont.load_default``,
FreeType builds only). Nothing is read from disk or downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

HERSHEY: dict[str, int] = {
    "simplex": cv2.FONT_HERSHEY_SIMPLEX,
    "plain": cv2.FONT_HERSHEY_PLAIN,
    "duplex": cv2.FONT_HERSHEY_DUPLEX,
    "complex": cv2.FONT_HERSHEY_COMPLEX,
    "triplex": cv2.FONT_HERSHEY_TRIPLEX,
}
HAS_TRUETYPE = features.check("freetype2")
# The sans face is listed twice: scanner fonts are plain sans, so it should win often.
FONTS: tuple[str, ...] = (*HERSHEY, *(("sans", "sans") if HAS_TRUETYPE else ()))

_HERSHEY_MIN_HEIGHT = 9.0


@dataclass(frozen=True)
class TextStyle:
    """A font face at a cap height in pixels, optionally bold and anti-aliased."""

    font: str
    height: float
    bold: bool
    antialias: bool

    def record(self) -> dict:
        return {"font": self.font, "height": round(self.height, 2), "bold": self.bold}


def random_text_style(
    rng: np.random.Generator, height: float, antialias: bool, font: str | None = None
) -> TextStyle:
    """A random face (unless given) at ``height`` px, bold one time in four."""
    face = font or FONTS[int(rng.integers(len(FONTS)))]
    if height < _HERSHEY_MIN_HEIGHT and HAS_TRUETYPE:
        # Hershey strokes smear into an illegible blob below ~9 px; scanners use bitmap
        # fonts that stay crisp, which the hinted TrueType sans imitates.
        face = "sans"
    return TextStyle(face, max(float(height), 5.0), bool(rng.random() < 0.25), antialias)


@lru_cache(maxsize=64)
def _pil_font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _hershey_params(style: TextStyle) -> tuple[int, float, int]:
    face = HERSHEY[style.font]
    (_, h1), _ = cv2.getTextSize("H", face, 1.0, 1)
    thickness = max(1, round(style.height / 13)) + (1 if style.bold else 0)
    return face, style.height / h1, thickness


def _pil_params(style: TextStyle) -> tuple[ImageFont.FreeTypeFont, int, int]:
    """(font, stroke width, smear) for the TrueType face.

    Small bold text is smeared one pixel to the right, the way bitmap fonts embolden; a
    FreeType stroke at 7-13 px fills the counters and turns words into blobs.
    """
    # Cap height of the bundled sans is about 0.72 of its em size.
    font = _pil_font(max(4, round(style.height / 0.72)))
    if not style.bold:
        return font, 0, 0
    if style.height < 14:
        return font, 0, 1
    return font, max(1, round(style.height / 16)), 0


def text_box(text: str, style: TextStyle) -> tuple[int, int, int]:
    """(width, ascent, descent) of ``text`` in pixels; ascent is measured from the baseline."""
    if style.font in HERSHEY:
        face, scale, thickness = _hershey_params(style)
        (w, h), base = cv2.getTextSize(text, face, scale, thickness)
        return w, h, base
    font, stroke, smear = _pil_params(style)
    ascent = font.getmetrics()[0]
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    return x1 - x0 + smear, ascent - y0, max(y1 - ascent, 0)


def put_text(cov: np.ndarray, text: str, origin: tuple[float, float], style: TextStyle) -> None:
    """Draw ``text`` with the top-left corner of its ink box at ``origin``."""
    x, y = int(np.round(origin[0])), int(np.round(origin[1]))
    if style.font in HERSHEY:
        ascent = text_box(text, style)[1]
        face, scale, thickness = _hershey_params(style)
        line_type = cv2.LINE_AA if style.antialias else cv2.LINE_8
        cv2.putText(cov, text, (x, y + ascent), face, scale, 255, thickness, line_type)
        return
    font, stroke, smear = _pil_params(style)
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=stroke)
    if x1 <= x0 or y1 <= y0:
        return
    # Hinted aliased glyphs (fontmode "1") advance a little wider than getbbox reports;
    # the spare columns keep the last letter from being cut.
    spare = 2 + int(style.height * 0.4)
    glyphs = Image.new("L", (x1 - x0 + smear + spare, y1 - y0 + 1), 0)
    draw = ImageDraw.Draw(glyphs)
    # fontmode "1" renders hard, aliased glyphs like older scanner bitmaps.
    draw.fontmode = "L" if style.antialias else "1"
    draw.text((-x0, -y0), text, font=font, fill=255, stroke_width=stroke, stroke_fill=255)
    patch = np.asarray(glyphs)
    if smear:
        patch = np.maximum(patch, np.pad(patch[:, :-1], ((0, 0), (1, 0))))
    _paste_max(cov, patch, x + x0, y)


def _paste_max(cov: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Max-combine ``patch`` into ``cov`` with its top-left at (x, y), clipped to ``cov``."""
    h, w = cov.shape
    px0, py0 = max(0, -x), max(0, -y)
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(w, x + patch.shape[1]), min(h, y + patch.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    sub = patch[py0 : py0 + (y1 - y0), px0 : px0 + (x1 - x0)]
    np.maximum(cov[y0:y1, x0:x1], sub, out=cov[y0:y1, x0:x1])
