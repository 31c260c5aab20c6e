"""Stroke primitives drawn into an 8-bit coverage canvas: dashes, crosses, curves, arrows.

Every function takes float pixel coordinates (x, y), draws with value 255 and leaves
clipping to OpenCV, so a mark that runs off a small image is simply cut.
"""

from __future__ import annotations

import cv2
import numpy as np

from .render import SHIFT, fixed

Point = tuple[float, float]


def polyline(
    cov: np.ndarray, points: np.ndarray, thickness: int, line_type: int, closed: bool = False
) -> None:
    """A solid open or closed polyline through ``points`` (Nx2)."""
    if len(points) < 2:
        return
    cv2.polylines(cov, [fixed(points)], closed, 255, thickness, line_type, SHIFT)


def line(cov: np.ndarray, p: Point, q: Point, thickness: int, line_type: int) -> None:
    """A solid segment from ``p`` to ``q``."""
    cv2.line(cov, tuple(fixed(p)), tuple(fixed(q)), 255, thickness, line_type, SHIFT)


def dashed(
    cov: np.ndarray,
    points: np.ndarray,
    on: float,
    off: float,
    thickness: int,
    line_type: int,
    closed: bool = False,
) -> None:
    """A dashed (``on`` > 1) or dotted (``on`` <= 1) polyline with period ``on + off`` px."""
    pts = np.asarray(points, dtype=np.float64)
    if closed:
        pts = np.vstack([pts, pts[:1]])
    if len(pts) < 2:
        return
    seg = np.hypot(*np.diff(pts, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    total = arc[-1]
    period = max(on + off, 1.0)
    if total < 1e-6:
        return
    # Centre the pattern so both ends of the line look the same.
    start = (total - on - period * np.floor(max(total - on, 0.0) / period)) / 2
    s0 = np.arange(start, total - 1e-6, period)
    s1 = np.minimum(s0 + max(on, 0.0), total)
    if on <= 1.0 and thickness == 1:
        # Scanners draw 1-px dots as single pixels; an anti-aliased dot that small would
        # only be a faint smudge (and OpenCV draws nothing for a zero-length AA segment).
        line_type = cv2.LINE_8
    elif on <= 1.0 and line_type == cv2.LINE_AA:
        s0, s1 = s0 - 0.5, s0 + 0.5
    a = np.stack([np.interp(s0, arc, pts[:, 0]), np.interp(s0, arc, pts[:, 1])], axis=1)
    b = np.stack([np.interp(s1, arc, pts[:, 0]), np.interp(s1, arc, pts[:, 1])], axis=1)
    segs = list(fixed(np.stack([a, b], axis=1)))
    cv2.polylines(cov, segs, False, 255, thickness, line_type, SHIFT)


def cross(
    cov: np.ndarray, center: Point, size: float, thickness: int, line_type: int, kind: str = "+"
) -> None:
    """A caliper cross of full width ``size``: "+" upright, "x" diagonal."""
    r = size / 2
    if kind == "x":
        r /= np.sqrt(2)
        arms = [((-r, -r), (r, r)), ((-r, r), (r, -r))]
    else:
        arms = [((-r, 0), (r, 0)), ((0, -r), (0, r))]
    cx, cy = center
    for (ax, ay), (bx, by) in arms:
        line(cov, (cx + ax, cy + ay), (cx + bx, cy + by), thickness, line_type)


def dot(cov: np.ndarray, center: Point, radius: float, line_type: int) -> None:
    """A filled disc."""
    r = max(int(np.round(radius * (1 << SHIFT))), 1)
    cv2.circle(cov, tuple(fixed(center)), r, 255, -1, line_type, SHIFT)


def circle(cov: np.ndarray, center: Point, radius: float, thickness: int, line_type: int) -> None:
    """An open circle."""
    r = max(int(np.round(radius * (1 << SHIFT))), 1)
    cv2.circle(cov, tuple(fixed(center)), r, 255, thickness, line_type, SHIFT)


def bezier(p0: Point, p1: Point, p2: Point, n: int = 32) -> np.ndarray:
    """Points of the quadratic Bezier curve with control point ``p1``."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c


def ellipse(center: Point, axes: tuple[float, float], angle: float, n: int = 96) -> np.ndarray:
    """Points of an ellipse with semi-axes ``axes`` rotated by ``angle`` radians."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([center[0] + c * x - s * y, center[1] + s * x + c * y], axis=1)


def arrow_head(
    cov: np.ndarray,
    tip: Point,
    direction: float,
    length: float,
    half_angle: float,
    kind: str,
    thickness: int,
    line_type: int,
) -> None:
    """An arrow head at ``tip`` pointing along ``direction`` (radians).

    ``kind`` is "solid" (filled triangle), "hollow" (triangle outline) or "open" (two
    strokes, like a chevron).
    """
    back = direction + np.pi
    wings = [
        (
            tip[0] + length * np.cos(back + s * half_angle),
            tip[1] + length * np.sin(back + s * half_angle),
        )
        for s in (-1, 1)
    ]
    tri = np.array([tip, wings[0], wings[1]])
    if kind == "solid":
        cv2.fillPoly(cov, [fixed(tri)], 255, line_type, SHIFT)
        polyline(cov, tri, 1, line_type, closed=True)
    elif kind == "hollow":
        polyline(cov, tri, thickness, line_type, closed=True)
    else:
        polyline(cov, np.array([wings[0], tip, wings[1]]), thickness, line_type)


def rect_points(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """The four corners of an axis-aligned rectangle, clockwise from top-left."""
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
