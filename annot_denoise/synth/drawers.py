"""The annotation drawers: pure functions that burn marks into a scan and return their mask.

Every ``draw_*`` function has the same contract::

    mask = draw_x(image, rng, region=None, colors=("white", "yellow", "cyan"), record=None,
                  avoid=None)

(``draw_text`` and ``draw_mixed`` also take ``labels``, a replacement label vocabulary.)

It draws in place on an HxW, HxWx3 or HxWx4 uint8/uint16 array (alpha is left alone,
grey images get the colour's luminance), uses only ``rng`` (same image and seed give the
same bytes), and returns the boolean HxW mask of every pixel it painted; no pixel outside
the mask changes. ``region`` is the scan's content mask (computed when None). ``colors``
names colours in ``COLORS`` or holds ``"sampled"`` (a colour drawn per mark around the
families scanners use, see ``render.sample_color``). When a dict is passed as ``record``,
the drawn parameters are added to it, JSON-serialisable. ``avoid`` marks what the
scanner drew (``scanner_ui``): readouts, labels, side letters and body markers keep off
it where they can, since a scanner never prints over its own text; without it nothing
moves.
``DRAWERS`` maps names to functions; ``"mixed"`` combines the clinician's marks (not
``colorbar``: scanners draw bars themselves, see ``scanner_ui``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from . import icons, marks, overlays
from .placement import Scene
from .render import COLORS, SAMPLED, Painter, Palette, check_image, composite, sample_color
from .vocabulary import check_labels

__all__ = [
    "COLORS",
    "DRAWERS",
    "SAMPLED",
    "composite",
    "describe_drawers",
    "draw_arrows",
    "draw_body_marker",
    "draw_calipers",
    "draw_colorbar",
    "draw_cursors",
    "draw_markers",
    "draw_measurements",
    "draw_mixed",
    "draw_shapes",
    "draw_side_letters",
    "draw_text",
    "sample_color",
]

DEFAULT_COLORS: tuple[str, ...] = ("white", "yellow", "cyan")
# Below this many pixels on the shorter side nothing legible fits; draw nothing.
_MIN_SIDE = 3


def _run(
    part: Callable[..., object],
    image: np.ndarray,
    rng: np.random.Generator,
    region: np.ndarray | None,
    colors: Sequence[str],
    record: dict | None,
    avoid: np.ndarray | None,
    **kwargs: object,
) -> np.ndarray:
    """Set up painter, scene and palette for one call, run ``part`` and return the mask."""
    check_image(image)
    painter = Painter(image)
    palette = Palette(rng, colors, min(image.shape[:2]) / 500.0)
    if min(image.shape[:2]) < _MIN_SIDE:
        if record is not None:
            record["skipped"] = "image too small"
        return painter.mask
    scene = Scene.from_image(image, region, avoid)
    rec: dict = {}
    part(painter, scene, rng, palette, rec, **kwargs)
    if record is not None:
        record.update(rec)
    return painter.mask


def draw_calipers(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """Caliper pairs ("+"/"x") on structure edges, dotted/dashed joins, optional 1/2/3 numbers.

    Draws in place; returns the boolean HxW mask of the pixels it painted.
    """
    return _run(marks.calipers, image, rng, region, colors, record, avoid)


def draw_text(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Clinical text labels ("RT BREAST", "Lt Ovary", "SAG"...) in several fonts and sizes.

    ``labels`` replaces the built-in vocabulary (``vocabulary.LABELS`` and side + site
    combinations) with the caller's words, one label per item. Draws in place; returns
    the boolean HxW mask of the pixels it painted.
    """
    vocab = check_labels(labels) if labels is not None else None
    return _run(overlays.labels, image, rng, region, colors, record, avoid, vocabulary=vocab)


def draw_measurements(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
    lines: int | None = None,
) -> np.ndarray:
    """A corner readout box ("1 D 6.71cm", "Dist 1.23 cm"...), framed or on a dark fill.

    ``lines`` fixes the number of readout lines (1-4; random when None). Draws in place;
    returns the boolean HxW mask of the pixels it painted.
    """
    return _run(overlays.measurements, image, rng, region, colors, record, avoid, lines=lines)


def draw_arrows(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """Arrows with solid, hollow or open heads and straight or curved shafts, aimed at edges.

    Draws in place; returns the boolean HxW mask of the pixels it painted.
    """
    return _run(marks.arrows, image, rng, region, colors, record, avoid)


def draw_markers(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """A few to a dozen point markers ("+", "x", dots, circles), scattered or traced.

    Draws in place; returns the boolean HxW mask of the pixels it painted.
    """
    return _run(marks.markers, image, rng, region, colors, record, avoid)


def draw_shapes(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """ROI rectangles and brackets (solid/dashed) and dotted measurement ellipses.

    Draws in place; returns the boolean HxW mask of the pixels it painted.
    """
    return _run(marks.shapes, image, rng, region, colors, record, avoid)


def draw_colorbar(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """A vertical grey or colour-map bar near one side, with optional ticks and end labels.

    Scanners burn such bars in themselves: they belong to the scanner-interface generator
    (``scanner_ui``, drawn on both images of a pair), and this drawer is no part of
    ``mixed``. It stays as an explicit choice, for masks that must cover a bar. Draws in
    place; returns the boolean HxW mask of the pixels it painted. The bar keeps its own
    colours; ``colors`` applies to its frame, ticks and labels.
    """
    return _run(overlays.colorbar, image, rng, region, colors, record, avoid)


def draw_cursors(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """White pointer or pointing-hand cursors with a dark outline, parked on the image.

    Cursors are white on every scanner, so ``colors`` is accepted and not used. Draws in
    place; returns the boolean HxW mask of the pixels it painted.
    """
    return _run(icons.cursors, image, rng, region, colors, record, avoid)


def draw_body_marker(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """A body-marker pictogram (breast, abdomen, thyroid, neck, pelvis) with a probe bar.

    Draws in place; returns the boolean HxW mask of the pixels it painted.
    """
    return _run(icons.body_marker, image, rng, region, colors, record, avoid)


def draw_side_letters(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
) -> np.ndarray:
    """A side letter or orientation word ("R", "LT", "SAG") at a top corner, often bold.

    Draws in place; returns the boolean HxW mask of the pixels it painted.
    """
    return _run(overlays.side_letters, image, rng, region, colors, record, avoid)


# Probability that ``mixed`` includes each part; at least one is always drawn.
MIXED_ODDS: dict[str, float] = {
    "calipers": 0.55,
    "text": 0.5,
    "measurements": 0.3,
    "arrows": 0.2,
    "markers": 0.15,
    "shapes": 0.15,
    "side_letters": 0.2,
    "cursors": 0.15,
    "body_marker": 0.12,
}
_PARTS: dict[str, Callable[..., object]] = {
    "calipers": marks.calipers,
    "text": overlays.labels,
    "measurements": overlays.measurements,
    "arrows": marks.arrows,
    "markers": marks.markers,
    "shapes": marks.shapes,
    "side_letters": overlays.side_letters,
    "cursors": icons.cursors,
    "body_marker": icons.body_marker,
}


def _mixed(
    painter: Painter,
    scene: Scene,
    rng: np.random.Generator,
    palette: Palette,
    rec: dict,
    parts: Sequence[str] | None = None,
    vocabulary: Sequence[str] | None = None,
) -> None:
    odds_by_name = {k: v for k, v in MIXED_ODDS.items() if parts is None or k in parts}
    names = [name for name, p in odds_by_name.items() if rng.random() < p]
    if not names:
        odds = np.array(list(odds_by_name.values()))
        names = [list(odds_by_name)[int(rng.choice(len(odds), p=odds / odds.sum()))]]
    # Calipers come before the readout and labels that refer to them.
    # Cursors come last: the pointer is parked over whatever was drawn.
    order = [
        "shapes", "body_marker", "markers", "arrows", "calipers", "measurements", "text",
        "side_letters", "cursors",
    ]  # fmt: skip
    pairs = None
    drawn = []
    for name in sorted(names, key=order.index):
        sub: dict = {"drawer": name}
        kwargs: dict = {}
        if name == "text" and pairs and rng.random() < 0.5:
            # A sonographer often types the site label right under the measured lesion.
            ys = [p[1] for pair in pairs for p in pair]
            xs = [p[0] for pair in pairs for p in pair]
            kwargs["anchor"] = (float(np.mean(xs)), float(max(ys)))
        if name == "text":
            kwargs["vocabulary"] = vocabulary
        if name == "measurements" and pairs and rng.random() < 0.7:
            kwargs["lines"] = min(len(pairs), 4)
        result = _PARTS[name](painter, scene, rng, palette, sub, **kwargs)
        if name == "calipers":
            pairs = result
        drawn.append(sub)
    rec.update(parts=drawn)


def draw_mixed(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    region: np.ndarray | None = None,
    colors: Sequence[str] = DEFAULT_COLORS,
    record: dict | None = None,
    avoid: np.ndarray | None = None,
    parts: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """A random combination of the clinician's marks, labels often next to the calipers.

    Draws in place; returns the boolean HxW mask of the pixels it painted. ``record`` gets
    ``{"parts": [{"drawer": name, ...}, ...]}``. ``parts`` limits the drawers it may
    combine (e.g. to hold one style out of training); ``labels`` replaces the label
    vocabulary of its text. Colour bars are not among the parts: scanners draw them.
    """
    unknown = set(parts or ()) - set(MIXED_ODDS)
    if unknown or (parts is not None and not parts):
        raise ValueError(
            f"unknown or no mixed parts {sorted(unknown)}; choose from {list(MIXED_ODDS)}"
        )
    vocab = check_labels(labels) if labels is not None else None
    return _run(_mixed, image, rng, region, colors, record, avoid, parts=parts, vocabulary=vocab)


DRAWERS: dict[str, Callable[..., np.ndarray]] = {
    "calipers": draw_calipers,
    "text": draw_text,
    "measurements": draw_measurements,
    "arrows": draw_arrows,
    "markers": draw_markers,
    "shapes": draw_shapes,
    "colorbar": draw_colorbar,
    "cursors": draw_cursors,
    "body_marker": draw_body_marker,
    "side_letters": draw_side_letters,
    "mixed": draw_mixed,
}


def describe_drawers() -> dict[str, str]:
    """Drawer name -> the first line of its docstring."""
    return {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in DRAWERS.items()}
