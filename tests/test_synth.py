"""The synthesis pipeline: layout, determinism, exact masks, custom drawers, bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from annot_denoise.io import read_image, write_image
from annot_denoise.synth.pipeline import SynthError, annotate, output_names, resolve_drawer, synth


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_and_manifest(synth_dir: Path, phantom_dir: Path) -> None:
    names = {p.name for p in (synth_dir / "clean").iterdir()}
    assert len(names) == 20 and "phantom_0000_c00.png" in names
    for sub in ("annotated", "masks"):
        assert {p.name for p in (synth_dir / sub).iterdir()} == names
    rows = [json.loads(x) for x in (synth_dir / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 20
    assert {r["source"] for r in rows} == {p.name for p in phantom_dir.glob("*.png")}
    assert all(r["drawer"] == "mixed" and "params" in r for r in rows)


def test_mask_is_exactly_the_changed_pixels(synth_dir: Path) -> None:
    for name in ["phantom_0000_c00.png", "phantom_0003_c01.png", "phantom_0007_c00.png"]:
        clean = read_image(synth_dir / "clean" / name)
        annot = read_image(synth_dir / "annotated" / name)
        mask = read_image(synth_dir / "masks" / name)
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        changed = np.any(clean != annot, axis=2) if clean.ndim == 3 else clean != annot
        assert np.array_equal(changed, mask == 255)
        assert changed.any()


def test_grey_scans_become_rgb_for_colour_annotations(synth_dir: Path, phantom_dir: Path) -> None:
    assert read_image(phantom_dir / "phantom_0000.png").ndim == 2
    assert read_image(synth_dir / "annotated" / "phantom_0000_c00.png").shape[2] == 3


def test_white_only_keeps_grey(phantom_dir: Path, tmp_path: Path) -> None:
    synth(phantom_dir, tmp_path, colors=["white"], drawer="calipers")
    assert read_image(tmp_path / "annotated" / "phantom_0000.png").ndim == 2


def test_same_seed_same_bytes_whatever_the_workers(phantom_dir: Path, tmp_path: Path) -> None:
    synth(phantom_dir, tmp_path / "a", seed=5, copies=2)
    synth(phantom_dir, tmp_path / "b", seed=5, copies=2, workers=2)
    synth(phantom_dir, tmp_path / "c", seed=6, copies=2)
    a, b, c = (_tree(tmp_path / x) for x in "abc")
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == (
        tmp_path / "b" / "manifest.jsonl"
    ).read_bytes()


def test_copies_differ(synth_dir: Path) -> None:
    a = read_image(synth_dir / "masks" / "phantom_0001_c00.png")
    b = read_image(synth_dir / "masks" / "phantom_0001_c01.png")
    assert not np.array_equal(a, b)


def test_16bit_and_alpha_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    write_image(src / "deep.png", (rng.random((64, 80)) * 40000).astype(np.uint16))
    rgba = (rng.random((64, 80, 4)) * 255).astype(np.uint8)
    write_image(src / "sub" / "rgba.png", rgba)
    report = synth(src, tmp_path / "out", colors=["white"])
    assert report.ok and report.written == 2
    assert read_image(tmp_path / "out" / "annotated" / "deep.png").dtype == np.uint16
    out = read_image(tmp_path / "out" / "annotated" / "sub" / "rgba.png")
    assert out.shape == (64, 80, 4)
    assert np.array_equal(out[..., 3], rgba[..., 3])


def test_bad_files_are_reported_and_the_rest_carries_on(phantom_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for p in list(phantom_dir.glob("*.png"))[:3]:
        (src / p.name).write_bytes(p.read_bytes())
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("not an image")
    report = synth(src, tmp_path / "out", copies=2)
    assert report.written == 6
    assert len(report.failed) == 2  # one line per bad source, not per copy
    assert any("empty.png" in f and "empty" in f for f in report.failed)
    assert not (tmp_path / "out" / "clean" / "empty_c00.png").exists()


def test_refuses_output_inside_input(phantom_dir: Path) -> None:
    with pytest.raises(SynthError, match="inside"):
        synth(phantom_dir, phantom_dir / "out")


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(SynthError, match="no such"):
        synth(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SynthError, match="no images"):
        synth(tmp_path / "empty", tmp_path / "out")


def test_output_names_handle_clashing_suffixes(tmp_path: Path) -> None:
    names = output_names([tmp_path / "a.jpg", tmp_path / "a.png"], tmp_path, 1)
    assert [n for _, n, _, _ in names] == ["a.png", "a.png.png"]
    names = output_names([tmp_path / "x" / "b.tif"], tmp_path, 12)
    assert names[0][1] == "x/b_c00.png" and names[-1][1] == "x/b_c11.png"
    # A cine loop of 3 frames, 2 copies each; a single image beside it has no frame.
    names = output_names([tmp_path / "loop.dcm", tmp_path / "one.dcm"], tmp_path, 2, [3, 1])
    assert [(n, k, f) for _, n, k, f in names] == [
        ("loop.frame0000_c00.png", 0, 0), ("loop.frame0000_c01.png", 1, 0),
        ("loop.frame0001_c00.png", 0, 1), ("loop.frame0001_c01.png", 1, 1),
        ("loop.frame0002_c00.png", 0, 2), ("loop.frame0002_c01.png", 1, 2),
        ("one_c00.png", 0, None), ("one_c01.png", 1, None),
    ]  # fmt: skip
    # A loop's frame 0 and a file already named like it do not overwrite each other.
    sources = [tmp_path / "loop.frame0000.png", tmp_path / "loop.dcm"]
    names = [n for _, n, _, _ in output_names(sources, tmp_path, 1, [1, 2])]
    assert len(set(names)) == 3 and "loop.frame0000.png" in names


def test_custom_drawer_from_example(phantom_dir: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    report = synth(phantom_dir, tmp_path, drawer="custom_drawer:draw", colors=["white", "yellow"])
    assert report.ok and report.written == 10
    mask = read_image(tmp_path / "masks" / "phantom_0002.png")
    assert mask.any()
    sys.modules.pop("custom_drawer", None)


def test_drawer_errors_name_the_spec() -> None:
    with pytest.raises(SynthError, match="unknown drawer 'nope'"):
        resolve_drawer("nope")
    with pytest.raises(SynthError, match="cannot import 'no_such_module_xyz'"):
        resolve_drawer("no_such_module_xyz:draw")
    with pytest.raises(SynthError, match="no function 'missing'"):
        resolve_drawer("json:missing")


def test_annotate_every_builtin_changes_pixels() -> None:
    from annot_denoise.phantom import make_phantom
    from annot_denoise.synth.drawers import DRAWERS

    image = make_phantom(200, 300, np.random.default_rng(0))
    for name in DRAWERS:
        clean, annot, mask, params = annotate(image, name, np.random.default_rng(1))
        assert mask.any(), name
        assert np.array_equal(np.any(clean != annot, axis=2), mask)
        json.dumps(params)


def test_preview_sheet(phantom_dir: Path, tmp_path: Path) -> None:
    from annot_denoise.synth.pipeline import preview

    path = preview(phantom_dir, tmp_path / "preview.png", 6)
    sheet = read_image(path)
    assert sheet.ndim == 3 and sheet.shape[0] > 220
