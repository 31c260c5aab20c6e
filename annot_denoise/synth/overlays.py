"""Text a clinician adds to the screen: labels, side letters and measurement readouts,
plus the colour bar kept as an explicit drawer (scanner bars belong to ``scanner_ui``).

Same conventions as ``marks``: paint through a ``Painter``, place with a ``Scene``,
record JSON-safe parameters in ``rec``; sizes are for a 500-px scan times ``scene.scale``.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from . import geometry as g
from .placement import Point, Scene, box_around
from .render import BLACK, SHIFT, Painter, Palette, fixed, pick
from .text import FONTS, TextStyle, put_text, random_text_style, text_box
from .ui_parts import COLORMAPS, paint_bar
from .vocabulary import SIDES, random_label


def _block_size(lines: list[str], style: TextStyle, spacing: float) -> tuple[float, float]:
    boxes = [text_box(t, style) for t in lines]
    width = max(b[0] for b in boxes)
    return float(width), (len(lines) - 1) * spacing + boxes[-1][1] + boxes[-1][2]


def _text_block(
    painter: Painter,
    lines: list[str],
    origin: Point,
    style: TextStyle,
    spacing: float,
    rgb: tuple[int, int, int],
    blur: float,
    background: float,
    frame: int,
    pad: float,
) -> None:
    """Lines of text, optionally over a dark box (opacity ``background``) and in a frame."""
    x, y = origin
    w, h = _block_size(lines, style, spacing)
    box = g.rect_points(x - pad, y - pad, x + w + pad, y + h + pad)
    if background > 0:
        under = painter.layer()
        cv2.fillPoly(under, [fixed(box)], 255, cv2.LINE_8, SHIFT)
        painter.paint(under, BLACK, opacity=background)
    cov = painter.layer()
    for i, text in enumerate(lines):
        put_text(cov, text, (x, y + i * spacing), style)
    if frame:
        g.polyline(cov, box, frame, cv2.LINE_AA if style.antialias else cv2.LINE_8, True)
    painter.paint(cov, rgb, blur=blur)


def labels(
    painter: Painter,
    scene: Scene,
    rng: np.random.Generator,
    palette: Palette,
    rec: dict,
    anchor: Point | None = None,
    vocabulary: Sequence[str] | None = None,
) -> None:
    """1-3 clinical labels inside the content, in its lower corner, in the margin or by
    ``anchor`` (a caliper endpoint); words from ``vocabulary`` (built-in when None)."""
    s = scene.scale
    font = None if rng.random() < 0.25 else pick(rng, FONTS)
    items = []
    for k in range(int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))):
        name, rgb = palette.color()
        height = max(7.0, rng.uniform(10.0, 18.0) * s)
        style = random_text_style(rng, height, palette.antialias, font)
        text = [random_label(rng, vocabulary)]
        if rng.random() < 0.12:
            text.append(random_label(rng, vocabulary))
        spacing = style.height * rng.uniform(1.4, 1.8)
        w, h = _block_size(text, style, spacing)
        pad = style.height * rng.uniform(0.2, 0.45)
        where = pick(rng, ("inside", "lower", "margin"), (0.45, 0.35, 0.2))
        if anchor is not None and k == 0:
            where = "anchor"
        # Scanners never print text over text: retry a few spots clear of earlier marks.
        for _ in range(8):
            x, y = _label_spot(scene, rng, where, w, h, style.height, anchor)
            box = (x - pad, y - pad, w + 2 * pad, h + 2 * pad)
            if not _occupied(painter, *box) and not scene.overlap(*box):
                break
            if where == "anchor":
                where = "lower"
        background = rng.uniform(0.5, 1.0) if rng.random() < 0.15 else 0.0
        blur = palette.blur
        _text_block(painter, text, (x, y), style, spacing, rgb, blur, background, 0, pad)
        items.append(
            {
                "text": text,
                "at": [round(x, 1), round(y, 1)],
                "where": where,
                "color": name,
                "rgb": list(rgb),
                "background": round(float(background), 3),
                **style.record(),
            }
        )
    rec.update(antialias=palette.antialias, blur=round(palette.blur, 3), labels=items)


def _occupied(painter: Painter, x: float, y: float, w: float, h: float) -> bool:
    """Whether anything was already painted in the box (x, y, w, h) or next to it."""
    return bool(box_around(painter.mask, x, y, w, h).any())


def _label_spot(
    scene: Scene,
    rng: np.random.Generator,
    where: str,
    w: float,
    h: float,
    height: float,
    anchor: Point | None,
) -> Point:
    """Top-left corner for a ``w`` x ``h`` label placed the way ``where`` names."""
    x0, y0, x1, y1 = scene.bbox
    if where == "anchor" and anchor is not None:
        x, y = anchor[0] - w * rng.uniform(0.0, 1.0), anchor[1] + rng.uniform(1.5, 4.0) * height
    elif where == "corner":
        x, y, _ = scene.corner_box(rng, w, h, 0.01 * min(scene.height, scene.width))
    elif where == "inside":
        px, py = scene.random_point(rng)
        x, y = px - w / 2, py - h / 2
    elif where == "lower":
        # Body-site labels usually sit low in the image, towards the left.
        x = x0 + (x1 - x0 - w) * rng.uniform(0.03, 0.5)
        y = y0 + (y1 - y0 - h) * rng.uniform(0.75, 0.97)
    else:
        x, y = scene.margin_box(rng, w, h)
    x = float(np.clip(x, 0, max(0.0, scene.width - w - 1)))
    y = float(np.clip(y, 0, max(0.0, scene.height - h - 1)))
    return x, y


def _readout(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` lines of a measurement readout in one scanner's format."""
    fmt = pick(rng, ("ge", "dist", "mm", "symbol", "lwh", "area"))
    v = rng.uniform(0.25, 9.5, n)
    lines = []
    for i in range(n):
        if fmt == "ge":
            lines.append(f"{i + 1} D {v[i]:.2f}cm")
        elif fmt == "dist":
            lines.append(f"{i + 1} Dist {v[i]:.2f} cm" if n > 1 else f"Dist {v[i]:.2f} cm")
        elif fmt == "mm":
            lines.append(f"D{i + 1}: {v[i] * 10:.1f} mm")
        elif fmt == "symbol":
            lines.append(f"{'+x*o'[i % 4]} D {v[i]:.2f} cm")
        elif fmt == "lwh":
            lines.append(
                ("L", "W", "H")[i] + f" {v[i]:.2f} cm"
                if i < 3
                else f"Vol {np.prod(v[:3]) * 0.52:.1f} ml"
            )
        else:
            lines.append(
                (f"Area {v[i]:.2f} cm2", f"Circ {v[i] * 3:.2f} cm", f"D {v[i]:.2f} cm")[i % 3]
            )
    return lines


def measurements(
    painter: Painter,
    scene: Scene,
    rng: np.random.Generator,
    palette: Palette,
    rec: dict,
    lines: int | None = None,
) -> None:
    """A readout box of 1-4 measurement lines in a corner, framed and/or on a dark fill."""
    s = scene.scale
    n = int(lines) if lines else int(rng.choice([1, 2, 3, 4], p=[0.35, 0.35, 0.2, 0.1]))
    text = _readout(rng, max(1, min(n, 4)))
    name, rgb = palette.color()
    style = random_text_style(rng, max(7.0, rng.uniform(10.0, 15.0) * s), palette.antialias)
    spacing = style.height * rng.uniform(1.35, 1.75)
    w, h = _block_size(text, style, spacing)
    pad = style.height * rng.uniform(0.3, 0.7)
    margin = 0.015 * min(scene.height, scene.width)
    for _ in range(6):
        x, y, corner = scene.corner_box(rng, w + 2 * pad, h + 2 * pad, margin)
        box = (x, y, w + 2 * pad, h + 2 * pad)
        if not _occupied(painter, *box) and not scene.overlap(*box):
            break
    frame = max(1, round(s * rng.uniform(0.7, 1.3))) if rng.random() < 0.35 else 0
    background = rng.uniform(0.4, 1.0) if rng.random() < 0.5 else 0.0
    _text_block(
        painter, text, (x + pad, y + pad), style, spacing, rgb, palette.blur, background, frame, pad
    )
    rec.update(
        lines=text,
        corner=corner,
        at=[round(x, 1), round(y, 1)],
        frame=frame,
        background=round(float(background), 3),
        color=name,
        rgb=list(rgb),
        antialias=palette.antialias,
        blur=round(palette.blur, 3),
        **style.record(),
    )


def colorbar(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> None:
    """A vertical grey or colour-map strip near the left or right edge, with ticks and labels.

    Scanners draw such bars themselves (``scanner_ui``); as a mark it serves users who
    want every overlay gone, and it is no part of ``mixed``.
    """
    s, H, W = scene.scale, scene.height, scene.width
    cmap = pick(rng, tuple(COLORMAPS), (0.35, 0.25, 0.15, 0.1, 0.15))
    bw = int(np.clip(round(rng.uniform(6.0, 14.0) * s), 1, max(1, W // 4)))
    bh = int(np.clip(round(rng.uniform(0.2, 0.5) * H), 1, H))
    side = "left" if rng.random() < 0.5 else "right"
    bx0, _, bx1, _ = scene.bbox
    outside = rng.random() < 0.5 and (bx0 > 2 * bw if side == "left" else W - bx1 > 2 * bw)
    gap = rng.uniform(0.01, 0.05) * W
    if outside:
        x = bx0 - gap - bw if side == "left" else bx1 + gap
    else:
        x = gap if side == "left" else W - gap - bw
    x = int(np.clip(round(x), 0, W - bw))
    y = int(np.clip(round(rng.uniform(0.05, 0.35) * H), 0, H - bh))
    paint_bar(painter, (x, y, bw, bh), cmap)

    name, rgb = palette.color()
    style = palette.style(1.0)
    cov = painter.layer()
    frame = rng.random() < 0.5
    if frame:
        g.polyline(cov, g.rect_points(x - 1, y - 1, x + bw, y + bh), 1, style.line_type, True)
    ticks = int(rng.integers(3, 8)) if rng.random() < 0.6 else 0
    inward = 1 if side == "left" else -1
    edge = x + bw + 1 if inward > 0 else x - 2
    tick_len = max(2.0, rng.uniform(3.0, 6.0) * s)
    for t in np.linspace(y, y + bh - 1, ticks) if ticks else ():
        g.line(cov, (edge, t), (edge + inward * tick_len, t), style.thickness, style.line_type)
    ends: list[str] = []
    if rng.random() < 0.45:
        v = rng.uniform(5, 80)
        ends = {"doppler": [f"+{v:.1f}", f"-{v:.1f}"], "grey": ["", ""]}.get(cmap, ["H", "S"])
        ts = random_text_style(rng, max(5.0, rng.uniform(7.0, 11.0) * s), style.antialias)
        for label, ty in zip(ends, (y - 1.8 * ts.height, y + bh + 0.8 * ts.height), strict=True):
            w = text_box(label, ts)[0] if label else 0
            tx = float(np.clip(x + bw / 2 - w / 2, 0, max(0, W - w - 1)))
            if label:
                put_text(cov, label, (tx, ty), ts)
    painter.paint(cov, rgb, blur=style.blur)
    rec.update(
        colormap=cmap,
        box=[x, y, bw, bh],
        side=side,
        outside_content=bool(outside),
        frame=frame,
        ticks=ticks,
        end_labels=ends,
        color=name,
        rgb=list(rgb),
        antialias=style.antialias,
    )


def side_letters(
    painter: Painter, scene: Scene, rng: np.random.Generator, palette: Palette, rec: dict
) -> None:
    """A side letter or short orientation word ("R", "LT", "Rt", "SAG") at a top corner of
    the image or by a top corner of the content, large and often bold."""
    s = scene.scale
    word = pick(rng, SIDES) if rng.random() < 0.8 else pick(rng, ("SAG", "TRV", "LONG", "TRANS"))
    name, rgb = palette.color()
    style = random_text_style(rng, max(7.0, rng.uniform(11.0, 24.0) * s), palette.antialias)
    if rng.random() < 0.5:
        style = TextStyle(style.font, style.height, True, style.antialias)
    w, asc, desc = text_box(word, style)
    for _ in range(8):  # off the scanner's own text where a top corner allows
        margin = rng.uniform(0.01, 0.05) * min(scene.height, scene.width)
        x0, y0, x1, _ = scene.bbox if rng.random() < 0.6 else (0, 0, scene.width, scene.height)
        left = rng.random() < 0.5
        x = x0 + margin if left else x1 - margin - w
        y = y0 + margin
        x = float(np.clip(x, 0, max(0.0, scene.width - w - 1)))
        y = float(np.clip(y, 0, max(0.0, scene.height - asc - desc - 1)))
        if not scene.overlap(x, y, w, asc + desc):
            break
    cov = painter.layer()
    put_text(cov, word, (x, y), style)
    painter.paint(cov, rgb, blur=palette.blur)
    rec.update(
        text=word, at=[round(x, 1), round(y, 1)], color=name, rgb=list(rgb), **style.record()
    )
