"""Marks drawn on the anatomy: calipers, arrows, point markers and ROI shapes.

Each function paints through a ``Painter`` at places a ``Scene`` proposes, writes what it
drew into ``rec`` (JSON-safe) and returns nothing the caller must use, except
``calipers``, whose endpoints let labels be put next to the measurement. Sizes are given
for a 500-px scan and multiplied by ``scene.scale``.
"""

from __future__ import annotations

import numpy as np

from . import geometry as g
from .placement import Point, Scene
from .render import Painter, Palette, Style, pick
from .text import put_text, random_text_style, text_box


def _pt(p: Point) -> list[float]:
    return [round(float(p[0]), 1), round(float(p[1]), 1)]


def _line_pattern(rng: np.random.Generator, scale: float, kinds: tuple, p: tuple) -> tuple:
    """(kind, on, gap) of a connecting line; dotted lines have 1-px dots 2-4 px apart.

    ``gap`` is the clear space between dots or dashes; add the stroke width to it for the
    ``off`` length of ``geometry.dashed``, or thick dotted lines merge into a bead chain.
    """
    kind = pick(rng, kinds, p)
    if kind == "dotted":
        return kind, 1.0, max(1.0, rng.uniform(1.5, 3.5) * scale)
    if kind == "dashed":
        return (
            kind,
            max(2.0, rng.uniform(3.0, 7.0) * scale),
            max(1.5, rng.uniform(2.0, 4.0) * scale),
        )
    return kind, 0.0, 0.0


def calipers(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> list[list[Point]]:
    """1-3 caliper pairs across structures; returns the endpoint pairs."""
    s, m = scene.scale, min(scene.height, scene.width)
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.5, 0.15]))
    size = max(3.0, rng.uniform(8.0, 16.0) * s)
    marker = "+" if rng.random() < 0.75 else "x"
    vary = rng.random() < 0.2  # some scanners give each pair its own marker shape
    kind, on, off = _line_pattern(
        rng, s, ("dotted", "dashed", "solid", "none"), (0.65, 0.15, 0.05, 0.15)
    )
    gap = size * rng.uniform(0.5, 0.8) if rng.random() < 0.3 else 0.0
    numbers = rng.random() < 0.65
    num_style = random_text_style(rng, max(6.0, size * rng.uniform(0.6, 0.9)), palette.antialias)
    num_end = int(rng.random() < 0.6)
    both_ends = rng.random() < 0.2
    # Index text: "1", the marker symbol and number ("+1", "x2", as on Philips and
    # SonoSite screens) or "D1".
    index = pick(rng, ("n", "symbol", "D"), (0.55, 0.3, 0.15))
    # Where the pair number sits relative to its cross: mostly up-right, as on GE scanners.
    dx, dy = pick(rng, ((1, -1), (1, 0), (-1, -1), (1, 1)), (0.55, 0.2, 0.15, 0.1))
    near = rng.uniform(0.2, 0.5) * size

    pairs: list[list[Point]] = []
    # Mostly the classic lesion measurement: pair 1 along the long axis through a dark
    # mass, pair 2 across it, both ending on the lesion wall.
    center = scene.dark_point(rng) if rng.random() < 0.8 else scene.random_point(rng)
    theta = rng.normal(0.0, 0.35) if rng.random() < 0.6 else rng.uniform(0, np.pi)
    rmin, rmax = 0.03 * m, rng.uniform(0.12, 0.3) * m
    crossing = rng.random() < 0.7
    for k in range(n):
        if crossing and (k < 2 or rng.random() < 0.5):
            angle = theta + (np.pi / 2 if k == 1 else np.pi / 4 if k == 2 else 0.0)
            a = scene.edge_along(center, angle + np.pi, rmin, rmax, rng)
            b = scene.edge_along(center, angle, rmin, rmax, rng)
        else:
            # Measure across the structure: leave the edge along its normal, mostly into
            # the darker side, and stop at the strongest edge beyond.
            a = scene.edge_point(rng)
            angle = scene.normal_at(a) + rng.normal(0.0, 0.3) + (np.pi if rng.random() < 0.3 else 0)
            b = scene.edge_along(a, angle, 0.08 * m, 0.35 * m, rng)
        pairs.append([scene.clip(a, size / 2), scene.clip(b, size / 2)])

    styles = []
    thickness = palette.style(1.0).thickness  # one stroke width per screen
    for k, (a, b) in enumerate(pairs):
        style = palette.style(1.0)
        style = Style(style.color, style.rgb, thickness, style.antialias, style.blur)
        styles.append(style.record())
        cov = painter.layer()
        shape = ("+", "x")[(k + (marker == "x")) % 2] if vary else marker
        for p in (a, b):
            g.cross(cov, p, size, style.thickness, style.line_type, shape)
        d = np.hypot(b[0] - a[0], b[1] - a[1])
        if kind != "none" and d > 2 * gap + 1:
            u = ((b[0] - a[0]) / d, (b[1] - a[1]) / d)
            seg = np.array(
                [[a[0] + u[0] * gap, a[1] + u[1] * gap], [b[0] - u[0] * gap, b[1] - u[1] * gap]]
            )
            if kind == "solid":
                g.polyline(cov, seg, style.thickness, style.line_type)
            else:
                g.dashed(cov, seg, on, off + style.thickness, style.thickness, style.line_type)
        if numbers:
            label = {"n": "", "symbol": shape, "D": "D"}[index] + str(k + 1)
            w, asc, _ = text_box(label, num_style)
            for p in (a, b) if both_ends else ((a, b)[num_end],):
                x = p[0] - near - w if dx < 0 else p[0] + near
                y = p[1] - near - asc if dy < 0 else p[1] - asc / 2 if dy == 0 else p[1] + near
                put_text(cov, label, (x, y), num_style)
        painter.paint(cov, style.rgb, blur=style.blur)
    rec.update(
        pairs=[[_pt(a), _pt(b)] for a, b in pairs],
        marker=marker,
        vary_marker=bool(vary),
        size=round(size, 2),
        line=kind,
        gap=round(gap, 2),
        numbers=bool(numbers),
        number_font=num_style.record() if numbers else None,
        index=index if numbers else None,
        index_both_ends=bool(numbers and both_ends),
        **styles[0],  # the first pair's colour etc.; ``styles`` has every pair's
        styles=styles,
    )
    return pairs


def arrows(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> None:
    """1-3 arrows with solid, hollow or open heads, straight or curved, aimed at structures."""
    m = min(scene.height, scene.width)
    head = pick(rng, ("solid", "open", "hollow"), (0.45, 0.35, 0.2))
    items = []
    for _ in range(int(rng.choice([1, 2, 3], p=[0.65, 0.25, 0.1]))):
        style = palette.style(rng.uniform(1.0, 2.2))
        tip = scene.edge_point(rng) if rng.random() < 0.7 else scene.dark_point(rng)
        length = max(4.0, rng.uniform(0.07, 0.18) * m)
        phi = rng.uniform(0, 2 * np.pi)
        for _ in range(8):
            tail = (tip[0] + length * np.cos(phi), tip[1] + length * np.sin(phi))
            if 0 <= tail[0] < scene.width and 0 <= tail[1] < scene.height:
                break
            phi = rng.uniform(0, 2 * np.pi)
        tail = scene.clip(tail)
        bend = rng.uniform(-0.35, 0.35) if rng.random() < 0.3 else 0.0
        mid = ((tip[0] + tail[0]) / 2, (tip[1] + tail[1]) / 2)
        ctrl = (mid[0] - bend * (tip[1] - tail[1]), mid[1] + bend * (tip[0] - tail[0]))
        shaft = g.bezier(tail, ctrl, tip, 24 if bend else 2)
        direction = float(np.arctan2(tip[1] - shaft[-2][1], tip[0] - shaft[-2][0]))
        head_len = max(3.0 * style.thickness, rng.uniform(0.22, 0.4) * length)
        half = np.deg2rad(rng.uniform(18, 32))
        cov = painter.layer()
        g.polyline(cov, shaft, style.thickness, style.line_type)
        g.arrow_head(cov, tip, direction, head_len, half, head, style.thickness, style.line_type)
        painter.paint(cov, style.rgb, blur=style.blur)
        items.append(
            {
                "tail": _pt(tail),
                "tip": _pt(tip),
                "bend": round(float(bend), 3),
                "head_length": round(head_len, 2),
                **style.record(),
            }
        )
    rec.update(head=head, arrows=items)


def _marker(cov: np.ndarray, kind: str, p: Point, size: float, thickness: int, lt: int) -> None:
    if kind in ("+", "x"):
        g.cross(cov, p, size, thickness, lt, kind)
    elif kind == "dot":
        g.dot(cov, p, max(0.8, size * 0.22), lt)
    else:
        g.circle(cov, p, max(1.0, size * 0.4), thickness, lt)


def markers(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> None:
    """2-12 point markers ("+", "x", dots, circles) scattered or traced round a structure."""
    s, m = scene.scale, min(scene.height, scene.width)
    n = int(rng.integers(2, 13))
    kinds = ("+", "x", "dot", "circle")
    one_kind = pick(rng, kinds) if rng.random() < 0.75 else None
    size = max(3.0, rng.uniform(5.0, 12.0) * s)
    trace = rng.random() < 0.5
    thickness = palette.style(1.0).thickness  # one stroke width for the set, as on screen
    center = scene.dark_point(rng)
    phase = rng.uniform(0, 2 * np.pi)
    items = []
    for k in range(n):
        if trace:
            angle = phase + 2 * np.pi * (k + rng.uniform(-0.2, 0.2)) / n
            p = scene.edge_along(center, angle, 0.03 * m, 0.2 * m, rng)
        else:
            p = scene.random_point(rng)
        p = scene.clip(p, size / 2)
        kind = one_kind or pick(rng, kinds)
        style = palette.style(1.0)
        cov = painter.layer()
        _marker(cov, kind, p, size, thickness, style.line_type)
        painter.paint(cov, style.rgb, blur=style.blur)
        items.append({"kind": kind, "at": _pt(p), **style.record(), "thickness": thickness})
    rec.update(layout="trace" if trace else "scatter", size=round(size, 2), markers=items)


def _reach(
    scene: Scene, p: Point, angle: float, rmin: float, rmax: float, rng: np.random.Generator
) -> float:
    """Distance from ``p`` to the structure edge in direction ``angle``."""
    q = scene.edge_along(p, angle, rmin, rmax, rng)
    return max(float(np.hypot(q[0] - p[0], q[1] - p[1])), 2.0)


def _ellipse(
    cov: np.ndarray, scene: Scene, rng: np.random.Generator, style: Style, item: dict
) -> np.ndarray:
    """Points of a measurement ellipse fitted to a dark structure, maybe with axis crosses."""
    s, m = scene.scale, min(scene.height, scene.width)
    center = scene.dark_point(rng)
    angle = float(rng.normal(0.0, 0.3))
    ra = _reach(scene, center, angle, 0.04 * m, 0.25 * m, rng)
    rb = _reach(scene, center, angle + np.pi / 2, 0.03 * m, 0.2 * m, rng)
    pts = g.ellipse(center, (ra, rb), angle, max(24, int(ra + rb)))
    item.update(center=_pt(center), axes=[round(ra, 1), round(rb, 1)], angle=round(angle, 3))
    if rng.random() < 0.4:
        size = max(3.0, rng.uniform(7.0, 13.0) * s)
        for i in range(0, len(pts), len(pts) // 4)[:4]:
            g.cross(cov, tuple(pts[i]), size, style.thickness, style.line_type)
        item["axis_calipers"] = round(size, 2)
    return pts


def _brackets(cov: np.ndarray, pts: np.ndarray, rng: np.random.Generator, style: Style) -> None:
    """Only the four corners of a rectangle, like a zoom or ROI box on many scanners."""
    (x0, y0), (x1, y1) = pts[0], pts[2]
    arm = min(x1 - x0, y1 - y0) * rng.uniform(0.12, 0.25)
    for cx, cy in pts:
        sx, sy = (1 if cx == x0 else -1), (1 if cy == y0 else -1)
        corner = np.array([[cx + sx * arm, cy], [cx, cy], [cx, cy + sy * arm]])
        g.polyline(cov, corner, style.thickness, style.line_type)


def _box(scene: Scene, rng: np.random.Generator, kind: str) -> np.ndarray:
    """Corners of an ROI box round a structure; a parallelogram for a steered colour box."""
    m = min(scene.height, scene.width)
    cx, cy = scene.dark_point(rng) if rng.random() < 0.6 else scene.random_point(rng)
    w, h = rng.uniform(0.15, 0.5) * m, rng.uniform(0.12, 0.45) * m
    x0, y0 = scene.clip((cx - w / 2, cy - h / 2))
    x1, y1 = scene.clip((cx + w / 2, cy + h / 2))
    pts = g.rect_points(x0, y0, x1, y1)
    if kind == "parallelogram":
        pts[2:, 0] += (y1 - y0) * np.tan(np.deg2rad(rng.choice([-1, 1]) * rng.uniform(12, 25)))
        pts[:, 0] = np.clip(pts[:, 0], 0, scene.width - 1)
    return pts


def shapes(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> None:
    """ROI rectangles, steered parallelograms, zoom brackets and dotted measurement ellipses."""
    s = scene.scale
    items = []
    for _ in range(1 if rng.random() < 0.75 else 2):
        kind = pick(rng, ("rect", "ellipse", "parallelogram", "brackets"), (0.35, 0.4, 0.12, 0.13))
        style = palette.style(1.0)
        pattern, on, off = _line_pattern(rng, s, ("solid", "dashed", "dotted"), (0.45, 0.3, 0.25))
        if kind == "ellipse" and pattern == "solid" and rng.random() < 0.6:
            # Ellipse measurements are dotted on most scanners.
            pattern, on, off = _line_pattern(rng, s, ("dotted",), None)
        item: dict = {"kind": kind, "line": pattern, **style.record()}
        cov = painter.layer()
        if kind == "ellipse":
            pts = _ellipse(cov, scene, rng, style, item)
        else:
            pts = _box(scene, rng, kind)
            item["corners"] = [_pt(p) for p in pts]
        if kind == "brackets":
            _brackets(cov, pts, rng, style)
        elif pattern == "solid":
            g.polyline(cov, pts, style.thickness, style.line_type, closed=True)
        else:
            g.dashed(cov, pts, on, off + style.thickness, style.thickness, style.line_type, True)
        painter.paint(cov, style.rgb, blur=style.blur)
        items.append(item)
    rec.update(shapes=items)
