"""Augmentations, crops and the on-the-fly synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from annot_denoise.io import list_images
from annot_denoise.training.augment import augment_scan, crop, crop_box
from annot_denoise.training.data import SyntheticDataset


def test_augment_keeps_dtype_and_layout() -> None:
    rng = np.random.default_rng(0)
    for image in [
        (rng.random((60, 80)) * 255).astype(np.uint8),
        (rng.random((60, 80, 3)) * 65535).astype(np.uint16),
    ]:
        out, params = augment_scan(image, np.random.default_rng(1))
        assert out.dtype == image.dtype and out.ndim == image.ndim
        assert 0.79 <= params["scale"] <= 1.26
        assert abs(out.shape[0] - round(60 * params["scale"])) <= 1


def test_crops_find_the_marks_and_pad_small_images() -> None:
    mask = np.zeros((300, 400), bool)
    mask[250, 390] = True
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(50):
        y, x = crop_box(mask.shape, 64, rng, mask, focus=1.0)
        hits += bool(mask[y : y + 64, x : x + 64].any())
    assert hits == 50
    small = np.ones((10, 20, 3), np.uint8)
    (piece,) = crop([small], 0, 0, 32)
    assert piece.shape == (32, 32, 3) and piece[:10, :20].all() and not piece[10:].any()


def _dataset(phantom_dir: Path, **kw) -> SyntheticDataset:
    paths = list_images(phantom_dir)[:4]
    defaults = dict(channels=3, size=None, patch=48, repeats=3, seed=7)
    return SyntheticDataset(paths, **{**defaults, **kw})


def test_on_the_fly_items_are_reproducible_and_fresh(phantom_dir: Path) -> None:
    a, b = _dataset(phantom_dir), _dataset(phantom_dir)
    assert len(a) == 12
    x, y = a[5], b[5]
    assert all(torch.equal(x[k], y[k]) for k in x)
    assert x["annotated"].shape == (3, 48, 48) and x["mask"].shape == (1, 48, 48)
    # Most crops hold marks (80% are centred on one; the rest are random).
    assert sum(bool(a[i]["mask"].any()) for i in range(12)) >= 8
    changed = (x["annotated"] != x["clean"]).any(0)
    assert torch.equal(changed, x["mask"][0] > 0)
    a.set_epoch(1)
    assert not torch.equal(a[5]["annotated"], x["annotated"])  # new epoch, new marks
    b.set_epoch(1)
    assert torch.equal(a[5]["annotated"], b[5]["annotated"])


def test_validation_sets_are_fixed(phantom_dir: Path) -> None:
    val = _dataset(phantom_dir, fixed=True, repeats=1)
    first = val[2]
    val.set_epoch(5)
    assert torch.equal(val[2]["annotated"], first["annotated"])


def test_grey_network_and_resize(phantom_dir: Path) -> None:
    ds = _dataset(phantom_dir, channels=1, size=(64, 80), patch=None, augment=False)
    assert ds[0]["annotated"].shape == (1, 64, 80)
