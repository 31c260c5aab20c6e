"""Contract tests for every drawer in ``DRAWERS`` and for the placement helpers."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from annot_denoise.synth.drawers import COLORS, DRAWERS, composite, describe_drawers
from annot_denoise.synth.placement import Scene, content_region, edge_points

VARIANTS = ["u8-grey", "u8-rgb", "u16-grey", "u16-rgb", "u8-rgba", "u16-rgba"]


def textured_scan(h: int, w: int, seed: int = 0, fan: bool = False) -> np.ndarray:
    """A noisy grey rectangle (or fan) on black with two dark blobs, uint8 HxW."""
    rng = np.random.default_rng(seed)
    img = rng.normal(110, 25, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    for cx, cy, r in ((0.35, 0.45, 0.08), (0.65, 0.6, 0.1)):
        img[(xx - cx * w) ** 2 + (yy - cy * h) ** 2 < (r * min(h, w)) ** 2] *= 0.25
    mask = np.zeros((h, w), np.uint8)
    if fan:
        apex = np.array([w / 2, -0.3 * h])
        ang = np.deg2rad(np.linspace(55, 125, 40))
        outer = apex + 1.25 * h * np.stack([np.cos(ang), np.sin(ang)], 1)
        inner = apex + 0.35 * h * np.stack([np.cos(ang[::-1]), np.sin(ang[::-1])], 1)
        cv2.fillPoly(mask, [np.vstack([outer, inner]).round().astype(np.int32)], 1)
    else:
        mask[h // 12 : h - h // 12, w // 8 : w - w // 8] = 1
    return (np.clip(img, 0, 255) * mask).astype(np.uint8)


def as_variant(grey: np.ndarray, variant: str) -> np.ndarray:
    dtype, layout = variant.split("-")
    img = grey.astype(np.uint16) * 257 if dtype == "u16" else grey.copy()
    if layout == "rgb":
        img = np.repeat(img[..., None], 3, axis=2)
    elif layout == "rgba":
        alpha = np.arange(img.size, dtype=img.dtype).reshape(img.shape) % 251
        img = np.dstack([img, img, img, alpha])
    return np.ascontiguousarray(img)


def run(name: str, image: np.ndarray, seed: int, **kwargs) -> tuple[np.ndarray, np.ndarray, dict]:
    out, record = image.copy(), {}
    mask = DRAWERS[name](out, np.random.default_rng(seed), record=record, **kwargs)
    return out, mask, record


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    diff = a != b
    return diff if diff.ndim == 2 else diff.any(axis=2)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_drawer_contract(name: str, variant: str) -> None:
    image = as_variant(textured_scan(120, 160, seed=1), variant)
    drawn_any = False
    for seed in range(4):
        out, mask, record = run(name, image, seed, colors=("white", "yellow", "cyan", "green"))
        out2, mask2, record2 = run(name, image, seed, colors=("white", "yellow", "cyan", "green"))
        assert out.dtype == image.dtype and out.shape == image.shape
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        np.testing.assert_array_equal(out, out2)
        np.testing.assert_array_equal(mask, mask2)
        assert record == record2
        json.dumps(record)
        # The mask is the coverage footprint: nothing outside it may change.
        assert not (changed(out, image) & ~mask).any()
        if image.ndim == 3 and image.shape[2] == 4:
            np.testing.assert_array_equal(out[..., 3], image[..., 3])
        drawn_any |= bool(changed(out, image).any())
    assert drawn_any


@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_drawer_draws_on_every_seed_at_scan_size(name: str) -> None:
    image = np.repeat(textured_scan(336, 544, seed=2, fan=True)[..., None], 3, axis=2)
    for seed in range(3):
        out, mask, _ = run(name, image, seed)
        assert mask.sum() > 10
        # Not every masked pixel must change: a dark readout box over the black margin
        # or a faint anti-aliasing fringe can leave a pixel as it was.
        assert changed(out, image).sum() > 10


@pytest.mark.parametrize(
    "shape", [(1, 1), (5, 7), (16, 16), (2, 40), (40, 3), (1, 1, 3), (16, 16, 4)]
)
@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_tiny_and_black_images_do_not_raise(name: str, shape: tuple[int, ...]) -> None:
    for image in (np.zeros(shape, np.uint8), np.full(shape, 90, np.uint16)):
        out, mask, record = run(name, image, 0)
        assert mask.shape == shape[:2]
        assert not (changed(out, image) & ~mask).any()
        json.dumps(record)
    black = np.zeros((64, 96, 3), np.uint8)
    out, mask, _ = run(name, black, 3)
    assert mask.any()


def test_region_is_respected_and_checked() -> None:
    image = textured_scan(200, 300, seed=3)
    region = np.zeros(image.shape, bool)
    region[100:190, 150:290] = True
    _, mask, record = run("calipers", image, 0, region=region)
    for pair in record["pairs"]:
        for x, y in pair:
            assert region[int(y), int(x)]
    assert mask.any()
    with pytest.raises(ValueError, match="region shape"):
        run("calipers", image, 0, region=region[:10])


def test_unknown_colour_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown colours"):
        run("text", textured_scan(64, 64), 0, colors=("chartreuse",))


def test_grey_gets_luminance_and_uint16_scales_by_257() -> None:
    alpha = np.full((2, 2), 255, np.uint8)
    grey8, grey16 = np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.uint16)
    composite(grey8, alpha, COLORS["yellow"])
    composite(grey16, alpha, COLORS["yellow"])
    r, g, b = COLORS["yellow"]
    assert grey8[0, 0] == round(0.299 * r + 0.587 * g + 0.114 * b)
    assert grey16[0, 0] == 257 * int(grey8[0, 0])
    rgba = np.zeros((2, 2, 4), np.uint16)
    rgba[..., 3] = 1234
    composite(rgba, alpha, COLORS["cyan"])
    assert rgba[0, 0, :3].tolist() == [257 * c for c in COLORS["cyan"]] and rgba[0, 0, 3] == 1234


def test_describe_drawers_covers_registry() -> None:
    described = describe_drawers()
    assert set(described) == set(DRAWERS)
    assert all(isinstance(v, str) and v for v in described.values())
    assert {"white", "yellow", "cyan", "green"} <= set(COLORS)


def test_content_region_finds_a_fan_and_falls_back_on_black() -> None:
    image = textured_scan(336, 544, seed=4, fan=True)
    region = content_region(image)
    truth = image > 0
    truth_filled = cv2.morphologyEx(truth.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((9, 9)))
    iou = (region & (truth_filled > 0)).sum() / (region | (truth_filled > 0)).sum()
    assert iou > 0.95
    assert not region[:, :20].any() and not region[0, :200].any()  # black corners stay out
    rgb = np.repeat(image[..., None], 3, axis=2)
    np.testing.assert_array_equal(content_region(rgb), region)
    assert content_region(np.zeros((30, 40), np.uint8)).all()
    assert content_region(np.zeros((1, 1), np.uint16)).shape == (1, 1)


def test_edge_points_land_on_edges() -> None:
    image = textured_scan(240, 320, seed=5)
    scene = Scene.from_image(image)
    rng = np.random.default_rng(0)
    blurred = cv2.GaussianBlur(image.astype(np.float32), (0, 0), 3)
    grad = np.hypot(cv2.Sobel(blurred, cv2.CV_32F, 1, 0), cv2.Sobel(blurred, cv2.CV_32F, 0, 1))
    at_edges = [grad[int(y), int(x)] for x, y in (scene.edge_point(rng) for _ in range(200))]
    inside = grad[scene.region]
    assert np.median(at_edges) > 2 * np.median(inside)
    points = edge_points(image, np.random.default_rng(1), 50)
    assert len(points) == 50
    assert all(0 <= x < 320 and 0 <= y < 240 for x, y in points)
    assert np.median([grad[int(y), int(x)] for x, y in points]) > 2 * np.median(inside)


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(1, 96),
    w=st.integers(1, 96),
    channels=st.sampled_from([0, 1, 2, 3, 4]),
    dtype=st.sampled_from([np.uint8, np.uint16]),
    seed=st.integers(0, 2**32 - 1),
    texture=st.booleans(),
)
def test_property_never_raises_and_mask_bounds_changes(h, w, channels, dtype, seed, texture):
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 0 else (h, w, channels)
    top = np.iinfo(dtype).max
    image = (
        rng.integers(0, top, shape, dtype=dtype, endpoint=True)
        if texture
        else np.zeros(shape, dtype)
    )
    for name in DRAWERS:
        out = image.copy()
        mask = DRAWERS[name](out, np.random.default_rng(seed), record={})
        assert mask.shape == image.shape[:2]
        assert not (changed(out, image) & ~mask).any()
        if channels in (2, 4):
            np.testing.assert_array_equal(out[..., -1], image[..., -1])


@pytest.mark.parametrize("name", sorted(DRAWERS))
def test_every_drawer_takes_sampled_colours(name: str) -> None:
    image = as_variant(textured_scan(120, 160, seed=6), "u8-rgb")
    out, mask, record = run(name, image, 0, colors=("sampled",))
    out2, _, _ = run(name, image, 0, colors=("sampled",))
    np.testing.assert_array_equal(out, out2)
    assert not (changed(out, image) & ~mask).any() and mask.any()
    json.dumps(record)
