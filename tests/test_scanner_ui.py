"""The scanner-interface generator and what ``annotate`` does with it (keep / remove / off)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_drawers import VARIANTS, as_variant, changed, textured_scan

from annot_denoise.io import differs
from annot_denoise.synth.drawers import DRAWERS
from annot_denoise.synth.pipeline import SynthError, annotate, promote
from annot_denoise.synth.placement import content_region, region_bbox
from annot_denoise.synth.scanner_ui import LAYOUTS, MIN_SIDE, draw_scanner_ui


def screen(h: int = 420, w: int = 640, seed: int = 0) -> np.ndarray:
    """A full scanner screen: a fan in the middle of a wide black frame, RGB."""
    scan = textured_scan(int(h * 0.8), int(w * 0.55), seed=seed, fan=True)
    img = np.zeros((h, w), np.uint8)
    y, x = (h - scan.shape[0]) // 2, (w - scan.shape[1]) // 2
    img[y : y + scan.shape[0], x : x + scan.shape[1]] = scan
    return np.repeat(img[..., None], 3, axis=2)


def crop_scan(seed: int = 0) -> np.ndarray:
    """A scan cropped to its image area (no margins), grey."""
    return textured_scan(360, 480, seed=seed)


def centre(image: np.ndarray) -> np.ndarray:
    """The middle of the field of view: its bounding box shrunk by a quarter on each side."""
    x0, y0, x1, y1 = region_bbox(content_region(image))
    box = np.zeros(image.shape[:2], bool)
    dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
    box[y0 + dy : y1 - dy, x0 + dx : x1 - dx] = True
    return box


def ui(image: np.ndarray, seed: int, **kwargs) -> tuple[np.ndarray, np.ndarray, dict]:
    out, record = image.copy(), {}
    mask = draw_scanner_ui(out, np.random.default_rng(seed), record=record, **kwargs)
    return out, mask, record


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_same_bytes_and_mask_bounds_the_change(variant: str) -> None:
    image = as_variant(textured_scan(200, 300, seed=1), variant)
    for seed in range(3):
        out, mask, record = ui(image, seed)
        out2, mask2, record2 = ui(image, seed)
        np.testing.assert_array_equal(out, out2)
        np.testing.assert_array_equal(mask, mask2)
        assert record == record2 and json.dumps(record)
        assert out.dtype == image.dtype and out.shape == image.shape
        assert changed(out, image).any()
        assert not (changed(out, image) & ~mask).any()
        if image.ndim == 3 and image.shape[2] == 4:
            np.testing.assert_array_equal(out[..., 3], image[..., 3])
    assert ui(image, 0)[2] != ui(image, 1)[2]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_every_layout_draws_along_the_rim_and_never_in_the_middle(layout: str) -> None:
    for image in (screen(seed=2), crop_scan(seed=3)):
        middle = centre(image)
        drawn = 0
        for seed in range(6):
            out, mask, record = ui(image, seed, layout=layout)
            assert record["layout"] == layout
            assert not (mask & middle).any(), (layout, seed, record)
            drawn += int(changed(out, image).sum())
        assert drawn > 200


def test_a_screen_gets_text_scale_and_logo_in_its_margins() -> None:
    image = screen(seed=4)
    region = content_region(image)
    parts: set[str] = set()
    outside = inside = 0
    for seed in range(12):
        _, mask, record = ui(image, seed)
        parts |= set(record)
        outside += int((mask & ~region).sum())
        inside += int((mask & region).sum())
    assert {"depth_scale", "logo", "text"} <= parts
    assert outside > 4 * inside  # a screen's interface lives in its black frame


def test_depth_scale_runs_the_height_of_the_field_of_view() -> None:
    image = screen(seed=5)
    _x0, y0, _x1, y1 = region_bbox(content_region(image))
    for seed in range(8):
        _out, mask, record = ui(image, seed, layout="logiq")
        if "depth_scale" not in record:
            continue
        x = record["depth_scale"]["x"]
        column = mask[:, max(0, int(x) - 3) : int(x) + 4].any(axis=1)
        rows = np.flatnonzero(column)
        assert rows.min() <= y0 + 0.1 * (y1 - y0) and rows.max() >= y1 - 0.1 * (y1 - y0)
        return
    pytest.fail("no depth scale in 8 seeds")


def test_small_images_get_nothing_and_bad_layout_is_an_error() -> None:
    for shape in [(1, 1), (MIN_SIDE - 1, 300), (16, 16, 3), (30, 30, 4)]:
        image = np.full(shape, 90, np.uint8)
        out, mask, record = ui(image, 0)
        assert not mask.any() and np.array_equal(out, image) and record["skipped"]
    with pytest.raises(ValueError, match="unknown layout 'nope'"):
        ui(screen(), 0, layout="nope")


def run_modes(image, drawer="mixed", seed=7, **kwargs):
    return {
        mode: annotate(image, drawer, np.random.default_rng(seed), scanner_ui=mode, **kwargs)
        for mode in ("keep", "remove", "off")
    }


@pytest.mark.parametrize("image", [screen(seed=6), crop_scan(seed=6)], ids=["screen", "crop"])
def test_keep_remove_off(image: np.ndarray) -> None:
    colors = ("white", "yellow")
    r = run_modes(image, colors=colors)
    base = promote(image, colors)
    (ck, ak, mk, pk), (cr, ar, mr, pr), (co, _ao, mo, po) = r["keep"], r["remove"], r["off"]
    assert (pk["scanner_ui"], pr["scanner_ui"], po["scanner_ui"]) == ("keep", "remove", "off")
    # off draws no interface; remove leaves the clean image untouched too.
    assert np.array_equal(co, base) and np.array_equal(cr, base) and "ui" not in po
    # keep and remove draw the same interface and the same marks over it.
    assert np.array_equal(ak, ar) and pk["ui"] == pr["ui"]
    interface = differs(ck, base)
    assert interface.sum() > 100
    # keep: the interface is in the clean image and only marks are in the mask.
    assert np.array_equal(mk, differs(ak, ck))
    assert (interface & ~mk).sum() > 0.8 * interface.sum()
    # remove: the interface is in the mask.
    assert np.array_equal(mr, differs(ar, base))
    assert (interface & ~mk <= mr).all()
    assert mr.sum() > mk.sum()
    # The marks are the same whatever the mode: off's marks, away from the interface,
    # are keep's.
    assert mo.any()
    away = ~interface
    assert np.array_equal(mo & away, mk & away)


def test_keep_is_the_default_and_bad_mode_is_an_error() -> None:
    image = screen(seed=8)
    clean, _, _, params = annotate(image, "calipers", np.random.default_rng(1))
    assert params["scanner_ui"] == "keep" and differs(clean, image).any()
    with pytest.raises(SynthError, match="scanner UI 'drop'"):
        annotate(image, "calipers", np.random.default_rng(1), scanner_ui="drop")


def test_plugin_drawer_gets_the_interface_too(monkeypatch) -> None:
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    image = screen(seed=9)
    clean, annotated, mask, params = annotate(
        image, "custom_drawer:draw", np.random.default_rng(2), scanner_ui="keep"
    )
    assert differs(clean, image).any() and mask.any() and "ui" in params
    assert np.array_equal(mask, differs(annotated, clean))
    sys.modules.pop("custom_drawer", None)


def test_readouts_labels_and_icons_keep_off_the_interface() -> None:
    """A scanner never prints over its own text: given the interface, the drawers that
    put text and icons in corners and margins find a free spot where one exists."""
    import cv2

    from annot_denoise.synth.drawers import draw_mixed

    parts = ["measurements", "text", "side_letters", "body_marker"]
    hits = {"without": 0, "with": 0}
    for seed in range(16):
        clean = screen(seed=seed)
        interface = draw_scanner_ui(clean, np.random.default_rng(seed))
        near = cv2.dilate(interface.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        for key, avoid in (("without", None), ("with", interface)):
            image = clean.copy()
            mask = draw_mixed(image, np.random.default_rng(100 + seed), parts=parts, avoid=avoid)
            hits[key] += bool((mask & near).any())
    assert hits["without"] >= 4  # the test would see the overlap it guards against
    assert hits["with"] <= hits["without"] // 4


def test_annotate_keeps_marks_off_an_interface_it_is_given() -> None:
    """A caller that burned the interface itself (on-the-fly training) passes its pixels,
    with the same effect as annotate's own: no mark moved means the same draw."""
    image = screen(seed=5)
    drawn = image.copy()
    # annotate seeds its interface with the first of two integers from its generator
    # (pipeline.annotate): the same interface, burned in here.
    ui_seed = int(np.random.default_rng(3).integers(0, 2**63, 2)[0])
    interface = draw_scanner_ui(drawn, np.random.default_rng(ui_seed))
    own = annotate(image, "mixed", np.random.default_rng(3), colors=("white",))
    given = annotate(
        drawn, "mixed", np.random.default_rng(3), colors=("white",), scanner_ui="off",
        interface=interface,
    )  # fmt: skip
    assert np.array_equal(own[1], given[1]) and np.array_equal(own[2], given[2])


def test_an_interface_of_the_wrong_shape_is_an_error() -> None:
    from annot_denoise.synth.placement import Scene

    image = screen(seed=5)
    with pytest.raises(SynthError, match="interface shape"):
        annotate(image, "mixed", np.random.default_rng(3), interface=np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="avoid shape"):
        Scene.from_image(image, avoid=np.zeros((3, 3), bool))


@pytest.mark.parametrize("drawer", sorted(DRAWERS))
def test_nothing_to_avoid_moves_nothing(drawer: str) -> None:
    """An empty interface is no interface: every drawer draws what it draws without one."""
    image = screen(seed=12)
    plain, empty = image.copy(), image.copy()
    a = DRAWERS[drawer](plain, np.random.default_rng(4), colors=("white", "yellow"))
    b = DRAWERS[drawer](
        empty, np.random.default_rng(4), colors=("white", "yellow"),
        avoid=np.zeros(image.shape[:2], bool),
    )  # fmt: skip
    assert np.array_equal(a, b) and np.array_equal(plain, empty)
