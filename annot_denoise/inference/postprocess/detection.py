"""Steps that refine the detections, before anything is inpainted.

They run after the detector of a two-stage model at native resolution; given
masks (``clean --masks``, ``eval --oracle``) are taken as they are.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import Field

from annot_denoise.inference.postprocess.common import (
    COLOUR_SHARE,
    border_value,
    box_around,
    coloured,
    near_value,
    square,
)
from annot_denoise.inference.postprocess.frame import Frame, StepConfig


class ScanEdgesConfig(StepConfig):
    reach: int = Field(6, ge=1, le=64, description="px of anatomy a pixel is compared with")
    tolerance: float = Field(
        4 / 255, ge=0, le=1, description="how far outside that anatomy's range a mark lies"
    )
    prob: float = Field(0.1, ge=0, le=1, description="below this the detector is sure of anatomy")
    anatomy: int = Field(
        1024, ge=1, description="px: smaller pieces off the surround are no anatomy"
    )
    margin: int = Field(32, ge=0, le=256, description="px around the detections measured")
    join: int = Field(6, ge=0, le=64, description="px: detections this close form one group")


class ColourCompletionConfig(StepConfig):
    reach: int = Field(4, ge=0, le=64, description="px from the detections a patch is taken in")


class FlatCompletionConfig(StepConfig):
    reach: int = Field(3, ge=1, le=32, description="px around a group searched")
    tolerance: int = Field(2, ge=0, le=255, description="8-bit levels from a flat value")
    contrast: int = Field(24, ge=0, le=255, description="levels a flat value lies from the ring")
    share: float = Field(0.05, ge=0, le=1, description="of a group's pixels that hold a value")


class CloseIslandsConfig(StepConfig):
    area: int = Field(256, ge=1, description="px: the largest island taken in")
    tolerance: float = Field(0.01, ge=0, le=1, description="flat, and the mark's value, within")
    reach: int = Field(4, ge=1, le=64, description="px around an island that give the mark's value")
    max_islands: int = Field(2000, ge=1, description="more islands in an image: none is taken in")


def scan_edges(frame: Frame, cfg: ScanEdgesConfig) -> Frame:
    """Drop the groups of detections that are only the scan's own edge against the black.

    The detector can take the anatomy's edge against the black surround for a
    mark: the sharp corner of a sector (it looks like an arrowhead), or the last
    rows of a rectangular scan a few px from the image's border. Repainted, the
    tissue there is pulled dark by the black beside it. A group of detections
    (those within ``join`` px of each other) is dropped when it touches the
    surround and each of its pixels is surround, or lies in every channel within
    ``tolerance`` of the range of the anatomy within ``reach`` px, or,
    next to the surround, is no brighter than that anatomy (the anti-aliased
    edge). Marks are brighter, darker or of another colour than the tissue beside
    them, so one such pixel keeps the group, and with it the faint fragments of a
    readout over bright tissue next to its clearly visible letters.

    Anatomy is what the detector is sure is no mark (``prob``), in pieces
    off the surround of ``anatomy`` px or more: the undetected rest of a mark
    (a letter's missed strokes, its fringe) must not vouch for its detected part.
    White text on saturated tissue at the scan's edge can still be dropped.
    """
    net, prob, detected = frame.net, frame.prob, frame.detected
    if not detected.any():
        return frame
    border = border_value(net)
    if border is None:
        return frame
    # Everything happens near the detections: the box around them all, grown by
    # ``margin`` px, in which pieces of anatomy are measured.
    box = box_around(detected, cfg.margin)
    planes = [np.ascontiguousarray(net[box][..., c]) for c in range(net.shape[-1])]
    found = detected[box]
    surround = near_value(net[box], border / 255)
    joined = cv2.dilate(found.view(np.uint8), square(cfg.join // 2))
    count, groups = cv2.connectedComponents(joined, connectivity=8)
    beside = cv2.dilate(surround.view(np.uint8), square(1)).view(bool)
    touching = np.unique(groups[found & beside])
    if not len(touching):
        return frame
    rest = (~found & ~surround).view(np.uint8)
    _, pieces, stats, _ = cv2.connectedComponentsWithStats(rest, connectivity=8)
    large = stats[:, cv2.CC_STAT_AREA] >= cfg.anatomy
    large[0] = False
    anatomy = large[pieces] & (prob[box] < cfg.prob)
    # Judged in the box of the groups that touch the surround.
    r = cfg.reach
    near = box_around(found & np.isin(groups, touching), r)
    known = anatomy[near]
    odd = np.zeros(known.shape, bool)
    kernel = square(r)
    for plane in planes:
        plane = plane[near]
        # No anatomy within reach: nothing explains the pixel (-1 and 2 are off scale).
        high = cv2.dilate(np.where(known, plane, np.float32(-1)), kernel)
        low = cv2.erode(np.where(known, plane, np.float32(2)), kernel)
        odd |= (plane > high + cfg.tolerance) | ((plane < low - cfg.tolerance) & ~beside[near])
    if len(planes) == 3 and known.any():
        colour = coloured(net[box][near])
        if colour[known].mean() <= COLOUR_SHARE:  # on a grey scan colour is a mark
            odd |= colour
    keep = np.ones(count, bool)
    keep[touching] = False
    keep[groups[near][odd & found[near] & ~surround[near]]] = True
    out = detected.copy()
    out[box] = found & keep[groups]
    frame.detected = out
    return frame


def colour_completion(frame: Frame, cfg: ColourCompletionConfig) -> Frame:
    """Add the rest of every coloured patch the detections touch, on grey scans.

    On grey anatomy stored as RGB (most ultrasound) a coloured pixel can only be a
    mark. The detector often leaves out the faint anti-aliased or JPEG-bled parts
    of a yellow or green mark; its coloured pixels within ``reach`` px are
    taken in with it. Coloured patches it did not touch (colour Doppler, say) are
    left alone, and one it touched (a caliper on a vessel) loses no more than that
    rim; scans with more colour than ``COLOUR_SHARE`` are colour scans, where
    this does nothing.
    """
    net, detected = frame.net, frame.detected
    if net.shape[-1] != 3 or not detected.any():
        return frame
    colour = coloured(net)
    touched = colour & detected
    if not touched.any() or colour.mean() >= COLOUR_SHARE:
        return frame
    count, labels = cv2.connectedComponents(colour.view(np.uint8), connectivity=8)
    keep = np.zeros(count, bool)
    keep[labels[touched]] = True
    keep[0] = False
    span = 2 * cfg.reach + 1
    near = cv2.dilate(detected.view(np.uint8), np.ones((span, span), np.uint8)).view(bool)
    frame.detected = detected | (keep[labels] & near)
    return frame


def flat_completion(frame: Frame, cfg: FlatCompletionConfig) -> Frame:
    """Add the undetected pixels near each group of marks that hold one of its flat
    values.

    Marks are drawn in flat colours (a white caliper, a grey dotted line); the
    detector can skip a pixel of a thin line, and a single missed pixel of a
    bright line on dark tissue costs more inside the mask than all the rest of
    its repair. A group's values are those held by at least 3 of its detected
    pixels and ``share`` of them, held by fewer of the undetected pixels
    within ``reach`` px of the group (its ring: the black around a label is
    not the label's), and lying ``contrast`` levels or more from the
    median of that ring (so a grey mark on tissue of its own grey takes nothing).
    Undetected pixels within ``reach`` px that hold one, within
    ``tolerance`` levels in every channel, are taken in.
    """
    net, detected = frame.net, frame.detected
    if not detected.any():
        return frame
    m = cfg.reach
    box = box_around(detected, m)
    found = detected[box]
    levels = np.rint(net[box] * 255).astype(np.int64)  # 8-bit levels
    ring = cv2.dilate(found.view(np.uint8), square(m)).view(bool) & ~found
    count, groups = cv2.connectedComponents((found | ring).view(np.uint8), connectivity=8)
    # Each group's background: the median, per channel, of its ring (the middle
    # of the group's run once sorted by group, then value).
    rid, around = groups[ring], levels[ring]
    starts = np.searchsorted(np.sort(rid), np.arange(count))
    sizes = np.bincount(rid, minlength=count)
    has = sizes > 0
    background = np.zeros((count, levels.shape[-1]), np.int64)
    for c in range(levels.shape[-1]):
        order = np.lexsort((around[:, c], rid))
        low = around[order, c][starts[has] + (sizes[has] - 1) // 2]
        high = around[order, c][starts[has] + sizes[has] // 2]
        background[has, c] = (low + high) // 2
    # Each group's flat values: (group, one integer per value) pairs held often.
    weights = np.int64(1) << (8 * np.arange(levels.shape[-1], dtype=np.int64))
    gid = groups[found].astype(np.int64)
    pairs, held = np.unique((gid << 32) + levels[found] @ weights, return_counts=True)
    group_of = pairs >> 32
    total = np.bincount(gid, minlength=count)
    value = (pairs & 0xFFFFFFFF)[:, None] // weights % 256
    often = (held >= 3) & (held >= cfg.share * total[group_of])
    often &= np.abs(value - background[group_of]).max(axis=1) >= cfg.contrast
    # Most of a mark's pixels are detected: a value its ring holds more often
    # (the black around a label on the surround) is the background's.
    outside, count_out = np.unique(
        (rid.astype(np.int64) << 32) + around @ weights, return_counts=True
    )
    at = np.minimum(np.searchsorted(outside, pairs), len(outside) - 1)
    often &= np.where(outside[at] == pairs, count_out[at], 0) < held
    if not often.any():
        return frame
    group_of, value = group_of[often], value[often]
    # A table of each group's flat values (rank k: its k-th), then per ring pixel:
    # does it hold one of its own group's?
    rank = np.arange(len(group_of)) - np.searchsorted(group_of, group_of)
    table = np.full((rank.max() + 1, count, levels.shape[-1]), -1000, np.int64)
    table[rank, group_of] = value
    take = np.zeros(len(rid), bool)
    for k in range(len(table)):
        take |= np.abs(around - table[k][rid]).max(axis=1) <= cfg.tolerance
    out = detected.copy()
    out[box][ring] |= take
    frame.detected = out
    return frame


def close_islands(frame: Frame, cfg: CloseIslandsConfig) -> Frame:
    """Add the small islands the detections enclose that are more of the same mark.

    The detector keys on a mark's edges; the flat core of a large solid mark (a
    filled arrowhead) can come out below the threshold. Left as it is, that island
    of pure mark survives the repair and bleeds into the fill around it. An island
    of at most ``area`` px is taken in when it is flat and has the value of the
    detected pixels around it, both within ``tolerance``. Letter counters and
    the inside of ROI boxes hold anatomy, which is neither, so they stay.
    """
    net, detected = frame.net, frame.detected
    if not detected.any():
        return frame
    box = box_around(detected)
    # One px of background around the detections' box: whatever touches it is open.
    free = np.pad(~detected[box], 1, constant_values=True).view(np.uint8)
    _, labels, stats, _ = cv2.connectedComponentsWithStats(free, connectivity=4)
    islands = np.nonzero(stats[:, cv2.CC_STAT_AREA] <= cfg.area)[0]
    islands = islands[islands != labels[0, 0]]
    if not len(islands) or len(islands) > cfg.max_islands:
        # (Thousands of islands: a mesh of detections, not marks with a core; the
        # check below costs about 50 us an island.)
        return frame
    labels = labels[1:-1, 1:-1]
    sub, found = net[box], detected[box]
    h, w = found.shape
    out = detected.copy()
    kernel = square(cfg.reach)
    for k in islands:
        x, y, bw, bh = (int(v) for v in stats[k, :4])
        x, y = x - 1, y - 1  # the padding
        near = (
            slice(max(y - cfg.reach, 0), min(y + bh + cfg.reach, h)),
            slice(max(x - cfg.reach, 0), min(x + bw + cfg.reach, w)),
        )
        island = labels[near] == k
        around = cv2.dilate(island.view(np.uint8), kernel).view(bool) & found[near]
        values = sub[near][island]
        level = np.median(values, axis=0)
        flat = np.abs(values - level).max(axis=-1) <= cfg.tolerance
        same = np.abs(np.median(sub[near][around], axis=0) - level).max() <= cfg.tolerance
        if same and flat.mean() >= 0.9:
            out[box][near][island] = True
    frame.detected = out
    return frame
