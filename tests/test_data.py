"""Pairing, splitting and loading of clean/annotated datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from annot_denoise.config import validate_config
from annot_denoise.io import write_image
from annot_denoise.training.data import (
    DatasetError,
    PairedDataset,
    SyntheticDataset,
    build_datasets,
    check_pairs,
    echo_collate,
    find_pairs,
    split_pairs,
)


def test_pairs_masks_and_groups(synth_dir: Path) -> None:
    pairs = find_pairs(synth_dir)
    assert len(pairs) == 20
    assert all(p.mask is not None for p in pairs)
    # Copies of one source share a group, so they never straddle the split.
    assert pairs[0].group == pairs[1].group == "phantom_0000.png"


def test_split_is_deterministic_and_keeps_copies_together(synth_dir: Path) -> None:
    pairs = find_pairs(synth_dir)
    train, val = split_pairs(pairs, 0.2, seed=0)
    assert (train, val) == split_pairs(pairs, 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16
    assert not {p.group for p in train} & {p.group for p in val}
    assert split_pairs(pairs, 0.2, seed=1)[1] != val
    assert split_pairs(pairs, 0.0, seed=0) == (pairs, [])


def test_dataset_tensors(synth_dir: Path) -> None:
    pairs = find_pairs(synth_dir)[:3]
    ds = PairedDataset(pairs, size=(48, 64), channels=3)
    item = ds[0]
    assert item["annotated"].shape == (3, 48, 64) and item["clean"].shape == (3, 48, 64)
    assert item["mask"].shape == (1, 48, 64) and item["mask"].max() == 1
    assert float(item["annotated"].min()) >= 0 and float(item["annotated"].max()) <= 1
    grey = PairedDataset(pairs, size=(48, 64), channels=1, cache=False)
    assert grey[0]["annotated"].shape == (1, 48, 64)


def test_mask_falls_back_to_pixel_difference(synth_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for sub in ("clean", "annotated"):
        shutil.copytree(synth_dir / sub, root / sub)
    pairs = find_pairs(root)
    assert pairs[0].mask is None
    with_masks = PairedDataset(find_pairs(synth_dir)[:2], size=(96, 128), channels=3)
    without = PairedDataset(pairs[:2], size=(96, 128), channels=3)
    assert np.array_equal(with_masks[1]["mask"].numpy(), without[1]["mask"].numpy())


def _tiny(root: Path, names: list[str], sub: str) -> None:
    for n in names:
        write_image(root / sub / n, np.zeros((8, 8), np.uint8))


def test_unpaired_names_are_listed(tmp_path: Path) -> None:
    _tiny(tmp_path, [f"c{i}.png" for i in range(14)] + ["both.png"], "clean")
    _tiny(tmp_path, ["both.png", "only_a.png"], "annotated")
    with pytest.raises(DatasetError) as err:
        find_pairs(tmp_path)
    text = str(err.value)
    assert "15 files have no partner" in text
    assert "only in clean/ (14)" in text and "c0.png" in text and "..." in text
    assert "only in annotated/ (1): only_a.png" in text


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        find_pairs(tmp_path / "nope")
    (tmp_path / "clean").mkdir()
    with pytest.raises(DatasetError, match="no annotated/ folder"):
        find_pairs(tmp_path)
    (tmp_path / "annotated").mkdir()
    with pytest.raises(DatasetError, match="no images found"):
        find_pairs(tmp_path)


def test_broken_pairs_are_reported_not_fatal(tmp_path: Path) -> None:
    _tiny(tmp_path, ["a.png", "b.png", "c.png"], "clean")
    _tiny(tmp_path, ["a.png"], "annotated")
    (tmp_path / "annotated" / "b.png").write_bytes(b"")
    write_image(tmp_path / "annotated" / "c.png", np.zeros((9, 8), np.uint8))
    good, errors = check_pairs(find_pairs(tmp_path))
    assert [p.name for p in good] == ["a.png"]
    assert len(errors) == 2
    assert any("b.png" in e for e in errors) and any("sizes differ" in e for e in errors)


def test_on_the_fly_split_does_not_depend_on_where_the_folder_is(tmp_path: Path) -> None:
    names = [f"sub/scan_{i:02d}.png" if i % 3 else f"scan_{i:02d}.png" for i in range(20)]
    splits = []
    for root in (tmp_path / "here", tmp_path / "moved" / "elsewhere"):
        paths = [root / n for n in names]
        train, val = split_pairs(paths, 0.2, seed=0)
        splits.append(sorted(p.relative_to(root).as_posix() for p in val))
        assert len(val) == 4 and not set(train) & set(val)
    assert splits[0] == splits[1]


def test_a_file_is_not_a_dataset_folder(tmp_path: Path) -> None:
    (tmp_path / "pairs.zip").write_bytes(b"PK")
    with pytest.raises(DatasetError, match="is a file, not a dataset folder"):
        find_pairs(tmp_path / "pairs.zip")


@pytest.mark.parametrize("on_the_fly", [False, True])
def test_a_patch_no_image_can_hold_is_refused_before_decoding(
    synth_dir: Path, phantom_dir: Path, on_the_fly: bool, monkeypatch
) -> None:
    """Crops are zero-padded up to the patch: a patch larger than every scan would
    train the network on padding. The 96x128 scans hold at most a 96-px square."""
    from annot_denoise.training import data

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before the patch was checked")

    monkeypatch.setattr(data, "read_image", no_decoding)
    monkeypatch.setattr(data, "read_frames", no_decoding)
    source = {"on_the_fly": True, "clean_dir": str(phantom_dir)} if on_the_fly else {}
    cfg = validate_config({"data": {"root": str(synth_dir), "size": None, "patch": 100, **source}})
    with pytest.raises(DatasetError) as err:
        build_datasets(cfg)
    message = str(err.value)
    assert "data.patch 100 is larger than every training image" in message
    assert "128x96" in message and "at most 96" in message
    assert len(message.splitlines()) == 1


def test_a_patch_some_images_hold_is_kept(tmp_path: Path) -> None:
    """Smaller scans beside larger ones are padded, as before: only an impossible patch fails."""
    for name, shape in (("small.png", (40, 40)), ("large.png", (96, 128))):
        for sub in ("clean", "annotated"):
            write_image(tmp_path / sub / name, np.zeros(shape, np.uint8))
    cfg = validate_config(
        {"data": {"root": str(tmp_path), "size": None, "patch": 64, "val_split": 0.0}}
    )
    train, _, skipped = build_datasets(cfg)
    assert len(train) == 2 and not skipped
    assert train[0]["clean"].shape[-2:] == (64, 64)


def _found_in(crop: np.ndarray, scans: list[np.ndarray]) -> bool:
    """Whether ``crop`` (HxW grey floats) is, pixel for pixel, a window of a scan."""
    import cv2

    for scan in scans:
        if scan.shape[0] >= crop.shape[0] and scan.shape[1] >= crop.shape[1]:
            scores = cv2.matchTemplate(scan.astype(np.float32), crop, cv2.TM_SQDIFF)
            x, y = cv2.minMaxLoc(scores)[2]  # the best match, then checked exactly
            if np.array_equal(scan[y : y + crop.shape[0], x : x + crop.shape[1]], crop):
                return True
    return False


@pytest.mark.parametrize("ui", ["keep", "remove", "off"])
def test_on_the_fly_pairs_and_the_scanner_interface(tmp_path: Path, ui: str) -> None:
    """keep: the interface is in both images of a pair and never in the mask; remove:
    it is a mark; off: the clean image is the scan itself. The scans in memory are
    never drawn on."""
    import torch

    from annot_denoise.phantom import make_phantom

    scans = [make_phantom(240, 320, np.random.default_rng(k)) for k in range(3)]
    for k, scan in enumerate(scans):
        write_image(tmp_path / "scans" / f"s{k}.png", scan)
    cfg = validate_config(
        {
            "data": {
                "on_the_fly": True,
                "clean_dir": str(tmp_path / "scans"),
                "size": None,
                "patch": 128,
                "augment": False,
                "colors": ["white"],
                "val_split": 0.0,
                "repeats": 4,
                "scanner_ui": ui,
            }
        }
    )
    train, _, _ = build_datasets(cfg)
    cached = [s.copy() for s in train._scans]
    windows, masked, interface = [], 0.0, []
    for i in range(len(train)):
        item = train[i]
        outside = item["mask"][0] == 0
        assert torch.equal(item["annotated"][:, outside], item["clean"][:, outside])
        clean = item["clean"][0].numpy() * 255
        windows.append(_found_in(np.round(clean).astype(np.float32), scans))
        masked += float(item["mask"].mean())
        interface.append(bool(item["interface"].any()))
    assert all(np.array_equal(a, b) for a, b in zip(cached, train._scans))
    if ui == "keep":
        assert any(interface)  # the interface is burned into some clean windows...
        # ...and the items say where: a window without it is the scan itself
        assert windows == [not k for k in interface]
    else:
        assert all(windows)  # the clean image is the scan
        assert not any(interface)
    if ui == "remove":
        assert masked > 0


def test_on_the_fly_drawing_says_where_its_time_goes(tmp_path: Path) -> None:
    from annot_denoise.phantom import make_phantom
    from annot_denoise.training.data import SyntheticDataset

    write_image(tmp_path / "a.png", make_phantom(200, 300, np.random.default_rng(0)))
    data = SyntheticDataset([tmp_path / "a.png"], channels=3, size=None, patch=64, repeats=3)
    for i in range(len(data)):
        data[i]
    assert set(data.stages.wall) == {"scan", "interface", "marks", "patch"}
    assert all(seconds > 0 for seconds in data.stages.wall.values())


def test_on_the_fly_labels_and_jpeg_settings_are_checked(tmp_path: Path) -> None:
    from annot_denoise.config import ConfigError

    write_image(tmp_path / "scans" / "a.png", np.zeros((64, 64), np.uint8))
    data = {"on_the_fly": True, "clean_dir": str(tmp_path / "scans"), "patch": 32}
    for bad in (101, [90, 70], "high"):
        with pytest.raises(ConfigError, match=r"data\.jpeg_quality"):
            validate_config({"data": {**data, "jpeg_quality": bad}})
    assert validate_config({"data": {**data, "jpeg_quality": [70, 95]}}).data.jpeg_quality == (
        70,
        95,
    )
    cfg = validate_config({"data": {**data, "labels": str(tmp_path / "missing.txt")}})
    with pytest.raises(DatasetError, match=r"data\.labels: .*missing\.txt"):
        build_datasets(cfg)


def test_interface_focus_cuts_patches_around_the_scanner_interface(tmp_path: Path) -> None:
    """interface_focus 1: every patch of a scan with an interface shows some of it; 0:
    patches follow the marks, and a smaller share of them show the interface."""
    from annot_denoise.phantom import make_phantom

    write_image(tmp_path / "a.png", make_phantom(360, 640, np.random.default_rng(3)))
    shown = {}
    for focus in (0.0, 1.0):
        data = SyntheticDataset(
            [tmp_path / "a.png"],
            channels=3,
            size=None,
            patch=96,
            colors=("white",),
            repeats=16,
            augment=False,
            interface_focus=focus,
        )
        shown[focus] = [bool(data[i]["interface"].any()) for i in range(len(data))]
    assert all(shown[1.0])
    assert sum(shown[0.0]) < len(shown[0.0])


def test_scanner_ui_share_leaves_some_drawings_without_an_interface(tmp_path: Path) -> None:
    """share 0.5: some drawings get an interface and some none; share 1 draws exactly
    what a dataset without the setting draws (earlier recipes reproduce)."""
    from annot_denoise.phantom import make_phantom

    write_image(tmp_path / "a.png", make_phantom(360, 640, np.random.default_rng(3)))
    kwargs = dict(channels=3, size=None, patch=96, colors=("white",), repeats=24)
    # interface_focus 1: a drawing with an interface shows it in its patch.
    half = SyntheticDataset(
        [tmp_path / "a.png"], scanner_ui_share=0.5, interface_focus=1.0, **kwargs
    )
    shown = [bool(half[i]["interface"].any()) for i in range(len(half))]
    assert 0 < sum(shown) < len(shown)
    full = SyntheticDataset([tmp_path / "a.png"], scanner_ui_share=1.0, **kwargs)
    plain = SyntheticDataset([tmp_path / "a.png"], **kwargs)
    for i in (0, 5):
        assert all(torch.equal(full[i][k], plain[i][k]) for k in plain[i])


def test_interface_focus_and_echo_need_what_they_work_on() -> None:
    from annot_denoise.config import ConfigError

    fly = {"on_the_fly": True, "clean_dir": "scans", "patch": 64}
    both = {**fly, "interface_focus": 0.5, "echo": 2}
    validate_config({"data": both, "train": {"batch_size": 4}})
    for data, needs in [
        ({**fly, "interface_focus": 0.5, "scanner_ui": "off"}, "scanner_ui: keep"),
        ({**fly, "scanner_ui_share": 0.5, "scanner_ui": "off"}, "scanner_ui keep or remove"),
        ({"root": "pairs", "size": [64, 64], "scanner_ui_share": 0.5}, "data.on_the_fly"),
        ({"root": "pairs", "size": [64, 64], "interface_focus": 0.5}, "data.on_the_fly"),
        ({"root": "pairs", "size": [64, 64], "echo": 2}, "needs data.on_the_fly and data.patch"),
    ]:
        with pytest.raises(ConfigError, match=needs):
            validate_config({"data": data, "train": {"batch_size": 4}})
    with pytest.raises(ValueError, match="needs a patch"):
        SyntheticDataset([], channels=3, size=(64, 64), patch=None, echo=2)


def test_echo_stacks_patches_of_one_drawing(tmp_path: Path) -> None:
    """echo 3: an item is three patches of one drawn pair, cut at different places, and
    a batch of items puts them side by side."""
    from annot_denoise.phantom import make_phantom

    write_image(tmp_path / "a.png", make_phantom(300, 400, np.random.default_rng(4)))
    data = SyntheticDataset(
        [tmp_path / "a.png"], channels=3, size=None, patch=64, repeats=2, echo=3, augment=False
    )
    item = data[0]
    assert item["annotated"].shape == (3, 3, 64, 64) and item["mask"].shape == (3, 1, 64, 64)
    patches = item["clean"]
    assert not any(torch.equal(patches[a], patches[b]) for a, b in [(0, 1), (0, 2), (1, 2)])
    batch = echo_collate([data[0], data[1]])
    assert batch["annotated"].shape == (6, 3, 64, 64) and batch["interface"].shape[0] == 6
