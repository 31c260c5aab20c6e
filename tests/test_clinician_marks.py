"""The clinician marks added for real scans: cursors, body markers, side letters, caliper
indices, sampled colours, the label vocabulary, and JPEG-compressed pairs."""

from __future__ import annotations

import colorsys
import json
from pathlib import Path

import numpy as np
import pytest
from test_drawers import changed, textured_scan

from annot_denoise.io import differs, read_image
from annot_denoise.synth.compress import check_jpeg_quality, jpeg_changed, jpeg_roundtrip
from annot_denoise.synth.drawers import COLORS, DRAWERS, MIXED_ODDS, sample_color
from annot_denoise.synth.pipeline import SynthError, annotate, synth
from annot_denoise.synth.render import FAMILIES, Palette
from annot_denoise.synth.vocabulary import LABELS, LabelsError, load_labels

NEW_PARTS = ("cursors", "body_marker", "side_letters")


def scan_rgb(seed: int = 0) -> np.ndarray:
    return np.repeat(textured_scan(300, 420, seed=seed, fan=True)[..., None], 3, axis=2)


@pytest.mark.parametrize("name", NEW_PARTS)
def test_new_parts_change_pixels_and_the_mask_is_the_change(name: str) -> None:
    image = scan_rgb(1)
    for seed in range(4):
        clean, annotated, mask, params = annotate(
            image, name, np.random.default_rng(seed), scanner_ui="off"
        )
        assert np.array_equal(mask, differs(annotated, clean)) and mask.sum() > 20
        json.dumps(params)


def test_cursors_are_white_with_a_dark_outline() -> None:
    image = np.full((200, 300, 3), 128, np.uint8)
    out = image.copy()
    record: dict = {}
    DRAWERS["cursors"](out, np.random.default_rng(3), colors=("yellow",), record=record)
    painted = changed(out, image)
    values = out[painted].astype(int)
    assert (values.min(axis=1) >= 200).sum() > 20  # white body
    assert (values.max(axis=1) <= 80).sum() > 10  # dark outline
    assert record["cursors"][0]["kind"] in ("pointer", "hand")


def test_body_markers_cover_several_organs_and_sit_low() -> None:
    image = scan_rgb(2)
    organs, low = set(), 0
    for seed in range(30):
        out, record = image.copy(), {}
        DRAWERS["body_marker"](out, np.random.default_rng(seed), record=record)
        organs.add(record["organ"])
        low += record["box"][1] > image.shape[0] / 2
    assert {"breast", "abdomen", "thyroid", "pelvis"} <= organs
    assert low > 15


def test_side_letters_are_short_and_at_the_top() -> None:
    image = scan_rgb(3)
    for seed in range(10):
        out, record = image.copy(), {}
        mask = DRAWERS["side_letters"](out, np.random.default_rng(seed), record=record)
        assert len(record["text"]) <= 5
        assert np.flatnonzero(mask.any(axis=1)).max() < image.shape[0] / 2


def test_caliper_indices_take_several_forms() -> None:
    image = scan_rgb(4)
    forms = set()
    for seed in range(40):
        record: dict = {}
        DRAWERS["calipers"](image.copy(), np.random.default_rng(seed), record=record)
        forms.add(record["index"])
    assert {"n", "symbol", "D"} <= forms


def test_mixed_has_the_new_parts_and_no_colour_bar() -> None:
    assert set(NEW_PARTS) <= set(MIXED_ODDS) and "colorbar" not in MIXED_ODDS
    assert "colorbar" in DRAWERS  # kept as an explicit choice
    seen = set()
    for seed in range(40):
        record: dict = {}
        DRAWERS["mixed"](scan_rgb(5), np.random.default_rng(seed), record=record)
        seen |= {p["drawer"] for p in record["parts"]}
    assert set(NEW_PARTS) <= seen and "colorbar" not in seen


def test_sampled_colours_vary_and_include_pale_ones() -> None:
    rng = np.random.default_rng(0)
    samples = [sample_color(rng) for _ in range(400)]
    assert {f for f, _ in samples} == set(FAMILIES)
    rgbs = {rgb for _, rgb in samples}
    assert len(rgbs) > 300  # continuous, not a palette
    hsv = [colorsys.rgb_to_hsv(*(c / 255 for c in rgb)) for f, rgb in samples if f != "white"]
    sat = np.array([s for _, s, _ in hsv])
    assert (sat < 0.5).mean() > 0.15 and (sat > 0.8).mean() > 0.2


def test_sampled_is_a_colour_option_and_named_colours_stay_exact() -> None:
    image = scan_rgb(6)
    sampled_rgbs, named_rgbs = set(), set()
    for seed in range(12):
        record: dict = {}
        DRAWERS["text"](
            image.copy(), np.random.default_rng(seed), colors=["sampled"], record=record
        )
        sampled_rgbs |= {tuple(item["rgb"]) for item in record["labels"]}
        record = {}
        DRAWERS["text"](image.copy(), np.random.default_rng(seed), colors=["cyan"], record=record)
        named_rgbs |= {tuple(item["rgb"]) for item in record["labels"]}
    assert len(sampled_rgbs) > 6
    cyan = np.array(COLORS["cyan"])
    for rgb in named_rgbs:  # cyan, or cyan dimmed as white is dimmed, nothing else
        level = np.array(rgb) / cyan
        assert np.allclose(level, level[0], atol=0.02) and 0.77 <= level[0] <= 1.0
    palette = Palette(np.random.default_rng(0), ["white", "sampled"], 1.0)
    assert palette.names == ["white", "sampled"]
    with pytest.raises(ValueError, match="sampled"):
        Palette(np.random.default_rng(0), ["sampeld"], 1.0)


def test_labels_vocabulary_replaces_the_built_in_one(tmp_path: Path) -> None:
    words = ["Zebra one", "Quux 2"]
    image = scan_rgb(7)
    for name in ("text", "mixed"):
        texts = set()
        for seed in range(15):
            _, _, _, params = annotate(
                image, name, np.random.default_rng(seed), labels=words, scanner_ui="off"
            )
            labels = params.get("labels", [])
            for part in params.get("parts", []):
                labels += part.get("labels", [])
            texts |= {line for item in labels for line in item["text"]}
        assert texts and texts <= set(words), (name, texts)
    organs = " ".join(LABELS).upper()
    assert all(w in organs for w in ("BREAST", "THYROID", "LIVER", "KIDNEY", "OVARY", "CCA"))


def test_load_labels_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "labels.txt"
    good.write_text("\ufeffRT KIDNEY\n\n  Liver  \nSAG\n", encoding="utf-8")
    assert load_labels(good) == ("RT KIDNEY", "Liver", "SAG")
    cases = {
        "missing.txt": (None, "no such labels file"),
        "empty.txt": ("\n  \n", "no labels"),
        "binary.txt": (b"\xff\xfe\x00abc", "not UTF-8"),
        "long.txt": ("x" * 61 + "\n", "at most 60"),
        "control.txt": ("ok\nbad\x07bell\n", "line 2 holds a control character"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif content is not None:
            path.write_text(content)
        with pytest.raises(LabelsError, match=message) as info:
            load_labels(path)
        assert str(path) in str(info.value)
    with pytest.raises(LabelsError, match="not a file"):
        load_labels(tmp_path)
    with pytest.raises(SynthError, match="no labels"):
        annotate(scan_rgb(), "text", np.random.default_rng(0), labels=["", " "])


@pytest.mark.parametrize("quality", [70, (75, 95)])
@pytest.mark.parametrize("layout", ["rgb", "grey", "u16", "rgba"])
def test_jpeg_pairs_keep_the_mask_definition(quality, layout: str) -> None:
    grey = textured_scan(160, 224, seed=8, fan=True)
    image = {
        "rgb": np.repeat(grey[..., None], 3, axis=2),
        "grey": grey,
        "u16": grey.astype(np.uint16) * 257,
        "rgba": np.dstack([grey, grey, grey, np.full_like(grey, 200)]),
    }[layout]
    colors = ["sampled"] if layout != "grey" else ["white"]
    for seed in range(3):
        kw = {"colors": colors, "scanner_ui": "keep"}
        c0, a0, m0, _ = annotate(image, "mixed", np.random.default_rng(seed), **kw)
        c, a, m, params = annotate(
            image, "mixed", np.random.default_rng(seed), jpeg_quality=quality, **kw
        )
        q = params["jpeg_quality"]
        assert q == quality if isinstance(quality, int) else quality[0] <= q <= quality[1]
        # Both images went through the same compression; the clean one without marks.
        assert np.array_equal(c, jpeg_roundtrip(c0, q)) and np.array_equal(a, jpeg_roundtrip(a0, q))
        assert c.dtype == image.dtype and c.shape == c0.shape
        # Mask: what the drawing painted, plus what compression smeared by > 2 levels.
        assert np.array_equal(m, m0 | jpeg_changed(c, a))
        step = 257 if image.dtype == np.uint16 else 1
        diff = np.abs(c.astype(int) - a.astype(int))
        diff = diff[..., :3].max(axis=2) if diff.ndim == 3 else diff
        assert diff[~m].max(initial=0) <= 2 * step
        if layout == "rgba":
            assert np.array_equal(a[..., 3], image[..., 3])


def test_jpeg_quality_forms() -> None:
    assert check_jpeg_quality(None) is None
    assert check_jpeg_quality(85) == 85 and check_jpeg_quality("85") == 85
    assert check_jpeg_quality("70-95") == (70, 95) and check_jpeg_quality([70, 95]) == (70, 95)
    for bad in (0, 101, "70-", "9x", (95, 70), True, [1, 2, 3], 85.5):
        with pytest.raises(ValueError):
            check_jpeg_quality(bad)
    with pytest.raises(SynthError, match="outside 1-100"):
        annotate(scan_rgb(), "text", np.random.default_rng(0), jpeg_quality=0)


def test_synth_records_the_options(phantom_dir: Path, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("Zebra one\nQuux 2\n")
    out = tmp_path / "out"
    report = synth(
        phantom_dir,
        out,
        drawer="text",
        scanner_ui="remove",
        labels=load_labels(labels),
        jpeg_quality=(80, 90),
    )
    assert report.ok and report.written == 10
    settings = json.loads((out / "synth.json").read_text())
    assert settings["scanner_ui"] == "remove" and settings["jpeg_quality"] == [80, 90]
    assert settings["labels"] == ["Zebra one", "Quux 2"]
    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["scanner_ui"] == "remove" and 80 <= row["jpeg_quality"] <= 90
        assert {line for item in row["params"]["labels"] for line in item["text"]} <= {
            "Zebra one",
            "Quux 2",
        }
        clean = read_image(out / "clean" / row["output"])
        annotated = read_image(out / "annotated" / row["output"])
        mask = read_image(out / "masks" / row["output"]) > 0
        assert np.array_equal(mask, mask | jpeg_changed(clean, annotated))
    with pytest.raises(SynthError, match="scanner UI"):
        synth(phantom_dir, tmp_path / "bad", scanner_ui="maybe")
