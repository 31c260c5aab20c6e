"""Translucent boxes under readouts: found after detection, undarkened before
the repair is written.

Readouts are often printed on a box that lets a share ``k`` of the light
through. Over dark tissue the detector finds the text but not the box; left
alone, the repair keeps a dark box. This step finds such boxes by their straight
edges, gives the inpainter the anatomy under them (the input divided by ``k``),
and writes that anatomy back; a box too dark to undarken, with an edge on every
side, is put into the hole whole.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from annot_denoise.inference.postprocess.common import square
from annot_denoise.inference.postprocess.frame import Box, Frame, StepConfig


class TranslucentBoxesConfig(StepConfig):
    join: int = Field(6, ge=0, le=64, description="px: marks this close belong to one group")
    reach: int = Field(24, ge=1, le=256, description="px beyond a group an edge is sought")
    floor: float = Field(
        4 / 255, ge=0, le=1, description="darker pixels outside say too little about k"
    )
    min_share: float = Field(0.1, gt=0, le=1, description="the darkest box undarkened (k)")
    max_share: float = Field(0.7, gt=0, le=1, description="the lightest box taken for one (k)")
    span: int = Field(12, ge=1, description="px: a box's shortest side, and of an edge seen")
    slack: float = Field(1.5 / 255, ge=0, le=1, description="how closely an edge fits k")
    spread: float = Field(0.1, ge=0, le=1, description="how closely an edge fits k, relative")
    fit: float = Field(0.8, ge=0, le=1, description="share of an edge's pixels that must fit")
    agree: float = Field(0.1, ge=0, le=1, description="largest difference between sides' k")
    black: float = Field(1 / 255, ge=0, le=1, description="black: nothing to undarken beyond")
    hug: float = Field(0.6, ge=0, le=1, description="share of a side of detections: the border")
    max_groups: int = Field(100, ge=1, description="more groups of marks: no box is sought")


def translucent_boxes(frame: Frame, cfg: TranslucentBoxesConfig) -> Frame:
    """Find translucent boxes under readouts: an opaque one joins the detections, a
    translucent one is undarkened in the network's input (see ``find_boxes``)."""
    for box, k in find_boxes(frame.net, frame.detected, cfg):
        if k == 0:  # an opaque box: into the hole
            frame.detected[box] = True
        else:
            frame.veils.append((box, k))
    if frame.veils:
        frame.net = frame.net.copy()
        for box, k in frame.veils:
            frame.net[box] = np.minimum(frame.net[box] / k, 1.0)
    return frame


def undarken_boxes(frame: Frame, cfg: TranslucentBoxesConfig) -> Frame:
    """Write the anatomy under each translucent box back: the input divided by ``k``,
    before anything is judged by it."""
    if not frame.veils:
        return frame
    image = frame.image.copy()
    top = np.iinfo(image.dtype).max
    for box, k in frame.veils:
        image[box] = np.minimum(np.rint(image[box] / k), top).astype(image.dtype)
        frame.changed_boxes.append(box)
    frame.image = image
    return frame


def find_boxes(
    net: np.ndarray, detected: np.ndarray, cfg: TranslucentBoxesConfig
) -> list[tuple[Box, float]]:
    """Translucent dark boxes under groups of marks, each as (box, the share ``k``
    of light the box lets through); ``k`` is 0 for a box too dark to undarken.

    Readouts are often printed on a box that darkens the anatomy under it to
    ``k`` times itself (black at an opacity of ``1 - k``). Over dark tissue the
    detector finds the text, and often the box's border, but not the box, and the
    repair leaves a dark box behind. A box is taken when every side of a group of
    marks is accounted for: a straight edge across which the known pixels step
    down to ``k`` times their neighbours outside, or, where no such edge shows,
    black or the box's border among the detections. At least one side must be
    such an edge and all edges must agree on ``k``. A side without an edge is
    then moved in past every line that is not darkened, judged across the edges
    found or against the line beyond it; a line that cannot be judged drops the
    box, unless it lies among the group's own lines (a box holds its text).
    Inside the box the anatomy is the input divided by ``k``, which keeps its
    texture. Below ``min_share`` that would multiply the rounding by ``1 / k``: a
    box with an edge on every side is then repainted whole (``k`` = 0), and one
    without is left alone.
    """
    if not detected.any():
        return []
    h, w = detected.shape
    extents = _group_extents(detected, cfg)
    if not extents or len(extents) > cfg.max_groups:
        # (More: marks all over the image, not a few readouts.)
        return []
    # Work in the box the searches can reach (edges up to ``reach`` + 1 px beyond a
    # group, and 3 px either side of an edge).
    reach = cfg.reach + 5
    top, left = (
        max(min(e[0] for e in extents) - reach, 0),
        max(min(e[2] for e in extents) - reach, 0),
    )
    crop = (
        slice(top, min(max(e[1] for e in extents) + reach + 1, h)),
        slice(left, min(max(e[3] for e in extents) + reach + 1, w)),
    )
    extents = [(y0 - top, y1 - top, x0 - left, x1 - left) for y0, y1, x0, x1 in extents]
    sub, found = np.ascontiguousarray(net[crop]), np.ascontiguousarray(detected[crop])
    if sub.shape[-1] == 3:
        light = cv2.transform(sub, np.full((1, 3), 1 / 3, np.float32))
    else:
        light = sub[..., 0]
    known = ~cv2.dilate(found.view(np.uint8), square(1)).view(bool)
    free = ~found
    veils = []
    for extent in extents:
        if (box := _box_around(light, known, free, extent, cfg)) is not None:
            (y0, y1, x0, x1), k = box
            veils.append(((slice(top + y0, top + y1 + 1), slice(left + x0, left + x1 + 1)), k))
    return veils


def _group_extents(detected: np.ndarray, cfg: TranslucentBoxesConfig) -> list[tuple]:
    """(y0, y1, x0, x1) of each group of marks (detections joined over ``join`` px,
    the joining undone), the groups too thin to hold a box left out."""
    h, w = detected.shape
    joined = cv2.dilate(detected.view(np.uint8), square(cfg.join))
    _, _, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    extents = [
        (
            y + cfg.join,
            min(y + bh - cfg.join, h) - 1,
            x + cfg.join,
            min(x + bw - cfg.join, w) - 1,
        )
        for x, y, bw, bh, _ in stats[1:]
    ]
    return [e for e in extents if min(e[1] - e[0], e[3] - e[2]) >= cfg.span]


def _box_around(
    light: np.ndarray,
    known: np.ndarray,
    free: np.ndarray,
    extent: tuple,
    cfg: TranslucentBoxesConfig,
) -> tuple[list[int], float] | None:
    """The box a group of marks sits on, as ([y0, y1, x0, x1], k), or None: every side
    an edge or accounted for, the edges agreeing on ``k`` (see :func:`find_boxes`)."""
    sides = []
    for s in range(4):
        sides.append(_veil_edge(light, known, s, extent, cfg))
        if sides[-1] is None:
            return None
    ratios = np.array([r for _, r in sides if r is not None])
    if not len(ratios):
        return None
    k = float(np.median(ratios))
    if np.abs(ratios - k).max() > cfg.agree:
        return None
    edges = [edge for edge, _ in sides]
    if k < cfg.min_share:
        # Too dark to undarken (the rounding would be multiplied by 1 / k): a
        # box with an edge on every side is repainted whole instead.
        if len(ratios) < 4:
            return None
        k = 0.0
    steps = [r is not None for _, r in sides]
    for s in range(4):
        if not steps[s]:
            edges[s] = _veil_trim(light, free, s, edges, steps, extent, k, cfg)
            if edges[s] is None:
                return None
    y0, y1, x0, x1 = edges
    return (edges, k) if y0 < y1 and x0 < x1 else None


def _oriented(arrays: tuple[np.ndarray, ...], side: int) -> tuple[tuple[np.ndarray, ...], int]:
    """``arrays`` turned so that ``side`` (0 top, 1 bottom, 2 left, 3 right) is a
    row, and the step from that side outwards (-1 or 1)."""
    if side >= 2:
        arrays = tuple(a.T for a in arrays)
    return arrays, (-1 if side in (0, 2) else 1)


def _row_medians(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The median of each row of ``values`` over ``mask`` (NaN for an empty row):
    one sort for all rows, twenty times faster than a median a row."""
    count = mask.sum(axis=1)
    ordered = np.sort(np.where(mask, values, np.inf), axis=1)
    rows = np.arange(len(values))
    last = np.maximum(count - 1, 0)
    middle = 0.5 * (ordered[rows, last // 2] + ordered[rows, last - last // 2])
    return np.where(count > 0, middle, np.nan)


def _veil_edge(
    light: np.ndarray,
    known: np.ndarray,
    side: int,
    extent: tuple[int, int, int, int],
    cfg: TranslucentBoxesConfig,
) -> tuple[int, float | None] | None:
    """(the box's last row or column on ``side`` of a group, the ratio across its
    edge), the ratio ``None`` where black or detections end the side instead, or
    ``None`` when nothing does (see ``find_boxes``). ``extent``: y0, y1, x0, x1."""
    (light, known), out = _oriented((light, known), side)
    start = extent[side]
    lo, hi = extent[2:] if side < 2 else extent[:2]
    span = slice(lo, hi + 1)
    # Every line out to ``reach`` px at once (lines whose outer neighbour is in
    # the image): inner line, the line beyond it, which pairs are known.
    lines = start + out * np.arange(
        min(cfg.reach + 1, start if out < 0 else len(light) - 1 - start)
    )
    a, b = light[lines, span], light[lines + out, span]
    usable = known[lines, span] & known[lines + out, span]
    used = usable.sum(axis=1)
    black = (usable & (a <= cfg.black) & (b <= cfg.black)).sum(axis=1) > 0.9 * used
    lit = usable & (b >= cfg.floor)
    bright = lit.sum(axis=1)
    k = _row_medians(a / np.where(lit, b, 1), lit)
    fits = lit & (np.abs(a - k[:, None] * b) <= np.maximum(cfg.slack, cfg.spread * b))
    fits = fits.sum(axis=1)
    first_black = None
    for i, line in enumerate(lines):
        if used[i] < max(cfg.span, a.shape[1] // 2):
            continue
        if first_black is None and black[i]:
            first_black = int(line)  # the box may end anywhere in black; an edge beyond counts
        elif (
            bright[i] >= max(cfg.span, used[i] // 2)
            and k[i] <= cfg.max_share
            and fits[i] >= cfg.fit * bright[i]
        ):
            return int(line), float(k[i])
    if first_black is not None:
        return first_black, None
    rim = ~known[min(start, start - 2 * out) : max(start, start - 2 * out) + 1, span]
    if rim.any(axis=0).mean() >= cfg.hug:
        return start, None  # the box's border is among the detections
    return None


def _veil_trim(
    light: np.ndarray,
    free: np.ndarray,
    side: int,
    edges: list[int],
    steps: list[bool],
    extent: tuple[int, int, int, int],
    k: float,
    cfg: TranslucentBoxesConfig,
) -> int | None:
    """The edge on ``side`` of a box whose other edges are ``edges`` (``steps``:
    found by their step), moved in to the first line (row or column) that is
    darkened; ``None`` when a line on the way cannot be judged.

    A line is judged across the edges found at its two ends (just inside them
    against just outside), or else against the line beyond ``edges[side]``.
    Black lines and lines of detections alone are passed over: they come out
    the same either way. A line that cannot be judged is taken for the box's
    when it lies within the group's ``extent`` (the box holds its text), else
    it drops the box. ``free``: pixels not detected.
    """
    (light, free), out = _oriented((light, free), side)
    n = light.shape[1]
    ends = (2, 3) if side < 2 else (0, 1)
    beyond = edges[side] + out
    outside = light[beyond] if 0 <= beyond < light.shape[0] else None
    last = edges[side ^ 1]  # the opposite edge
    span = slice(edges[ends[0]], edges[ends[1]] + 1)
    for line in range(edges[side], last - out, -out):
        row, ok = light[line], free[line]
        if ok[span].sum() < 4 or np.median(row[span][ok[span]]) <= cfg.black:
            continue
        inner, outer = [], []
        for end, sign in zip(ends, (1, -1)):
            if steps[end]:  # 3 px either side of that edge, along this line
                c = edges[end]
                for near, far in ((c, c + 3 * sign), (c - sign, c - 4 * sign)):
                    cols = np.arange(near, far, 1 if far > near else -1)
                    cols = cols[(cols >= 0) & (cols < n)]
                    (inner if near == c else outer).append(row[cols][ok[cols]])
        inner = np.concatenate([np.empty(0, row.dtype), *inner])
        outer = np.concatenate([np.empty(0, row.dtype), *outer])
        lit = ok[span] & (outside[span] >= cfg.floor) if outside is not None else None
        if len(inner) >= 2 and len(outer) >= 2 and np.median(outer) >= cfg.floor:
            ratio = np.median(inner) / np.median(outer)
        elif lit is not None and lit.sum() >= 4:
            ratio = np.median(row[span][lit] / outside[span][lit])
        elif (line - extent[side]) * out <= 0:
            return line  # no judging it, but among the marks' lines: inside the box
        else:
            return None
        if ratio <= (1 + k) / 2:
            return line
    return None
