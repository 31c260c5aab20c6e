"""The scanner's own interface: what every screen burns in regardless of any clinician.

``draw_scanner_ui`` paints a depth scale along the field of view (ticks or dots, numbers,
"cm", focus triangles), a probe-orientation logo by a top corner of the fan, grey and
colour bars, text blocks in the screen corners (probe, frequency, gain, depth, frame rate,
MI/TIS, date and time, a frame counter like ``642/642``), a TGC curve and a cine timeline.
Where things go is a ``Layout``, one per vendor-like screen in ``LAYOUTS``; fonts, sizes,
greys, whites and blue-greys and the presence of each part are drawn from ``rng``.

The synthesis pipeline draws this on both images of a pair (``scanner_ui="keep"``), so
the network learns to leave it, or on the annotated one only (``"remove"``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import ui_parts
from .placement import Outline
from .render import Painter, check_image, pick
from .text import FONTS, TextStyle, put_text, random_text_style, text_box

RGB = tuple[int, int, int]
# Below this many pixels on the shorter side a screen has no room for an interface.
MIN_SIDE = 40

VENDORS = ("LOGIQ E9", "LOGIQ P6", "Voluson E8", "ACUSON", "EPIQ 7G", "SonoSite", "Mindray")
PROBES = ("L12-5", "C5-1", "9L-D", "ML6-15", "L25xp/13-6", "C1-6", "L14-5", "P4-2", "L13-3s")
PRESETS = ("Breast", "Abdomen", "Thyroid", "Vascular", "MSK", "Nerve", "OB", "Ophthalmic")


@dataclass(frozen=True)
class Layout:
    """Where one vendor-like screen puts its interface.

    Corners are "top-left", "top-right", "bottom-left" or "bottom-right" of the screen;
    sides are "left" or "right" of the field of view; None leaves a part out.
    """

    name: str
    settings: str | None  # acquisition settings block (gain, depth, frame rate, ...)
    vendor: str | None  # vendor, probe and preset block
    clock: str | None  # date, time and frame counter block
    depth_side: str  # the side of the field of view the depth scale runs along
    depth_at: str  # "fan": beside the field of view; "screen": at the screen's edge
    bar: str | None  # top corner holding the grey / colour bar
    logo: str  # top corner of the fan for the orientation mark
    title: bool  # one line of settings centred above the field of view
    tgc: bool
    cine: bool


LAYOUTS: dict[str, Layout] = {
    "logiq": Layout(
        "logiq", "top-left", "top-left", "top-right", "right", "fan", "top-right", "left",
        False, True, False,
    ),
    "voluson": Layout(
        "voluson", "top-right", "top-left", "top-right", "right", "fan", "top-left", "left",
        False, False, True,
    ),
    "sonosite": Layout(
        "sonosite", "bottom-right", "bottom-left", "top-right", "right", "screen", None, "left",
        False, False, False,
    ),
    "butterfly": Layout(
        "butterfly", None, None, None, "right", "screen", None, "left", True, False, False,
    ),
    "interson": Layout(
        "interson", None, "top-right", "top-right", "left", "screen", None, "left",
        False, False, False,
    ),
    "mindray": Layout(
        "mindray", "top-left", "top-right", "bottom-right", "left", "fan", "top-right", "right",
        False, True, True,
    ),
}  # fmt: skip


def ui_color(rng: np.random.Generator) -> tuple[str, RGB]:
    """An interface colour: white, a light or mid grey, or a blue-grey."""
    tone = pick(rng, ("white", "grey", "blue-grey"), (0.45, 0.35, 0.2))
    level = rng.uniform(215, 255) if tone == "white" else rng.uniform(120, 215)
    if tone == "blue-grey":
        return tone, (round(level * rng.uniform(0.7, 0.85)), round(level * 0.9), round(level))
    return tone, (round(level),) * 3


def _settings(rng: np.random.Generator, depth: float, probe: str) -> list[str]:
    pool = [
        probe,
        f"{int(rng.integers(8, 90))}Hz" if rng.random() < 0.5 else f"FR {int(rng.integers(8, 60))}",
        f"G {int(rng.integers(20, 90))}"
        if rng.random() < 0.5
        else f"Gn {int(rng.integers(0, 80))}",
        f"D {depth:.1f}cm" if rng.random() < 0.5 else f"{depth:.1f} cm",
        f"DR {int(rng.integers(40, 90))}",
        f"Frq {rng.uniform(2.0, 18.0):.1f}MHz",
        f"MI {rng.uniform(0.1, 1.4):.1f}",
        f"TIS {rng.uniform(0.0, 1.0):.1f}",
        "2D",
        f"PWR {int(rng.integers(50, 101))}%",
        f"{int(rng.integers(40, 100))}%",
        f"Z {rng.uniform(0.8, 2.0):.1f}",
        pick(rng, ("Res", "Gen", "Pen", "P Low", "P Med", "HAR", "CHI")),
    ]
    n = int(rng.integers(3, 8))
    keep = np.sort(rng.choice(len(pool), n, replace=False))
    return [pool[i] for i in keep]


def _clock(rng: np.random.Generator) -> list[str]:
    y, m, d = int(rng.integers(2005, 2027)), int(rng.integers(1, 13)), int(rng.integers(1, 29))
    month = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    date = pick(rng, (f"{y}-{m:02d}-{d:02d}", f"{d} {month[m - 1]} {y}", f"{d:02d}/{m:02d}/{y}"))
    time = f"{int(rng.integers(0, 24)):02d}:{int(rng.integers(0, 60)):02d}"
    if rng.random() < 0.6:
        time += f":{int(rng.integers(0, 60)):02d}"
    lines = [date, time] if rng.random() < 0.7 else [f"{date} {time}"]
    if rng.random() < 0.5:
        n = int(rng.integers(10, 1000))
        lines.append(f"{int(rng.integers(1, n + 1)) if rng.random() < 0.4 else n}/{n}")
    return lines


def _text_block(
    painter: Painter,
    scene: Outline,
    rng: np.random.Generator,
    lines: list[str],
    corner: str,
    style: TextStyle,
    rgb: RGB,
    below: float,
    inset: dict[str, float],
) -> tuple[dict, float]:
    """Lines at a screen corner, stacked under ``below`` px already used there and
    ``inset[corner]`` px in from the side; returns the record and the new height used.
    Blocks are kept to a quarter of the screen each way."""
    W, H = scene.width, scene.height
    spacing = style.height * rng.uniform(1.3, 1.7)
    lines = [t for t in lines if text_box(t, style)[0] <= 0.25 * W][
        : max(1, int(0.25 * H / spacing))
    ]
    if not lines:
        return {}, below
    width = max(text_box(t, style)[0] for t in lines)
    margin = max(1.0, rng.uniform(0.005, 0.02) * min(W, H))
    side = margin + inset.get(corner, 0.0)
    x = side if "left" in corner else W - side - width
    top = margin + below
    cov = painter.layer()
    align_right = "right" in corner and rng.random() < 0.7
    for i, text in enumerate(lines):
        offset = i * spacing if "top" in corner else (i - len(lines) + 1) * spacing
        ty = top + offset if "top" in corner else H - margin - below - style.height + offset
        tx = x + (width - text_box(text, style)[0] if align_right else 0)
        put_text(cov, text, (tx, ty), style)
    painter.paint(cov, rgb)
    used = below + len(lines) * spacing + margin
    return {"corner": corner, "lines": lines, **style.record()}, used


def draw_scanner_ui(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    layout: str | Layout | None = None,
    record: dict | None = None,
) -> np.ndarray:
    """Burn a scanner interface into ``image`` in place; return the mask it painted.

    ``region`` is the field of view (``content_region`` when None); ``layout`` a name in
    ``LAYOUTS``, a ``Layout``, or None for a random one. Same image and seed give the same
    bytes. Screens under ``MIN_SIDE`` px get nothing. The depth scale, logo, TGC curve and
    bars keep to the rim of the field of view and the screen's edges, and text blocks to
    its corners, so the middle of the image is never covered.
    """
    check_image(image)
    painter = Painter(image)
    if min(image.shape[:2]) < MIN_SIDE:
        if record is not None:
            record["skipped"] = "image too small"
        return painter.mask
    if layout is None:
        layout = LAYOUTS[pick(rng, tuple(LAYOUTS))]
    elif isinstance(layout, str):
        try:
            layout = LAYOUTS[layout]
        except KeyError:
            raise ValueError(
                f"unknown layout {layout!r}; choose one of {sorted(LAYOUTS)}"
            ) from None
    scene = Outline.from_image(image, region)
    s = scene.scale
    tone, rgb = ui_color(rng)
    antialias = bool(rng.random() < 0.6)
    font = pick(rng, FONTS)
    style = random_text_style(rng, max(6.0, rng.uniform(8.0, 12.5) * s), antialias, font)
    depth = float(rng.choice([2.5, 3.0, 4.0, 4.5, 5.0, 6.0, 8.0, 10.0, 12.0, 16.0, 20.0]))
    probe = pick(rng, PROBES)
    rec: dict = {"layout": layout.name, "tone": tone, "rgb": list(rgb), **style.record()}

    def shade() -> RGB:
        # Parts of one screen differ a little in brightness, never in hue.
        k = rng.uniform(0.75, 1.0) if rng.random() < 0.4 else 1.0
        return tuple(round(c * k) for c in rgb)

    if layout.bar and rng.random() < 0.8:
        cmap = "grey" if rng.random() < 0.75 else pick(rng, tuple(ui_parts.COLORMAPS)[1:])
        rec["bar"] = ui_parts.bar(painter, scene, rng, shade(), style, layout.bar, cmap)
    # Text in the bar's corner starts beside the bar, as on Voluson screens.
    inset = {}
    if "bar" in rec:
        x, _, bw, _ = rec["bar"]["box"]
        inset[layout.bar] = x + bw + 4.0 if "left" in layout.bar else scene.width - x + 4.0
    used: dict[str, float] = {}
    blocks = []
    for corner, lines in (
        (layout.vendor, [pick(rng, VENDORS), f"{probe} {pick(rng, PRESETS)}"]),
        (layout.settings, _settings(rng, depth, probe)),
        (layout.clock, _clock(rng)),
    ):
        if corner is None or rng.random() < 0.15:
            continue
        block, used[corner] = _text_block(
            painter, scene, rng, lines, corner, style, shade(), used.get(corner, 0.0), inset
        )
        if block:
            blocks.append(block)
    rec["text"] = blocks
    if layout.title and rng.random() < 0.9:
        title = (
            f"TIS: {rng.uniform(0, 1):.2f}, MI: {rng.uniform(0.1, 1.4):.2f}, {pick(rng, PRESETS)}"
        )
        w = text_box(title, style)[0]
        cov = painter.layer()
        put_text(cov, title, ((scene.width - w) / 2, max(1.0, 0.004 * scene.height)), style)
        painter.paint(cov, shade())
        rec["title"] = title
    if rng.random() < 0.9:
        rec["depth_scale"] = ui_parts.depth_scale(
            painter, scene, rng, shade(), style, layout.depth_side, layout.depth_at, depth
        )
    if rng.random() < 0.75:
        rec["logo"] = ui_parts.logo(painter, scene, rng, _logo_color(rng, rgb), style, layout.logo)
    if layout.tgc and rng.random() < 0.6:
        side = "left" if layout.depth_side == "right" else "right"
        rec["tgc"] = ui_parts.tgc_curve(painter, scene, rng, shade(), side)
    if layout.cine and rng.random() < 0.6:
        rec["cine"] = ui_parts.cine_bar(painter, scene, rng, shade(), style)
    if record is not None:
        record.update(rec)
    return painter.mask


def _logo_color(rng: np.random.Generator, rgb: RGB) -> RGB:
    """Orientation marks are the interface colour or a vendor's blue."""
    if rng.random() < 0.35:
        return (
            round(rng.uniform(40, 110)),
            round(rng.uniform(110, 170)),
            round(rng.uniform(220, 255)),
        )
    return rgb
