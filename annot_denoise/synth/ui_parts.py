"""The graphic parts of a scanner's interface: depth scale, focus marks, logo, grey and
colour bars, TGC curve and cine timeline.

Each part paints through a ``Painter`` in one UI colour, at a place derived from the
field of view's bounding box (``Outline.bbox``), and returns a JSON-safe record. Sizes are
for a 500-px screen times ``scene.scale``. ``scanner_ui`` decides which parts a screen
shows and where; the text blocks live there too.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import geometry as g
from .placement import Outline
from .render import BLACK, SHIFT, Painter, fixed, pick
from .text import TextStyle, put_text, text_box

RGB = tuple[int, int, int]

# Colour-bar maps as (position 0 = bottom .. 1 = top, RGB) control points.
COLORMAPS: dict[str, tuple[tuple[float, RGB], ...]] = {
    "grey": ((0.0, (0, 0, 0)), (1.0, (255, 255, 255))),
    "doppler": (
        (0.0, (120, 255, 255)),
        (0.25, (0, 60, 255)),
        (0.5, (0, 0, 0)),
        (0.75, (230, 0, 0)),
        (1.0, (255, 255, 120)),
    ),
    "jet": (
        (0.0, (0, 0, 140)),
        (0.3, (0, 140, 255)),
        (0.5, (80, 255, 160)),
        (0.7, (255, 230, 0)),
        (1.0, (150, 0, 0)),
    ),
    "hot": ((0.0, (0, 0, 0)), (0.4, (200, 0, 0)), (0.75, (255, 200, 0)), (1.0, (255, 255, 230))),
    "power": ((0.0, (60, 0, 0)), (0.5, (230, 90, 0)), (1.0, (255, 240, 150))),
}


def ramp(name: str, n: int) -> np.ndarray:
    """An n x 3 uint8 colour ramp of ``COLORMAPS[name]``, top row first."""
    pos = np.array([p for p, _ in COLORMAPS[name]])
    rgb = np.array([c for _, c in COLORMAPS[name]], dtype=np.float64)
    t = np.linspace(1.0, 0.0, n)
    return (
        np.stack([np.interp(t, pos, rgb[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)
    )


def paint_bar(painter: Painter, box: tuple[int, int, int, int], cmap: str) -> None:
    """Fill ``box`` (x, y, width, height) with a vertical ramp of ``cmap``."""
    x, y, bw, bh = box
    if bw <= 0 or bh <= 0:
        return
    strip = painter.layer()
    strip[y : y + bh, x : x + bw] = 255
    colors = np.zeros((painter.height, painter.width, 3), dtype=np.uint8)
    colors[y : y + bh, x : x + bw] = ramp(cmap, bh)[:, None, :]
    painter.paint(strip, colors)


def _lt(style: TextStyle) -> int:
    return cv2.LINE_AA if style.antialias else cv2.LINE_8


def _label(cov: np.ndarray, text: str, x: float, y: float, style: TextStyle, align: str) -> None:
    """``text`` with its ink box's vertical middle at ``y``, left of ``x`` when ``align`` is
    "right", else right of it; clipped to the canvas."""
    w, asc, _ = text_box(text, style)
    h, wid = cov.shape
    tx = x - w if align == "right" else x
    tx = float(np.clip(tx, 0, max(0, wid - w - 1)))
    ty = float(np.clip(y - asc / 2, 0, max(0, h - asc - 1)))
    put_text(cov, text, (tx, ty), style)


def depth_scale(
    painter: Painter,
    scene: Outline,
    rng: np.random.Generator,
    rgb: RGB,
    style: TextStyle,
    side: str,
    at: str,
    depth: float,
) -> dict:
    """Ticks (or dots) every cm along ``side`` of the field of view, numbered, with "cm"
    and focus triangles pointing at the image; ``at`` is "fan" (beside the field of view)
    or "screen" (at the screen edge)."""
    s, W = scene.scale, scene.width
    x0, y0, x1, y1 = scene.bbox
    gap = rng.uniform(4.0, 14.0) * s
    x = (x1 + gap if side == "right" else x0 - gap) if at == "fan" else None
    if x is None or not 2 <= x <= W - 3:
        x = W - rng.uniform(3.0, 10.0) * s if side == "right" else rng.uniform(3.0, 10.0) * s
    x = float(np.clip(x, 1, W - 2))
    inward = -1 if side == "right" else 1
    per_cm = (y1 - y0) / depth
    major = max(1.5, rng.uniform(5.0, 9.0) * s)
    minor_step = 0.5 if per_cm >= 10 else 1.0
    if per_cm >= 25 and rng.random() < 0.5:
        minor_step = 0.2
    number_every = 1 if per_cm >= 2.2 * style.height else 2 if per_cm >= 1.1 * style.height else 5
    dots = rng.random() < 0.2
    thickness = max(1, round(s * rng.uniform(0.7, 1.3)))
    lt = _lt(style)
    cov = painter.layer()
    if rng.random() < 0.35 and not dots:
        g.line(cov, (x, y0), (x, y1), thickness, lt)
    for k in range(int(np.floor(depth / minor_step + 1e-9)) + 1):
        d = k * minor_step
        y = y0 + d * per_cm
        whole = abs(d - round(d)) < 1e-6
        if dots:
            if whole:
                g.dot(cov, (x, y), max(1.0, 1.6 * s), lt)
        else:
            length = major if whole else major * 0.5
            g.line(cov, (x, y), (x + inward * length, y), thickness, lt)
        if whole and round(d) % number_every == 0 and round(d) > 0:
            # Numbers sit past the tick ends, on the image's side of the scale.
            align = "right" if inward < 0 else "left"
            _label(cov, str(round(d)), x + inward * (major + 3), y, style, align)
    unit = rng.random() < 0.6
    if unit:
        _label(cov, "cm", x + inward * (major + 2), y0 - 1.2 * style.height, style, "left")
    focus = []
    for _ in range(int(rng.choice([0, 1, 2], p=[0.2, 0.6, 0.2]))):
        f = float(rng.uniform(0.15, 0.85))
        y = y0 + f * (y1 - y0)
        size = max(2.0, rng.uniform(3.0, 5.5) * s)
        tip = x + inward * (major + size * 0.5)
        back = tip - inward * size * 1.5
        tri = np.array([[tip, y], [back, y - size], [back, y + size]])
        cv2.fillPoly(cov, [fixed(tri)], 255, lt, SHIFT)
        focus.append(round(f, 3))
    painter.paint(cov, rgb)
    return {
        "side": side,
        "at": at,
        "x": round(x, 1),
        "depth_cm": round(depth, 1),
        "dots": bool(dots),
        "unit": bool(unit),
        "focus": focus,
    }


def logo(
    painter: Painter,
    scene: Outline,
    rng: np.random.Generator,
    rgb: RGB,
    style: TextStyle,
    side: str,
) -> dict:
    """A probe-orientation mark by a top corner of the field of view: a dot, a ring, a
    lettered disc or a small bar."""
    s = scene.scale
    x0, y0, x1, _ = scene.bbox
    kind = pick(rng, ("dot", "ring", "letter", "bar"), (0.4, 0.2, 0.25, 0.15))
    r = max(2.0, rng.uniform(3.5, 8.0) * s)
    dx = rng.uniform(0.5, 3.0) * r
    cx = x0 + dx if side == "left" else x1 - dx
    cy = y0 + rng.uniform(-2.0, 2.5) * r
    cx, cy = scene.clip((cx, cy), r + 1)
    lt = _lt(style)
    cov = painter.layer()
    if kind == "dot":
        g.dot(cov, (cx, cy), r, lt)
    elif kind == "ring":
        g.circle(cov, (cx, cy), r, max(1, round(r / 3)), lt)
    elif kind == "bar":
        g.line(cov, (cx - r, cy), (cx + r, cy), max(1, round(r / 2.5)), lt)
    else:
        g.dot(cov, (cx, cy), r * 1.2, lt)
    painter.paint(cov, rgb)
    letter = None
    if kind == "letter":
        letter = pick(rng, ("B", "P", "M", "S", "C"))
        ink = painter.layer()
        h = max(5.0, r * 1.2)
        letter_style = TextStyle(style.font, h, True, style.antialias)
        w, asc, _ = text_box(letter, letter_style)
        put_text(ink, letter, (cx - w / 2, cy - asc / 2), letter_style)
        # White letter on the disc, as on the screens this copies.
        painter.paint(ink & cov, (255, 255, 255) if sum(rgb) < 500 else BLACK)
    return {
        "kind": kind,
        "at": [round(cx, 1), round(cy, 1)],
        "radius": round(r, 2),
        "letter": letter,
    }


def bar(
    painter: Painter,
    scene: Outline,
    rng: np.random.Generator,
    rgb: RGB,
    style: TextStyle,
    corner: str,
    cmap: str,
) -> dict:
    """A vertical grey or colour-map strip at a top screen corner, maybe framed and
    ticked, with a short caption above."""
    s, H, W = scene.scale, scene.height, scene.width
    bw = int(np.clip(round(rng.uniform(5.0, 12.0) * s), 2, max(2, W // 20)))
    bh = int(np.clip(round(rng.uniform(0.12, 0.3) * H), 4, max(4, H // 3)))
    x = rng.uniform(0.006, 0.04) * W
    x = int(np.clip(round(x if "left" in corner else W - x - bw), 0, max(0, W - bw)))
    y = int(np.clip(round(rng.uniform(0.03, 0.12) * H), 0, max(0, H - bh)))
    paint_bar(painter, (x, y, bw, bh), cmap)
    cov = painter.layer()
    lt = _lt(style)
    frame = rng.random() < 0.4
    if frame:
        g.polyline(cov, g.rect_points(x - 1, y - 1, x + bw, y + bh), 1, lt, True)
    caption = pick(rng, ("", "M3", "G1", "CM2", "Map C", "V 20", "0")) if rng.random() < 0.5 else ""
    if caption:
        tw, asc, _ = text_box(caption, style)
        tx = float(np.clip(x + bw / 2 - tw / 2, 0, max(0, W - tw - 1)))
        put_text(cov, caption, (tx, max(0.0, y - asc - 3)), style)
    painter.paint(cov, rgb)
    return {"colormap": cmap, "box": [x, y, bw, bh], "frame": bool(frame), "caption": caption}


def tgc_curve(
    painter: Painter, scene: Outline, rng: np.random.Generator, rgb: RGB, side: str
) -> dict:
    """The time-gain-compensation curve: a thin, gently bulging vertical line beside the
    field of view, with a small dot at each slider."""
    s, W = scene.scale, scene.width
    x0, y0, x1, y1 = scene.bbox
    base = x1 + rng.uniform(18.0, 40.0) * s if side == "right" else x0 - rng.uniform(18, 40) * s
    base = float(np.clip(base, 6 * s, W - 6 * s))
    sliders = int(rng.integers(6, 10))
    ys = np.linspace(y0 + 0.05 * (y1 - y0), y0 + 0.95 * (y1 - y0), sliders)
    offsets = rng.normal(0.0, 2.5 * s, sliders) + np.linspace(0, rng.uniform(-4, 8) * s, sliders)
    pts = np.stack([base + offsets, ys], axis=1)
    curve = np.stack(
        [np.interp(np.linspace(ys[0], ys[-1], 64), ys, pts[:, 0]), np.linspace(ys[0], ys[-1], 64)],
        axis=1,
    )
    cov = painter.layer()
    g.polyline(cov, curve, 1, cv2.LINE_AA)
    if rng.random() < 0.5:
        for p in pts:
            g.dot(cov, tuple(p), max(1.0, 1.4 * s), cv2.LINE_AA)
    painter.paint(cov, rgb)
    return {"side": side, "x": round(base, 1), "sliders": sliders}


def cine_bar(
    painter: Painter, scene: Outline, rng: np.random.Generator, rgb: RGB, style: TextStyle
) -> dict:
    """A cine-loop timeline along the bottom of the screen: a dark framed track, a slider,
    and "Cine 171" / "3.4 sec" or a frame counter at its ends."""
    s, H, W = scene.scale, scene.height, scene.width
    bh = max(4, round(rng.uniform(7.0, 13.0) * s))
    y = H - bh - max(1, round(rng.uniform(1.0, 6.0) * s))
    frames = int(rng.integers(20, 900))
    left = pick(rng, (f"Cine {int(rng.integers(1, frames + 1))}", f"{frames}/{frames}", ""))
    right = f"{rng.uniform(0.5, 12.0):.1f} sec" if rng.random() < 0.6 else ""
    lw = text_box(left, style)[0] + 6 if left else 0
    rw = text_box(right, style)[0] + 6 if right else 0
    tx0 = max(2.0, rng.uniform(0.01, 0.12) * W) + lw
    tx1 = W - max(2.0, rng.uniform(0.01, 0.12) * W) - rw
    if tx1 - tx0 < 8:
        tx0, tx1 = 2.0, W - 3.0
        left = right = ""
    track = painter.layer()
    cv2.rectangle(track, (int(tx0), y), (int(tx1), y + bh), 255, -1)
    painter.paint(track, tuple(int(c * 0.25) for c in rgb))
    cov = painter.layer()
    g.polyline(cov, g.rect_points(tx0, y, tx1, y + bh), 1, cv2.LINE_8, True)
    pos = tx0 + rng.uniform(0.0, 1.0) * (tx1 - tx0)
    knob = max(2, round(bh * 0.35))
    cv2.rectangle(cov, (int(pos - knob), y + 1), (int(pos + knob), y + bh - 1), 255, -1)
    if left:
        _label(cov, left, tx0 - 4, y + bh / 2, style, "right")
    if right:
        _label(cov, right, tx1 + 4, y + bh / 2, style, "left")
    painter.paint(cov, rgb)
    return {"track": [round(tx0, 1), y, round(tx1, 1), y + bh], "left": left, "right": right}
