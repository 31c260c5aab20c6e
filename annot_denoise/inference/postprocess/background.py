"""Steps at the scan's flat background: the black surround of a sector, the
plain backing of a label. A smudge on black is the most visible error there is.

The surround is the value at least a quarter of the image's outermost pixels
hold (``border_value``), measured once per image after translucent boxes are
undarkened; where it lies around the holes is found once, after the flat fills
have taken in what they take (``surround``).
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from annot_denoise.inference.postprocess.common import (
    FLAT_TOLERANCE,
    TELEA_RADIUS,
    border_value,
    both_ends,
    box_around,
    near_value,
    square,
    with_telea,
    within,
)
from annot_denoise.inference.postprocess.frame import Box, Frame, StepConfig

SURROUND_AREA = 16  # px: smaller flat pieces touching anatomy are dark speckle, not surround
# px of context around the holes in which the surround is found: enough for a Telea
# fill from the anatomy at surround_telea's largest reach (its ``near``).
NEAR_MAX = 8
SURROUND_REACH = 2 * NEAR_MAX + TELEA_RADIUS + 1


class FlatBackgroundConfig(StepConfig):
    grow: int = Field(16, ge=0, le=64, description="px of a missed rim or dim end taken in")


class SurroundTeleaConfig(StepConfig):
    near: int = Field(
        8, ge=1, le=NEAR_MAX, description="px from the surround where holes are refilled"
    )
    share: float = Field(1.0, ge=0, le=1, description="of Telea's fill from the anatomy mixed in")
    rectangle: float = Field(
        0.98, gt=0, le=1, description="anatomy filling this much of its box: a rectangular scan"
    )


class SurroundEdgeConfig(StepConfig):
    pass


def flat_background(frame: Frame, cfg: FlatBackgroundConfig) -> Frame:
    """Fill a hole on a flat background (a label on the black) with that background
    exactly, with the rim or dim end of the mark the detector missed (see
    ``flat_fills``)."""
    if not frame.hole.any():
        return frame
    fills = flat_fills(frame.image, frame.hole, border(frame), cfg.grow)
    for box, region, _ in fills:
        frame.hole[box] |= region
    frame.exact.extend(fills)
    return frame


def surround_telea(frame: Frame, cfg: SurroundTeleaConfig) -> Frame:
    """Refill holes in the anatomy next to the surround from the anatomy alone
    (Telea, the surround hidden), so the black beside them does not pull the
    repair dark (see ``away_from_surround``)."""
    found = surround(frame)
    if found is None:
        return frame
    # (Edited in place; where nothing was painted, the fill is the input itself.)
    if frame.fill is frame.net:
        frame.fill = frame.fill.copy()
    frame.fill = away_from_surround(frame.net, frame.image, frame.hole, frame.fill, found, cfg)
    return frame


def surround_edge(frame: Frame, cfg: SurroundEdgeConfig) -> Frame:
    """Give a hole across the edge of the surround the surround's value on its side
    of the edge (see ``beside_surround``)."""
    found = surround(frame)
    if found is None:
        return frame
    value, box, pixels = found
    frame.exact.append((box, beside_surround(frame.hole[box], pixels), value))
    return frame


def border(frame: Frame) -> np.ndarray | None:
    """The image's surround value, found once per image."""
    if "border" not in frame.cache:
        frame.cache["border"] = border_value(frame.image)
    return frame.cache["border"]


def surround(frame: Frame) -> tuple[np.ndarray, Box, np.ndarray] | None:
    """(value, box, pixels) of the surround around the holes, found once per image."""
    if "surround" not in frame.cache:
        found = find_surround(frame.image, frame.hole, border(frame)) if frame.hole.any() else None
        frame.cache["surround"] = found
    return frame.cache["surround"]


def flat_fills(
    color: np.ndarray, hard: np.ndarray, border: np.ndarray | None, grow: int
) -> list[tuple[Box, np.ndarray, np.ndarray]]:
    """Holes lying on a flat background, each as (box, region in the box, value).

    Marks on the black surround of a scan sector (labels, colour bars, boxes) are
    filled with that background exactly: the network's guess there is close but not
    exact, and a smudge on black is the most visible error there is. The background
    value is the most common one just outside the hole. The detector may have
    missed a rim of the mark, so the region grows over neighbours that differ from
    that value, by up to ``grow`` px; when it is then surrounded by the value
    alone it is filled (with the faint last pixel of an anti-aliased edge), else
    (anatomy around it) it is left to the network.
    """
    tol = FLAT_TOLERANCE * (257 if color.dtype == np.uint16 else 1)
    # Holes within 3 px of each other are judged together (the letters of a label).
    near = cv2.dilate(hard.view(np.uint8), np.ones((7, 7), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
    h, w = hard.shape
    kernel = np.ones((3, 3), np.uint8)
    margin = grow + 1
    fills = []
    for k in range(1, count):
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        box = (
            slice(max(y - margin, 0), min(y + bh + margin, h)),
            slice(max(x - margin, 0), min(x + bw + margin, w)),
        )
        group = labels[box] == k
        region = hard[box] & group
        others = hard[box] & ~group
        around = color[box][group & ~region]  # the 3 px just outside the holes
        if len(around) < 8:
            continue
        # The most common value, found on one integer key per pixel.
        keys = around.astype(np.int64)
        if keys.ndim == 2:
            keys = keys @ (np.int64(1) << (16 * np.arange(keys.shape[1], dtype=np.int64)))
        _, first, counts = np.unique(keys, return_index=True, return_counts=True)
        if counts.max() * 2 < len(around):  # no dominant value: anatomy, not a flat surround
            continue
        value = around[first[counts.argmax()]]
        if border is not None and np.abs(value.astype(np.int64) - border).max() <= tol:
            # A backing a level or two off the surround: the surround is what lies under it.
            value = border.astype(color.dtype).reshape(value.shape)
        dev = np.abs(color[box].astype(np.int64) - value)
        dev = dev.max(axis=2) if dev.ndim == 3 else dev
        differs_ = (dev > tol) & ~others
        for _ in range(grow + 1):
            ring = cv2.dilate(region.view(np.uint8), kernel).astype(bool) & ~region
            rim = ring & differs_
            if not rim.any():
                # The last, faintest steps of an anti-aliased edge or a dark backing,
                # within the tolerance: everything off the value joined to the region.
                faint = (dev > 0) & (dev <= tol) & ~others
                for _ in range(grow):
                    grown = cv2.dilate(region.view(np.uint8), kernel).view(bool) & faint
                    if not (grown & ~region).any():
                        break
                    region = region | grown
                fills.append((box, region, value))
                break
            region = region | rim
    return fills


def find_surround(
    color: np.ndarray, hard: np.ndarray, value: np.ndarray | None
) -> tuple[np.ndarray, Box, np.ndarray] | None:
    """(value, box, pixels in the box): the flat surround of a scan around its holes.

    The value is the one held by at least a quarter of the image's outermost
    pixels (none: no surround). The surround is the pixels within
    ``FLAT_TOLERANCE`` of it, outside the holes, in pieces of ``SURROUND_AREA`` px
    or more, or enclosed by holes alone: a dark speckle at that value inside the
    tissue is not surround. The box is the holes' box grown by ``SURROUND_REACH`` px.
    """
    if value is None:
        return None
    box = box_around(hard, SURROUND_REACH)
    hole = hard[box]
    near = near_value(color[box], value)
    flat = near & ~hole
    _, labels, stats, _ = cv2.connectedComponentsWithStats(flat.view(np.uint8), connectivity=8)
    # A small piece is dark speckle when it touches anatomy; one enclosed by holes
    # alone (a letter's counter on the black) is surround.
    beside = cv2.dilate((~near & ~hole).view(np.uint8), square(1)).view(bool)
    touching = np.zeros(len(stats), bool)
    touching[labels[flat & beside]] = True
    keep = ~(touching & (stats[:, cv2.CC_STAT_AREA] < SURROUND_AREA))
    keep[0] = False  # the label of everything not flat
    pixels = keep[labels]
    if not pixels.any():
        return None
    return value.astype(color.dtype).reshape(color.shape[2:]), box, pixels


def beside_surround(hole: np.ndarray, surround: np.ndarray) -> np.ndarray:
    """The parts of ``hole`` that lie on the ``surround`` (both in one box).

    A mark across the edge of the black surround (a readout box whose frame runs
    along the top of a linear scan, a label on a sector's rim) is half on black and
    half on anatomy, and the network paints both halves from both sides: a grey
    smear on the black. A hole pixel lies on the surround when the nearest known
    pixels on both sides of it, along its row or its column, are surround, and
    neither line has anatomy at both ends (a line drawn through the anatomy from
    black to black is anatomy across). The tip of a sector under a bar, with black
    above and below it, is taken for black: the rule cannot tell it from the black
    between a colour bar and a scan's straight edge, which is far more common.
    """
    taken = np.zeros_like(hole)
    # Only holes that touch the surround can lie on it: work in their box, grown by
    # the 1 px that holds the ends of every row and column through them.
    _, labels = cv2.connectedComponents(hole.view(np.uint8), connectivity=8)
    touching = np.unique(labels[hole & cv2.dilate(surround.view(np.uint8), square(1)).view(bool)])
    if not len(touching):
        return taken
    box = box_around(np.isin(labels, touching), 1)
    hole, surround = hole[box], surround[box]
    anatomy = ~surround & ~hole
    rows_s, rows_a = both_ends(hole, surround, anatomy)
    cols_s, cols_a = (m.T for m in both_ends(hole.T, surround.T, anatomy.T))
    taken[box] = hole & (rows_s | cols_s) & ~rows_a & ~cols_a
    return taken


def away_from_surround(
    net: np.ndarray,
    color: np.ndarray,
    hard: np.ndarray,
    content: np.ndarray,
    surround: tuple[np.ndarray, Box, np.ndarray],
    cfg: SurroundTeleaConfig,
) -> np.ndarray:
    """``content`` with, in holes in the anatomy within ``near`` px of the
    surround, a ``share`` (all of it, by default) of Telea's fill
    from the anatomy alone.

    The network's fill of a hole at the edge of the black is pulled dark by the
    black beside it: a dark notch in the tissue under a label or a box at the
    edge. Telea with the nearby surround hidden fills from the tissue side only.
    Only pixels inside the area the scan shows are mixed (see ``inside_anatomy``):
    the part of a label on the black side of a sector's slanted edge keeps the
    network's fill, not the tissue's.
    """
    value, box, pixels = surround
    hole = hard[box]
    near = hole & cv2.dilate(pixels.view(np.uint8), square(cfg.near)).view(bool)
    if not near.any():
        return content
    near &= inside_anatomy(color, hard, value, box, cfg.rectangle)
    if not near.any():
        return content
    hide = hole | (pixels & cv2.dilate(hole.view(np.uint8), square(2 * cfg.near)).view(bool))
    # In place: ``content`` is this image's own (a full copy of a 4000x4000 scan's
    # would cost 190 MB).
    with_telea(net[box], hide, content[box], cfg.share, near)
    return content


def inside_anatomy(
    color: np.ndarray, hard: np.ndarray, value: np.ndarray, box: Box, rectangle: float
) -> np.ndarray:
    """The pixels of ``box`` inside the area the scan shows, which is convex (a
    sector or a rectangle): the convex hull of the anatomy (every pixel outside the
    holes and more than ``FLAT_TOLERANCE`` from the surround's ``value`` in every
    channel), or its bounding box when the anatomy fills that (``rectangle``)."""
    # Every channel off the surround's value: the dark, faintly coloured fringe of
    # a mark on the black is not anatomy.
    anatomy = ~hard & ~np.logical_or.reduce(within(color, value))
    inside = np.zeros(hard[box].shape, np.uint8)
    rows, cols = np.nonzero(anatomy.any(axis=1))[0], np.nonzero(anatomy.any(axis=0))[0]
    if not len(rows):
        return inside.view(bool)
    around = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    if (anatomy[around] | hard[around]).mean() >= rectangle:
        # A rectangular scan: its corners are the box's, even where a readout box
        # hides one (the hull would cut that corner off).
        full = np.zeros(hard.shape, bool)
        full[around] = True
        return full[box]
    # The hull of all anatomy pixels is the hull of each row's and column's ends.
    h, w = hard.shape
    ends = np.concatenate(
        [
            np.stack([anatomy[rows].argmax(axis=1), rows], axis=1),
            np.stack([w - 1 - anatomy[rows, ::-1].argmax(axis=1), rows], axis=1),
            np.stack([cols, anatomy[:, cols].argmax(axis=0)], axis=1),
            np.stack([cols, h - 1 - anatomy[::-1, cols].argmax(axis=0)], axis=1),
        ]
    ).astype(np.int32)
    hull = cv2.convexHull(ends) - np.array([box[1].start, box[0].start], np.int32)
    cv2.fillConvexPoly(inside, hull, 1)
    return inside.view(bool)
