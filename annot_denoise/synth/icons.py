"""Pictograms a clinician leaves on the screen: hand and arrow cursors and body markers.

Cursors are the white pointer and pointing hand a sonographer parks over the image
(white fill, dark outline, as every scanner draws them). A body marker is a small organ
outline (breast, abdomen, thyroid and neck, pelvis) with a bar showing where the probe
lay, in a lower corner of the image. Same conventions as ``marks``: paint through a
``Painter``, place with a ``Scene``, record JSON-safe parameters in ``rec``.
"""

from __future__ import annotations

import cv2
import numpy as np

from . import geometry as g
from .placement import Point, Scene
from .render import SHIFT, Painter, Palette, fixed, pick

# Outlines in their own units, the hot spot (where the cursor points) at (0, 0).
_POINTER = np.array(
    [[0, 0], [0, 16], [4, 12.5], [7, 19], [9.5, 18], [6.5, 11.5], [11.5, 11.5]], dtype=np.float64
)
_HAND = np.array(
    [
        [-1.5, 1], [0, 0], [1.5, 1], [1.5, 8], [3, 7.4], [4.2, 8.3], [5.4, 7.8], [6.6, 8.8],
        [7.8, 8.5], [8.6, 9.6], [8.6, 15], [6.6, 20], [-1.5, 20], [-6, 14], [-6.8, 11.6],
        [-5.4, 11], [-3.6, 12.6], [-1.5, 14],
    ],
    dtype=np.float64,
)  # fmt: skip
CURSORS: dict[str, np.ndarray] = {"pointer": _POINTER, "hand": _HAND}
ORGANS = ("breast", "both-breasts", "abdomen", "thyroid", "neck", "pelvis")


def _fill(cov: np.ndarray, points: np.ndarray, line_type: int) -> None:
    cv2.fillPoly(cov, [fixed(points)], 255, line_type, SHIFT)


def cursors(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> None:
    """One (sometimes two) white pointer or hand cursors with a dark outline, on the image."""
    s = scene.scale
    items = []
    for _ in range(1 if rng.random() < 0.85 else 2):
        kind = pick(rng, tuple(CURSORS), (0.5, 0.5))
        shape = CURSORS[kind]
        size = max(8.0, rng.uniform(14.0, 28.0) * s)
        scale = size / float(np.ptp(shape[:, 1]))
        hot = scene.edge_point(rng) if rng.random() < 0.5 else scene.random_point(rng)
        hot = scene.clip(hot, 1.0)
        pts = shape * scale + np.asarray(hot)
        antialias = bool(rng.random() < 0.5)
        lt = cv2.LINE_AA if antialias else cv2.LINE_8
        body = painter.layer()
        _fill(body, pts, lt)
        border = max(1, round(rng.uniform(0.7, 1.6) * s))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * border + 1, 2 * border + 1))
        outline = cv2.dilate(body, kernel)
        dark = round(rng.uniform(0, 60))
        white = round(rng.uniform(215, 255))
        painter.paint(outline, (dark, dark, dark))
        painter.paint(body, (white, white, white))
        items.append(
            {
                "kind": kind,
                "hot_spot": [round(hot[0], 1), round(hot[1], 1)],
                "size": round(size, 2),
                "outline": border,
                "fill": white,
                "edge": dark,
            }
        )
    rec.update(cursors=items)


def _organ(kind: str, rng: np.random.Generator) -> list[np.ndarray]:
    """Outline polylines of a body-marker organ in a [-1, 1] box (y down)."""
    if kind == "breast":
        return [g.ellipse((0, 0), (0.9, 0.9), 0.0, 48), g.ellipse((0, 0), (0.1, 0.1), 0.0, 12)]
    if kind == "both-breasts":
        return [
            g.ellipse((-0.5, 0), (0.45, 0.45), 0.0, 36),
            g.ellipse((0.5, 0), (0.45, 0.45), 0.0, 36),
            g.ellipse((-0.5, 0), (0.06, 0.06), 0.0, 10),
            g.ellipse((0.5, 0), (0.06, 0.06), 0.0, 10),
        ]
    if kind == "abdomen":
        torso = np.array(
            [[-0.55, -0.9], [0.55, -0.9], [0.7, -0.2], [0.6, 0.9], [-0.6, 0.9], [-0.7, -0.2]]
        )
        return [torso, g.ellipse((0, 0.25), (0.05, 0.05), 0.0, 10)]
    if kind == "thyroid":
        tilt = rng.uniform(0.2, 0.45)
        return [
            g.ellipse((-0.42, 0), (0.22, 0.7), -tilt, 32),
            g.ellipse((0.42, 0), (0.22, 0.7), tilt, 32),
            np.array([[-0.25, 0.25], [0.25, 0.25], [0.25, 0.45], [-0.25, 0.45]]),
        ]
    if kind == "neck":
        left = g.bezier((-0.35, -0.9), (-0.3, 0.4), (-0.95, 0.85), 16)
        right = g.bezier((0.35, -0.9), (0.3, 0.4), (0.95, 0.85), 16)
        return [left, right, g.ellipse((0, -0.95), (0.45, 0.2), 0.0, 24)]
    # pelvis: iliac wings over a bowl
    bowl = g.bezier((-0.95, -0.6), (0.0, 1.6), (0.95, -0.6), 32)
    return [bowl, g.bezier((-0.95, -0.6), (-0.3, -0.9), (-0.2, 0.1), 16),
            g.bezier((0.95, -0.6), (0.3, -0.9), (0.2, 0.1), 16)]  # fmt: skip


def body_marker(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> None:
    """An organ pictogram with a probe bar, framed or not, in a lower corner."""
    s = scene.scale
    kind = pick(rng, ORGANS, (0.25, 0.1, 0.2, 0.15, 0.1, 0.2))
    size = float(np.clip(rng.uniform(34.0, 64.0) * s, 10.0, 0.3 * min(scene.height, scene.width)))
    margin = 0.01 * min(scene.height, scene.width)
    x, y, corner = scene.corner_box(rng, size, size, margin)
    if "top" in corner and rng.random() < 0.8:
        # Body markers sit low on most screens; move to the bottom of the same side
        # unless the scanner's own text is there.
        low = float(np.clip(scene.height - margin * rng.uniform(0.5, 1.5) - size, 0, None))
        if not scene.overlap(x, low, size, size):
            corner, y = corner.replace("top", "bottom"), low
    center: Point = (x + size / 2, y + size / 2)
    half = size / 2 * 0.8
    style = palette.style(1.0)
    cov = painter.layer()
    for line in _organ(kind, rng):
        closed = kind != "neck" and not (kind == "pelvis" and len(line) == 16)
        g.polyline(cov, line * half + np.asarray(center), style.thickness, style.line_type, closed)
    framed = rng.random() < 0.35
    if framed:
        box = g.rect_points(x, y, x + size, y + size)
        g.polyline(cov, box, max(1, style.thickness - 1), style.line_type, True)
    painter.paint(cov, style.rgb, blur=style.blur)
    # The probe bar: a short thick bar across the organ, often with an orientation dot.
    name, rgb = palette.color()
    angle = rng.uniform(0, np.pi)
    length = size * rng.uniform(0.3, 0.5)
    px, py = (
        center[0] + rng.uniform(-0.35, 0.35) * half,
        center[1] + rng.uniform(-0.35, 0.35) * half,
    )
    u = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    a, b = (px - u[0], py - u[1]), (px + u[0], py + u[1])
    width = max(2, round(size * rng.uniform(0.05, 0.09)))
    probe = painter.layer()
    g.line(probe, a, b, width, style.line_type)
    dot = rng.random() < 0.5
    if dot:
        g.dot(probe, a, width * 0.9, style.line_type)
    painter.paint(probe, rgb, blur=style.blur)
    rec.update(
        organ=kind,
        box=[round(x, 1), round(y, 1), round(size, 1)],
        corner=corner,
        framed=bool(framed),
        probe=[[round(a[0], 1), round(a[1], 1)], [round(b[0], 1), round(b[1], 1)]],
        probe_width=width,
        probe_dot=bool(dot),
        probe_color=name,
        probe_rgb=list(rgb),
        **style.record(),
    )
