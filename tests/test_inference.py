"""Applying networks to whole images: fidelity outside the mask, tiles, sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from standins import BrightMarksInTwoStages, MarksAreBright
from torch import nn

from annot_denoise.inference import Restorer
from annot_denoise.phantom import make_phantom
from annot_denoise.training.checkpoint import load_model


def _restorer(channels: int = 3, **kw) -> Restorer:
    return Restorer(MarksAreBright(), channels=channels, device=torch.device("cpu"), **kw)


def _scan(h: int, w: int, channels: int, dtype) -> np.ndarray:
    rng = np.random.default_rng(0)
    top = 65535 if dtype == np.uint16 else 255
    shape = (h, w) if channels == 1 else (h, w, channels)
    image = (rng.random(shape) * 0.6 * top).astype(dtype)
    image[h // 2, 5 : w - 5] = top  # one bright 'annotation' line
    return image


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("dilate", [0, 2])
def test_outside_the_mask_is_copied_bit_for_bit(channels, dtype, dilate) -> None:
    image = _scan(41, 57, channels, dtype)
    result = _restorer(dilate=dilate).restore([image])[0]
    out = result.image
    assert out.shape == image.shape and out.dtype == image.dtype
    assert np.array_equal(out[~result.mask], image[~result.mask])
    line = np.zeros((41, 57), bool)
    line[20, 5:52] = True
    assert np.array_equal(result.detected, line)
    assert result.mask.sum() >= line.sum() * (1 + dilate)  # grown by `dilate` px
    top = 65535 if dtype == np.uint16 else 255
    expected = round(0.25 * top)
    repaired = out[result.mask] if channels == 1 else out[result.mask][:, :3]
    assert np.all(np.abs(repaired.astype(int) - expected) <= 1)
    if channels == 4:
        assert np.array_equal(out[..., 3], image[..., 3])  # alpha untouched everywhere
    assert result.changed == pytest.approx((out != image).reshape(41, 57, -1).any(2).mean())


def _black_surround(channels: int, dtype) -> tuple[np.ndarray, int]:
    """Random 'tissue' (never above 0.6) beside a black surround, as at a sector's edge."""
    top = 65535 if dtype == np.uint16 else 255
    rng = np.random.default_rng(1)
    shape = (60, 80) if channels == 1 else (60, 80, channels)
    image = (rng.random(shape) * 0.6 * top).astype(dtype)
    image[:20] = 0
    image[:, :10] = 0
    return image, top


def test_marks_are_left_to_the_network_on_tissue_and_on_the_black() -> None:
    """No rule repaints the black around a sector: every mark, on the tissue or
    across its edge, gets the network's own repair (the stand-in's 0.25)."""
    image, top = _black_surround(1, np.uint8)
    marked = image.copy()
    marked[40:43, 20:60] = top  # on the tissue
    marked[18:24, 40:44] = top  # across the edge of the black surround
    marked[30:60, 60:62] = top  # through the tissue down to the bottom edge
    result = _restorer(dilate=0).restore([marked])[0]
    assert result.mask[40:43, 20:60].all() and result.mask[18:24, 40:44].all()
    network = round(0.25 * top)
    for part in (
        result.image[40:43, 20:60],
        result.image[30:60, 60:62],
        result.image[18:24, 40:44],
    ):
        assert np.all(np.abs(part.astype(int) - network) <= 1)
    assert np.array_equal(result.image[~result.mask], marked[~result.mask])


def test_threshold_decides_what_counts() -> None:
    image = _scan(30, 30, 1, np.uint8)
    assert _restorer(threshold=0.9999999).restore([image])[0].mask.sum() == 0


def test_tiles_match_whole_image_inference(mask_run: Path) -> None:
    model, ckpt = load_model(mask_run / "best.pt")
    image = make_phantom(230, 310, np.random.default_rng(5))
    whole = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), tile=1024, amp=False)
    tiled = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), tile=96, amp=False)
    net = whole._network_input(image)
    a, b = whole._predict_native(net), tiled._predict_native(net)
    # Probabilities and content agree closely: the blending leaves no seams.
    assert np.abs(a.prob - b.prob).max() < 0.1
    assert np.abs(a.fill - b.fill).mean() < 2 / 255


def test_tiny_images_are_padded_not_refused(mask_run: Path) -> None:
    model, ckpt = load_model(mask_run / "best.pt")
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    for shape in [(1, 1), (5, 7), (3, 40, 3)]:
        image = np.full(shape, 90, np.uint8)
        assert r.restore([image])[0].image.shape == shape


def test_gpu_out_of_memory_falls_back_to_smaller_tiles(monkeypatch, caplog) -> None:
    r = _restorer(tile=512)
    real, calls = r._forward, []

    def flaky(batch):
        calls.append(batch.shape)
        if batch.shape[1] > 256:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real(batch)

    monkeypatch.setattr(r, "_forward", flaky)
    image = _scan(400, 300, 1, np.uint8)
    with caplog.at_level("WARNING"):
        out = r.restore([image])[0]
    assert out.image.shape == image.shape
    assert any("out of GPU memory" in m for m in caplog.messages)
    assert calls[-1][1] <= 256


def test_resize_mode_mask_models_keep_fidelity() -> None:
    r = _restorer(size=(32, 32))
    image = _scan(64, 80, 3, np.uint8)
    result = r.restore([image])[0]
    assert np.array_equal(result.image[~result.mask], image[~result.mask])


# ---------------------------------------------------------------- two-stage inference


def test_crops_hold_each_group_of_marks_with_context() -> None:
    from annot_denoise.inference.execution import CELL, CONTEXT
    from annot_denoise.inference.execution import crops as _crops

    detected = np.zeros((300, 500), bool)
    detected[40:44, 30:90] = True  # a label near the top-left corner
    detected[200:230, 400:405] = True  # a caliper far away
    crops = _crops(detected)
    assert len(crops) == 2
    covered = np.zeros_like(detected)
    for (ys, xs), own in crops:
        assert ys.start % CELL == 0 and xs.start % CELL == 0  # on the network's grid
        assert own.shape == (ys.stop - ys.start, xs.stop - xs.start)
        assert not covered[ys, xs][own].any()  # each pixel belongs to one crop
        covered[ys, xs] |= own
        marks = np.argwhere(detected[ys, xs] & own)
        top, left = marks.min(0) + np.array([ys.start, xs.start])
        bottom, right = marks.max(0) + np.array([ys.start, xs.start])
        # Context on every side, unless the image ends first.
        assert top - ys.start >= min(CONTEXT, top) and left - xs.start >= min(CONTEXT, left)
        assert ys.stop - 1 - bottom >= min(CONTEXT, 299 - bottom)
        assert xs.stop - 1 - right >= min(CONTEXT, 499 - right)
    assert covered[detected].all()
    assert covered.mean() < 0.5


def test_marks_all_over_the_image_inpaint_it_whole() -> None:
    from annot_denoise.inference.execution import crops as _crops

    detected = np.zeros((256, 256), bool)
    detected[::40, ::40] = True
    ((ys, xs), own), *rest = _crops(detected)
    assert not rest and (ys, xs) == (slice(0, 256), slice(0, 256)) and own.all()


@pytest.mark.parametrize("shape", [(540, 960), (100, 700), (37, 45)])
def test_crops_grow_to_a_few_shapes_inside_the_image(shape) -> None:
    from annot_denoise.inference.execution import BUCKET, CELL, bucket

    rng = np.random.default_rng(0)
    h, w = shape
    for _ in range(200):
        y0, x0 = CELL * rng.integers(0, h // CELL + 1), CELL * rng.integers(0, w // CELL + 1)
        y0, x0 = min(y0, h - 1), min(x0, w - 1)
        box = (slice(y0, rng.integers(y0 + 1, h + 1)), slice(x0, rng.integers(x0 + 1, w + 1)))
        grown = bucket(box, shape)
        for part, side, length in zip(box, grown, shape):
            assert 0 <= side.start <= part.start and part.stop <= side.stop <= length
            size = side.stop - side.start
            assert size % BUCKET == 0 or size == length
            assert size - (part.stop - part.start) < BUCKET


def test_grown_crops_stay_within_a_tile() -> None:
    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"), tile=96)
    shapes = []
    real = r._inpaint
    r._inpaint = lambda batch: shapes.append(batch.shape[1:3]) or real(batch)
    r.restore(_annotated_scans(2))
    assert shapes and max(max(shape) for shape in shapes) <= 96


def test_crops_of_a_batch_share_inpainter_passes() -> None:
    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))
    # No interface: the stand-in takes every bright pixel for a mark, and the crops
    # must fall into shared size classes for the test to mean anything.
    scans = _annotated_scans(4, scanner_ui="off")
    alone = [r.restore([scan])[0] for scan in scans]
    passes = []
    real = r._inpaint
    r._inpaint = lambda batch: passes.append(len(batch)) or real(batch)
    together = r.restore(scans)
    assert sum(passes) > len(passes)  # several crops in one pass
    for a, b in zip(alone, together):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)


@pytest.fixture(scope="module")
def default_model() -> tuple:
    from annot_denoise.pretrained import resolve_model

    return load_model(resolve_model(None))


def _annotated_scans(
    count: int, h: int = 240, w: int = 320, scanner_ui: str = "keep"
) -> list[np.ndarray]:
    from annot_denoise.synth.pipeline import annotate

    scans = []
    for k in range(count):
        scan = make_phantom(h, w, np.random.default_rng(k), color=True)
        scans.append(annotate(scan, "mixed", np.random.default_rng(k), scanner_ui=scanner_ui)[1])
    return scans


def test_inpainting_crops_match_whole_image_inpainting(default_model) -> None:
    model, ckpt = default_model
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    scans = _annotated_scans(4)
    cropped = r.restore(scans)
    r.two_stage = False  # the single forward pass: detector and inpainter on everything
    whole = r.restore(scans)
    for a, b in zip(cropped, whole):
        union, both = a.mask | b.mask, a.mask & b.mask
        assert union.any()
        assert both.sum() >= 0.95 * union.sum()  # the same holes, up to a few fringe pixels
        diff = np.abs(a.image.astype(int) - b.image.astype(int)).max(axis=-1)
        assert diff[both].mean() <= 1.0  # grey levels
        assert not diff[~union].any()


def test_tta_gives_the_same_repair_to_a_flipped_scan(default_model) -> None:
    model, ckpt = default_model
    scan = _annotated_scans(1)[0]
    flipped = np.ascontiguousarray(scan[:, ::-1])
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), tta=True)
    a, b = r.restore([scan])[0], r.restore([flipped])[0]
    # The four-flip average is the same average either way (up to the order of the
    # sums and the hole's fringe, which the unflipped view decides). Whether one
    # pass alone is flip-consistent depends on the weights, so it is not asserted.
    assert np.array_equal(a.mask, b.mask[:, ::-1])
    diff = np.abs(a.image.astype(int) - b.image[:, ::-1].astype(int)).max(axis=-1)
    assert diff[a.mask | b.mask[:, ::-1]].mean() < 0.5


def test_tta_on_a_resized_mask_model_paints_whole_holes() -> None:
    from annot_denoise.models.maskunet import MaskUNet

    torch.manual_seed(0)
    model = MaskUNet(width=4, depth=2)
    nn.init.zeros_(model.mask_head.bias)  # random weights: about half the pixels found
    r = Restorer(model, channels=3, device=torch.device("cpu"), size=(32, 32), tta=True)
    batch = np.random.default_rng(0).random((1, 32, 32, 3), dtype=np.float32)
    out = r._forward(batch)
    assert 0 < out["hole"].mean() < 1
    assert np.isin(out["hole"], [0.0, 1.0]).all()  # one hole, not an average of four
    image = _scan(48, 64, 3, np.uint8)
    result = r.restore([image])[0]
    assert result.mask.any()
    assert np.array_equal(result.image[~result.mask], image[~result.mask])


def test_same_sized_images_batch_like_single_ones(default_model) -> None:
    model, ckpt = default_model
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), batch_size=4)
    scans = _annotated_scans(3) + _annotated_scans(1, 200, 280)
    together = r.restore(scans)
    for scan, result in zip(scans, together):
        alone = r.restore([scan])[0]
        assert np.array_equal(alone.mask, result.mask)
        assert np.abs(alone.image.astype(int) - result.image.astype(int)).max() <= 1


def test_two_stage_out_of_memory_falls_back_to_smaller_tiles(monkeypatch, caplog) -> None:
    # A per-pixel stand-in: tiles of any size must then give exactly the same result.
    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"), tile=512)
    scans = _annotated_scans(2, 300, 400)
    expected = r.restore(scans)
    calls = []
    for name in ("_detect", "_inpaint"):
        real = getattr(r, name)

        def flaky(batch, real=real):
            if batch.shape[1] > 256 or batch.shape[2] > 256:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            calls.append(batch.shape)
            return real(batch)

        monkeypatch.setattr(r, name, flaky)
    with caplog.at_level("WARNING"):
        results = r.restore(scans)
    assert any("out of GPU memory" in m for m in caplog.messages)
    assert calls and all(max(shape[1:3]) <= 256 for shape in calls)
    for got, want in zip(results, expected):
        assert np.array_equal(got.mask, want.mask) and want.mask.any()
        assert got.image.shape == want.image.shape


def test_inpaint_given_masks_writes_only_there(mask_run: Path, trained_run: Path) -> None:
    model, ckpt = load_model(mask_run / "best.pt")
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), dilate=0)
    image = make_phantom(90, 120, np.random.default_rng(2))
    given = np.zeros((90, 120), bool)
    given[30:36, 20:80] = True
    out = r.inpaint([image], [given])[0]
    assert np.array_equal(out.mask, given)  # no growth at dilate 0, no detection
    assert np.array_equal(out.image[~given], image[~given])
    assert not np.array_equal(out.image[given], image[given])
    strict = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), dilate=0, threshold=1.0)
    assert np.array_equal(strict.inpaint([image], [given])[0].mask, given)  # given, not thresholded
    with pytest.raises(ValueError, match="a mask of"):
        r.inpaint([image], [given[:50]])
    unet, unet_ckpt = load_model(trained_run / "best.pt")
    with pytest.raises(ValueError, match="mask-aware model"):
        Restorer.from_checkpoint(unet, unet_ckpt, torch.device("cpu")).inpaint([image], [given])


def test_images_four_pixels_high_and_one_wide_are_cleaned() -> None:
    # OpenCV reads a Python float as a 4x1 array: comparing a 4x1 image with one
    # failed. And a flip of a length-1 axis keeps a stride torch refuses (--tta).
    image = np.array([[0], [255], [0], [0]], np.uint8)
    for restorer in (_restorer(channels=1, dilate=0), _restorer(channels=1, tta=True)):
        out = restorer.restore([image, image[None, :, 0].copy()])
        assert out[0].image.shape == (4, 1) and out[1].image.shape == (1, 4)


@pytest.mark.parametrize("channels", [1, 3])
def test_grey_arrays_with_a_channel_axis_come_back_in_that_shape(channels) -> None:
    image, top = _black_surround(1, np.uint8)
    image = image[..., None].copy()  # H x W x 1, as numpy code may hand it over
    marked = image.copy()
    marked[40:43, 20:60] = top
    result = _restorer(channels=channels, dilate=0).restore([marked])[0]
    assert result.image.shape == marked.shape and result.image.dtype == marked.dtype
    assert result.mask[40:43, 20:60].all()
    assert np.array_equal(result.image[~result.mask], marked[~result.mask])
    assert np.all(np.abs(result.image[40:43, 20:60].astype(int) - round(0.25 * top)) <= 1)


def test_one_default_for_how_far_the_mask_grows() -> None:
    """A restorer built directly, one from a checkpoint that does not say, a new
    training config and the model's own forward and inpaint all grow a detection
    by the same number of pixels."""
    import inspect

    from annot_denoise.config import validate_config
    from annot_denoise.models import build_model

    torch.manual_seed(0)
    model = build_model("maskunet", in_channels=1, width=8, depth=2).eval()
    cpu = torch.device("cpu")
    configured = validate_config({}).model.mask_dilate
    assert Restorer(model, channels=1, device=cpu).dilate == configured
    silent = {"data": {"channels": 1}, "inference": {}}
    assert Restorer.from_checkpoint(model, silent, cpu).dilate == configured
    x = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    detected = torch.zeros(1, 1, 32, 32)
    detected[..., 16, 16] = 1
    with torch.no_grad():
        holes = {d: model.inpaint(x, detected, d)[1] for d in (configured, configured + 2)}
        assert not torch.equal(holes[configured], holes[configured + 2])  # growth shows
        assert torch.equal(model.inpaint(x, detected)[1], holes[configured])
    assert inspect.signature(model.forward).parameters["dilate"].default == configured
