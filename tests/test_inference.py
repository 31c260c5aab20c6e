"""Applying networks to whole images: fidelity outside the mask, tiles, sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from standins import BrightMarksInTwoStages, FixedDetections, MarksAreBright
from torch import nn

from annot_denoise.inference import DEFAULT_STEPS, STEPS, PostprocessConfig, Restorer
from annot_denoise.inference.postprocess import Frame
from annot_denoise.inference.postprocess.common import with_telea
from annot_denoise.phantom import make_phantom
from annot_denoise.training.checkpoint import load_model

DEFAULTS = PostprocessConfig()


def _step(name: str, net: np.ndarray, detected: np.ndarray, prob=None, **params) -> np.ndarray:
    """Detection step ``name`` alone on a network input and detections (its
    defaults, or ``params``): the detections it hands on."""
    cfg = DEFAULTS.params(name).model_copy(update=params)
    frame = Frame(net=net, detected=detected.copy(), prob=prob)
    return STEPS[name].hooks["detection"](frame, cfg).detected


def _edges(net: np.ndarray, prob: np.ndarray, detected: np.ndarray) -> np.ndarray:
    return _step("scan_edges", net, detected, prob)


def _without(*names: str) -> PostprocessConfig:
    return PostprocessConfig(steps=tuple(s for s in DEFAULT_STEPS if s not in names))


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


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_marks_on_a_flat_background_get_it_back_exactly(channels, dtype) -> None:
    image, top = _black_surround(channels, dtype)
    label = image.copy()
    label[5:9, 30:50] = top  # a label on the black: detected (above 0.9)
    label[4, 30:50] = top // 3  # its anti-aliased rim: missed by the detector
    label[9, 30:50] = 1  # and the faintest edge, within the flat tolerance
    result = _restorer(dilate=0).restore([label])[0]
    assert np.array_equal(result.image, image)  # the black comes back exactly
    assert result.mask[4:10, 30:50].all() and not result.mask[20:].any()


def test_a_dark_backing_within_the_flat_tolerance_is_filled_too() -> None:
    image, top = _black_surround(1, np.uint8)
    label = image.copy()
    label[3:17, 24:56] = 1  # a box on the black, one level above it ...
    label[8:10, 24:40] = 2
    label[6:12, 30:50] = top  # ... with a label on it: detected
    result = _restorer(dilate=0).restore([label])[0]
    assert np.array_equal(result.image, image)  # the black comes back exactly
    assert result.mask[3:17, 24:56].all() and not result.mask[20:].any()


def test_the_dim_end_of_a_colour_bar_on_black_is_filled_too() -> None:
    image, top = _black_surround(3, np.uint8)
    bar = image.copy()
    bar[6:11, 20:56] = top  # the bright part: detected
    # The dark end fades towards black over 12 px the detector does not see.
    bar[6:11, 56:68] = np.linspace(0.6 * top, 0.05 * top, 12).astype(np.uint8)[None, :, None]
    result = _restorer(dilate=0).restore([bar])[0]
    assert not result.detected[6:11, 56:68].any()
    assert np.array_equal(result.image, image)


def test_marks_on_anatomy_are_left_to_the_network() -> None:
    image, top = _black_surround(1, np.uint8)
    marked = image.copy()
    marked[40:43, 20:60] = top  # on the tissue
    marked[18:24, 40:44] = top  # across the edge of the black surround
    marked[30:60, 60:62] = top  # through the tissue down to the bottom edge
    result = _restorer(dilate=0).restore([marked])[0]
    assert result.mask[40:43, 20:60].all() and result.mask[18:24, 40:44].all()
    network = round(0.25 * top)
    assert np.all(np.abs(result.image[40:43, 20:60].astype(int) - network) <= 1)
    assert np.all(np.abs(result.image[30:60, 60:62].astype(int) - network) <= 1)
    # The half on the black, with black on both sides along its rows, gets it back;
    # the half on the tissue does not.
    assert not result.image[18:20, 40:44].any()
    assert result.image[20:24, 40:44].all()
    assert np.array_equal(result.image[~result.mask], marked[~result.mask])


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_box_across_the_top_edge_of_a_scan_gives_the_black_back(channels, dtype) -> None:
    image, top = _black_surround(channels, dtype)
    marked = image.copy()
    # A framed readout box whose top runs along the black above the tissue and whose
    # left side runs down the black margin.
    marked[17:19, 8:60] = top
    marked[17:40, 8:11] = top
    marked[17:40, 58:60] = top
    marked[38:40, 8:60] = top
    result = _restorer(dilate=0).restore([marked])[0]
    assert (
        result.mask[17:40, 8:60].sum()
        == (marked[17:40, 8:60] == top).reshape(23, 52, -1)[..., 0].sum()
    )
    # On the black (rows 17-19, columns 8-9) the surround comes back exactly ...
    assert not result.image[17:19, 8:60].any()
    assert not result.image[17:40, 8:10].any()
    # ... and on the tissue it does not (no line has black at both ends): beyond
    # NEAR_SURROUND px of the black the network's fill stays as it is.
    assert result.image[20:40, 10:11].all()
    network = round(0.25 * top)
    for part in (result.image[28:40, 58:60], result.image[38:40, 20:58]):
        assert np.all(np.abs(part.astype(int) - network) <= 1)
    assert np.array_equal(result.image[~result.mask], marked[~result.mask])


@pytest.mark.parametrize("channels", [1, 3])
def test_holes_at_the_edge_of_the_black_are_filled_from_the_tissue(channels) -> None:
    NEAR_SURROUND = DEFAULTS.surround_telea.near
    SURROUND_TELEA_SHARE = DEFAULTS.surround_telea.share

    shape = (60, 80) if channels == 1 else (60, 80, channels)
    rng = np.random.default_rng(2)
    image = rng.integers(196, 205, shape).astype(np.uint8)  # even tissue ...
    image[:20] = 0  # ... below a black surround
    marked = image.copy()
    marked[20:23, 20:60] = 255  # a label on the tissue, just below the black
    marked[40:43, 20:60] = 255  # and one far from it
    result = _restorer(dilate=0).restore([marked])[0]
    network = 0.25 * 255
    # Telea from the tissue alone gives the tissue's 200; had it read the black
    # beside the hole, it would have come out darker.
    near = (1 - SURROUND_TELEA_SHARE) * network + SURROUND_TELEA_SHARE * 200
    assert NEAR_SURROUND >= 3
    assert np.all(np.abs(result.image[20:23, 20:60].astype(float) - near) <= 3)
    assert np.all(np.abs(result.image[40:43, 20:60].astype(float) - network) <= 1)
    assert np.array_equal(result.image[~result.mask], marked[~result.mask])


def test_threshold_decides_what_counts() -> None:
    image = _scan(30, 30, 1, np.uint8)
    assert _restorer(threshold=0.9999999).restore([image])[0].mask.sum() == 0


def test_grey_scans_get_grey_repairs() -> None:
    class TintedContent(MarksAreBright):
        def forward(self, x, **kw):
            parts = super().forward(x, **kw)
            parts["content"] = parts["content"] + torch.tensor([0.2, 0.0, -0.2]).view(1, 3, 1, 1)
            return parts

    grey = np.repeat(_scan(30, 40, 1, np.uint8)[..., None], 3, axis=2)
    r = Restorer(TintedContent(), channels=3, device=torch.device("cpu"))
    out = r.restore([grey])[0]
    fixed = out.image[out.mask]
    assert np.all(fixed[:, 0] == fixed[:, 1]) and np.all(fixed[:, 1] == fixed[:, 2])


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


@pytest.fixture(scope="module")
def default_model() -> tuple:
    from annot_denoise.pretrained import resolve_model

    return load_model(resolve_model(None))


def _annotated_scans(count: int, h: int = 240, w: int = 320) -> list[np.ndarray]:
    from annot_denoise.synth.pipeline import annotate

    scans = []
    for k in range(count):
        scan = make_phantom(h, w, np.random.default_rng(k), color=True)
        scans.append(annotate(scan, "mixed", np.random.default_rng(k))[1])
    return scans


def test_inpainting_crops_match_whole_image_inpainting(default_model) -> None:
    # The single forward pass has no detection steps and no Telea share; compare
    # without them (and without the Telea fill at the surround's edge, which reads
    # the holes, which differ by a few fringe pixels).
    model, ckpt = default_model
    steps = [s for s in DEFAULT_STEPS if "detection" not in STEPS[s].hooks]
    steps = [s for s in steps if s not in ("telea_blend", "surround_telea")]
    cfg = PostprocessConfig(steps=tuple(steps))
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), postprocess=cfg)
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


@pytest.mark.parametrize("grey", [True, False])
def test_the_fill_mixes_in_telea_of_the_same_holes(grey: bool) -> None:
    # A ramp, which Telea fills almost exactly; the network's content is 0 here,
    # so what comes back is the Telea share of the ramp.
    ramp = np.tile(np.linspace(0.1, 0.9, 64, dtype=np.float32), (48, 1))
    net = np.stack([ramp, ramp if grey else 1 - ramp, ramp if grey else ramp**2], axis=-1)
    hole = np.zeros((48, 64), bool)
    hole[20:24, 8:56] = True
    marked = net.copy()
    marked[hole] = 1.0  # the mark itself must not leak into the fill
    share = DEFAULTS.telea_blend.share
    mixed = with_telea(marked, hole, np.zeros_like(net), share)
    assert 0 < share < 1
    assert np.abs(mixed[hole] - share * net[hole]).max() < 0.02 * share  # Telea: ~1% off
    assert not mixed[~hole].any()  # outside the hole the content is kept as it was


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


def test_the_telea_share_is_in_what_restore_writes(default_model) -> None:
    model, ckpt = default_model
    r = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    scan = _annotated_scans(1)[0]
    mixed = r.restore([scan])[0]
    without = _without("telea_blend")
    alone = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), postprocess=without)
    alone = alone.restore([scan])[0]
    assert np.array_equal(mixed.mask, alone.mask)  # what is painted changes, not where
    assert not np.array_equal(mixed.image[mixed.mask], alone.image[alone.mask])
    assert np.array_equal(mixed.image[~mixed.mask], alone.image[~alone.mask])


def test_telea_leaves_a_hole_without_surroundings_to_the_network() -> None:
    net = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    content = np.full_like(net, 0.5)
    whole = np.ones((8, 8), bool)
    assert np.array_equal(with_telea(net, whole, content.copy(), 0.25), content)


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


def test_coloured_marks_are_completed_on_grey_scans_only() -> None:
    rng = np.random.default_rng(0)
    grey = rng.random((240, 320)).astype(np.float32)
    net = np.repeat(grey[..., None], 3, axis=2)
    yellow = np.zeros((240, 320), bool)
    yellow[40:43, 20:100] = True  # a line ...
    fringe = np.zeros_like(yellow)
    fringe[39, 20:100] = fringe[43, 20:100] = True  # ... and its faint anti-aliased rim
    net[yellow] = [1.0, 1.0, 0.0]
    net[fringe] = net[fringe] * 0.8 + np.array([1.0, 1.0, 0.0]) * 0.2
    net[90:95, 130:135] = [0.0, 0.8, 0.0]  # a green patch the detector did not touch
    net[60:100, 20:60] = [0.8, 0.1, 0.1]  # colour flow under a caliper ...
    detected = np.zeros_like(yellow)
    detected[41, 24:96] = True  # the detector found the line's core only
    detected[80:83, 35:45] = True  # ... and the caliper
    completed = _step("colour_completion", net, detected)
    near_caliper = np.zeros_like(yellow)
    near_caliper[76:87, 31:49] = True  # the caliper grown by COLOUR_REACH (4 px)
    assert (completed == (detected | yellow | fringe | near_caliper)).all()
    # Nothing found, nothing added; a colour scan (tinted all over) is left alone.
    assert not _step("colour_completion", net, np.zeros_like(detected)).any()
    tinted = net * np.array([1.0, 0.9, 0.8], np.float32)
    assert (_step("colour_completion", tinted, detected) == detected).all()
    assert (_step("colour_completion", net[..., :1], detected) == detected).all()  # grey network


def test_a_solid_marks_undetected_core_is_taken_in_but_letter_counters_are_not() -> None:
    GAP_AREA = DEFAULTS.close_islands.area

    rng = np.random.default_rng(1)
    net = (0.3 + 0.1 * rng.random((120, 200, 1))).astype(np.float32)  # speckled tissue
    # A solid white arrowhead whose 5x5 core the detector missed.
    net[20:40, 20:40] = 1.0
    detected = np.zeros((120, 200), bool)
    detected[20:40, 20:40] = True
    detected[28:33, 28:33] = False
    # A grey letter "O": its counter is tissue, darker than the stroke.
    net[20:40, 80:100] = 0.6
    net[25:35, 85:95] = 0.3 + 0.1 * rng.random((10, 10, 1))
    detected[20:40, 80:100] = True
    detected[25:35, 85:95] = False
    # An "O" in the tissue's own grey: its counter is speckle, not flat.
    net[20:40, 140:160] = 0.35
    net[25:35, 145:155] = 0.3 + 0.1 * rng.random((10, 10, 1))
    detected[20:40, 140:160] = True
    detected[25:35, 145:155] = False
    # A white ROI box around a white region larger than GAP_AREA: anatomy, kept.
    side = int(np.sqrt(GAP_AREA)) + 4
    net[60 : 60 + side + 4, 20 : 20 + side + 4] = 1.0
    detected[60 : 60 + side + 4, 20 : 20 + side + 4] = True
    detected[62 : 62 + side, 22 : 22 + side] = False
    # An open gap (touching the tissue outside) is not an island.
    net[60:80, 80:100] = 1.0
    detected[60:80, 80:100] = True
    detected[65:70, 80:90] = False

    closed = _step("close_islands", net, detected)
    expected = detected.copy()
    expected[28:33, 28:33] = True
    assert (closed == expected).all()
    # Colour networks compare every channel; nothing found, nothing added.
    rgb = np.repeat(net, 3, axis=2)
    assert (_step("close_islands", rgb, detected) == expected).all()
    rgb[28:33, 28:33] = [1.0, 0.9, 1.0]  # a core of another colour: not the same mark
    assert (_step("close_islands", rgb, detected) == detected).all()
    assert not _step("close_islands", net, np.zeros_like(detected)).any()


def test_across_a_slanted_sector_edge_only_the_tissue_side_is_filled_from_the_tissue() -> None:
    SURROUND_TELEA_SHARE = DEFAULTS.surround_telea.share

    rng = np.random.default_rng(3)
    image = rng.integers(196, 205, (80, 100)).astype(np.uint8)
    y, x = np.mgrid[:80, :100]
    black = y < 20 + 0.6 * x  # a sector's slanted edge: black above it
    image[black] = 0
    marked = image.copy()
    marked[38:44, 20:50] = 255  # a label across the edge
    result = _restorer(dilate=0).restore([marked])[0]
    hole = result.mask
    assert hole[38:44, 20:50].all()
    out = result.image.astype(float)
    network = 0.25 * 255
    mixed = (1 - SURROUND_TELEA_SHARE) * network + SURROUND_TELEA_SHARE * 200
    # On the black side (a pixel's margin left for drawing the hull): the black
    # back, or the network's fill; never the tissue's.
    on_black = out[hole & (y < 20 + 0.6 * x - 1)]
    assert np.all((on_black == 0) | (np.abs(on_black - network) <= 1))
    assert (on_black == 0).any() and (np.abs(on_black - network) <= 1).any()
    # On the tissue side, next to the black: half of it filled from the tissue.
    assert np.all(np.abs(out[hole & (y >= 20 + 0.6 * x + 1)] - mixed) <= 4)
    assert np.array_equal(result.image[~hole], marked[~hole])


def test_a_box_over_the_corner_of_a_rectangular_scan_is_filled_from_the_tissue() -> None:
    SURROUND_TELEA_SHARE = DEFAULTS.surround_telea.share

    rng = np.random.default_rng(4)
    image = rng.integers(196, 205, (60, 80)).astype(np.uint8)
    image[:20] = 0
    image[:, :10] = 0  # the tissue's top-left corner is (20, 10) ...
    marked = image.copy()
    marked[17:24, 8:15] = 255  # ... under a mark
    result = _restorer(dilate=0).restore([marked])[0]
    out = result.image.astype(float)
    assert result.mask[17:24, 8:15].all()
    # The corner is the box's: the black comes back on the black ...
    assert not out[17:20, 8:15].any() and not out[17:24, 8:10].any()
    # ... and the tissue's corner, which the convex hull of what is visible would
    # cut off, is filled from the tissue.
    mixed = (1 - SURROUND_TELEA_SHARE) * 0.25 * 255 + SURROUND_TELEA_SHARE * 200
    assert np.all(np.abs(out[20:24, 10:15] - mixed) <= 4)
    assert np.array_equal(result.image[~result.mask], marked[~result.mask])


def test_a_letters_counter_on_the_black_counts_as_black() -> None:
    rng = np.random.default_rng(6)
    image = rng.integers(196, 205, (60, 80)).astype(np.uint8)
    image[:20] = 0
    marked = image.copy()
    marked[5:12, 10:17] = 255  # an "O" on the black ...
    marked[7:10, 12:15] = 0  # ... with a 3x3 counter, smaller than SURROUND_AREA
    marked[7, 12] = 255  # and a rounded inner corner
    marked[8, 17:40] = 255  # joined to a line down into the tissue (no flat fill)
    marked[8:24, 40] = 255
    result = _restorer(dilate=0).restore([marked])[0]
    # Every part of the mark on the black, the counter's corner included, is black.
    assert not result.image[:20][result.mask[:20]].any()
    assert result.image[20:24, 40].all()


def test_images_four_pixels_high_and_one_wide_are_cleaned() -> None:
    # OpenCV reads a Python float as a 4x1 array: comparing a 4x1 image with one
    # failed. And a flip of a length-1 axis keeps a stride torch refuses (--tta).
    image = np.array([[0], [255], [0], [0]], np.uint8)
    for restorer in (_restorer(channels=1, dilate=0), _restorer(channels=1, tta=True)):
        out = restorer.restore([image, image[None, :, 0].copy()])
        assert out[0].image.shape == (4, 1) and out[1].image.shape == (1, 4)


def test_a_mesh_of_detections_is_not_searched_for_cores() -> None:
    GAP_ISLANDS = DEFAULTS.close_islands.max_islands

    side = int(np.ceil(np.sqrt(GAP_ISLANDS + 1))) * 4 + 1
    net = np.ones((side, side, 1), np.float32)  # flat white: every hole would qualify
    detected = np.ones((side, side), bool)
    detected[1::4, 1::4] = False  # more than GAP_ISLANDS one-pixel islands
    assert (_step("close_islands", net, detected) == detected).all()
    few = np.ones((41, 41), bool)
    few[1::4, 1::4] = False  # 100 islands: taken in
    assert _step("close_islands", np.ones((41, 41, 1), np.float32), few).all()


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


def _veiled_readout(channels: int, dtype, k: float = 0.4) -> tuple[np.ndarray, np.ndarray]:
    """(clean, annotated): speckled tissue with a readout in white on a box that
    lets ``k`` of the light through, rows 40-79 and columns 50-149."""
    top = 65535 if dtype == np.uint16 else 255
    rng = np.random.default_rng(7)
    shape = (120, 200) if channels == 1 else (120, 200, channels)
    clean = (rng.uniform(0.38, 0.48, shape) * top).astype(dtype)
    marked = clean.copy()
    marked[40:80, 50:150] = np.rint(clean[40:80, 50:150] * k).astype(dtype)
    for row in (48, 60, 72):  # three lines of "text"
        marked[row : row + 3, 60:140:4] = top
    return clean, marked


@pytest.mark.parametrize(("channels", "dtype"), [(1, np.uint8), (3, np.uint8), (1, np.uint16)])
def test_the_anatomy_under_a_translucent_readout_box_comes_back(channels, dtype) -> None:
    clean, marked = _veiled_readout(channels, dtype)
    restorer = Restorer(
        BrightMarksInTwoStages(), channels=channels, device=torch.device("cpu"), dilate=0
    )
    result = restorer.restore([marked])[0]
    box = np.zeros(marked.shape[:2], bool)
    box[40:80, 50:150] = True
    assert result.mask[box].all() and not result.mask[~box].any()
    assert np.array_equal(result.image[~box], marked[~box])
    # Undarkened: the input over the box's 0.4, within the rounding of the darkening.
    under = box & ~result.detected
    step = (65535 if dtype == np.uint16 else 255) / 255
    error = np.abs(result.image[under].astype(float) - clean[under].astype(float))
    assert error.max() <= 2 * step
    # The text was painted from the box's anatomy undarkened (the tissue's mean
    # level), not from the darkened box.
    level = clean.astype(float).mean()
    assert np.all(np.abs(result.image[result.detected].astype(float) - level) <= 0.04 * level)


def test_an_opaque_readout_box_is_repainted_whole() -> None:
    VEIL_MIN = DEFAULTS.translucent_boxes.min_share

    clean, marked = _veiled_readout(3, np.uint8, k=VEIL_MIN / 4)
    restorer = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"), dilate=0)
    result = restorer.restore([marked])[0]
    box = np.zeros(marked.shape[:2], bool)
    box[40:80, 50:150] = True
    # Too dark to undarken: the whole box is a hole, painted from the tissue around.
    assert np.array_equal(result.detected, box) and np.array_equal(result.mask, box)
    level = clean[~box].astype(float).mean()
    assert np.all(np.abs(result.image[box].astype(float) - level) <= 0.04 * level)
    assert np.array_equal(result.image[~box], marked[~box])
    # Not when a side has no edge of its own: black beyond the bottom of the box.
    marked[80:] = 0
    result = restorer.restore([marked])[0]
    assert np.array_equal(result.detected, marked.min(axis=2) == 255)


def test_boxes_are_found_by_their_edges_only() -> None:
    from annot_denoise.inference.postprocess.boxes import find_boxes

    def _veils(net, detected):
        return find_boxes(net, detected, DEFAULTS.translucent_boxes)

    clean, marked = _veiled_readout(1, np.uint8)
    net = marked[..., None].astype(np.float32) / 255
    detected = marked == 255
    [(box, k)] = _veils(net, detected)
    assert box == (slice(40, 80), slice(50, 150)) and k == pytest.approx(0.4, abs=0.02)
    # The box's border detected along three sides, a px beyond it, and black two
    # px below it: still found, and nothing outside it undarkened but detections.
    black = net.copy()
    black[82:] = 0
    border = detected.copy()
    border[39:41, 50:150] = True
    border[40:80, 148:151] = True
    border[78:81, 50:150] = True
    [(box, k)] = _veils(black, border)
    assert k == pytest.approx(0.4, abs=0.02)
    taken = np.zeros_like(detected)
    taken[box] = True
    inside = np.zeros_like(detected)
    inside[40:80, 50:150] = True
    assert taken[inside & ~border].all() and border[taken & ~inside].all()
    assert not taken[81:].any()  # the row of tissue between the box and the black
    # The same, mirrored: the edge found is the right one, the border the left.
    [(box, k)] = _veils(black[:, ::-1].copy(), border[:, ::-1].copy())
    mirrored = np.zeros_like(detected)
    mirrored[box] = True
    assert np.array_equal(mirrored, taken[:, ::-1]) and k == pytest.approx(0.4, abs=0.02)
    # The box's border found all round but its bottom, black above it: found ...
    framed = detected.copy()
    framed[39:41, 50:150] = framed[40:80, 48:51] = framed[40:80, 148:151] = True
    above = net.copy()
    above[:39] = 0
    [(box, k)] = _veils(above, framed)
    assert box == (slice(41, 80), slice(51, 148)) and k == pytest.approx(0.4, abs=0.02)
    # ... but not with rows of tissue between the black and the border: nothing
    # tells whether they are the box's, and undarkening tissue would brighten it.
    above = net.copy()
    above[:33] = 0
    assert _veils(above, framed) == []
    # Not a box: the same text on undarkened tissue, on a darkened patch that is
    # not rectangular, or on a box the detector found whole.
    assert _veils(clean[..., None].astype(np.float32) / 255, detected) == []
    y, x = np.mgrid[:120, :200]
    disc = np.where(((y - 60) / 30) ** 2 + ((x - 100) / 60) ** 2 < 1, 0.4, 1.0)
    blotch = (clean * disc)[..., None].astype(np.float32) / 255
    blotch[detected] = 1.0
    assert _veils(blotch, detected) == []
    whole = np.zeros_like(detected)
    whole[40:80, 50:150] = True
    assert _veils(net, whole) == []
    # Marks all over the image are not readouts: no box is sought among them.
    VEIL_GROUPS = DEFAULTS.translucent_boxes.max_groups

    crowd = np.zeros((130 + 30 * (VEIL_GROUPS + 1), 200), bool)
    crowd[:120] = detected
    crowd[130::30, 10:30] = crowd[142::30, 10:30] = True  # pairs of dashes: 12 x 20 groups
    tall = np.concatenate([net, np.full((len(crowd) - 120, 200, 1), 0.4, np.float32)])
    assert _veils(tall, crowd) == []
    assert len(_veils(tall[:600], crowd[:600])) == 1
    # Small marks (a caliper's cross) are never boxes.
    cross = np.zeros_like(detected)
    cross[55:62, 97:100] = cross[57:60, 95:102] = True
    assert _veils(net, cross) == []


def test_row_medians_match_numpy_over_each_rows_mask() -> None:
    from annot_denoise.inference.postprocess.boxes import _row_medians

    rng = np.random.default_rng(8)
    values, mask = rng.random((40, 9)), rng.random((40, 9)) < 0.5
    mask[0] = False  # an empty row
    got = _row_medians(values, mask)
    assert np.isnan(got[0])
    assert np.allclose(got[1:], [np.median(v[m]) for v, m in zip(values[1:], mask[1:])])


def _sector_tip() -> tuple[np.ndarray, np.ndarray]:
    """A scan's pointed corner on black, with anti-aliased edges, and a strip of
    detections along its lower edge: tissue, the edge and the black beyond it."""
    rng = np.random.default_rng(9)
    y, x = np.mgrid[:90, :120].astype(np.float32)
    # Inside when above the lower edge and below the upper one; 1 px of ramp.
    inside = np.clip(np.minimum(70 - y - 0.5 * x + 0.5, y - 10 + 0.3 * x + 0.5) + 0.5, 0, 1)
    inside *= np.clip(100.5 - x, 0, 1)
    tissue = rng.integers(110, 190, (90, 120))
    image = np.rint(tissue * inside).astype(np.uint8)
    edge = np.abs(70 - y - 0.5 * x) <= 2
    strip = edge & (x > 60) & (x < 90)
    return image, strip


def test_a_detection_along_the_scans_own_edge_is_dropped() -> None:
    image, strip = _sector_tip()
    restorer = Restorer(FixedDetections(strip), channels=1, device=torch.device("cpu"), dilate=1)
    result = restorer.restore([image])[0]
    assert not result.detected.any() and not result.mask.any()
    assert np.array_equal(result.image, image)
    # A real mark along that edge is brighter than the tissue: it stays.
    marked = image.copy()
    marked[strip & (np.mgrid[:90, :120][1] % 4 == 0)] = 255
    result = restorer.restore([marked])[0]
    assert np.array_equal(result.detected, strip) and result.changed > 0
    # The rule itself, on the network's input.
    net = image[..., None].astype(np.float32) / 255
    prob = strip.astype(np.float32)
    assert not _edges(net, prob, strip).any()
    assert np.array_equal(_edges(marked[..., None] / np.float32(255), prob, strip), strip)


def test_what_keeps_a_detection_at_the_scans_edge() -> None:
    VEIL_JOIN = DEFAULTS.scan_edges.join

    image, strip = _sector_tip()
    net = image[..., None].astype(np.float32) / 255
    prob = strip.astype(np.float32)
    # Only detections that touch the surround are judged: the same strip of plain
    # tissue 10 px inside the scan stays (the network judged it a mark there).
    inside = np.roll(strip, -10, axis=0)
    assert np.array_equal(_edges(net, inside.astype(np.float32), inside), inside)
    # Colour on a grey scan: a mark.
    rgb = np.repeat(net, 3, axis=2)
    tinted = rgb.copy()
    # Each channel within the tissue's range, but not grey.
    tinted[strip & (net[..., 0] > 0.3)] = [0.5, 0.55, 0.6]
    assert not _edges(rgb, prob, strip).any()
    assert np.array_equal(_edges(tinted, prob, strip), strip)
    # Darker than the tissue away from the black: a mark.
    dark = net.copy()
    ys, xs = np.nonzero(strip)
    inner = strip & ~np.roll(strip, 1, axis=0)  # the strip's top row, in the tissue
    dark[inner] = 0.1
    assert np.array_equal(_edges(dark, prob, strip), strip)
    # A clear mark within VEIL_JOIN px keeps the strip with it (a readout's faint
    # fragments beside its letters); one farther away does not.
    right = xs.argmax()
    for gap, kept in ((VEIL_JOIN, True), (VEIL_JOIN + 3, False)):
        label = net.copy()
        found = strip.copy()
        at = (slice(ys[right] - 1, ys[right] + 2), slice(xs[right] + gap, xs[right] + gap + 3))
        label[at] = 1.0
        found[at] = True
        assert _edges(label, found.astype(np.float32), found)[strip].all() == kept
    # The undetected rest of a mark vouches for nothing: the end of a bar on the
    # black detected, the rest of it not (a small piece, not anatomy) ...
    bar = net.copy()
    bar[30:33, 84:110] = 0.98
    end = np.zeros_like(strip)
    end[30:33, 84:90] = True
    assert np.array_equal(_edges(bar, end.astype(np.float32), end), end)
    # ... and neither does tissue the detector half suspects.
    near = np.zeros_like(strip)
    near[ys.min() - 8 : ys.max() + 9, xs.min() - 8 : xs.max() + 9] = True
    assert np.array_equal(_edges(net, np.where(near, 0.5, prob), strip), strip)
    # No flat surround: nothing is the scan's edge.
    noisy = net + np.random.default_rng(10).uniform(0, 0.05, net.shape).astype(np.float32)
    assert np.array_equal(_edges(noisy, prob, strip), strip)


def _dotted_line() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1-px grey line (185) on dark tissue (40 to 80), and its detection with a
    5-px gap: the middle of the gap lies 3 px from the nearest detected pixel."""
    rng = np.random.default_rng(11)
    image = rng.integers(40, 80, (40, 80)).astype(np.uint8)
    line = np.zeros((40, 80), bool)
    line[20, 10:70] = True
    image[line] = 185
    found = line.copy()
    found[20, 38:43] = False
    return image, line, found


def test_a_marks_undetected_pixels_of_its_own_value_are_repainted() -> None:
    image, line, found = _dotted_line()
    restorer = Restorer(FixedDetections(found), channels=1, device=torch.device("cpu"), dilate=1)
    result = restorer.restore([image])[0]
    assert np.array_equal(result.detected, line)
    assert np.all(result.image[line] < 120)  # the whole line is gone, gap included


def test_what_counts_as_a_marks_own_value() -> None:
    MARK_CONTRAST = DEFAULTS.flat_completion.contrast
    MARK_REACH = DEFAULTS.flat_completion.reach
    MARK_TOLERANCE = DEFAULTS.flat_completion.tolerance

    image, line, found = _dotted_line()

    def completed(img: np.ndarray, det: np.ndarray) -> np.ndarray:
        return _step("flat_completion", img[..., None].astype(np.float32) / 255, det)

    assert np.array_equal(completed(image, found), line)
    # Within the tolerance, in every channel; RGB too.
    off = image.copy()
    off[20, 40] = 185 + MARK_TOLERANCE
    assert completed(off, found)[20, 40]
    off[20, 40] = 185 + MARK_TOLERANCE + 1
    assert not completed(off, found)[20, 40]
    rgb = np.repeat(image[..., None], 3, axis=2)
    rgb[20, 40, 2] = 150
    got = _step("flat_completion", rgb.astype(np.float32) / 255, found)
    assert not got[20, 40] and got[20, 39] and got[20, 41]
    # Only within MARK_REACH px of the detection.
    far = found.copy()
    far[20, 34:47] = False  # detected up to x = 33 and from x = 47
    got = completed(image, far)
    assert got[20, 33 + MARK_REACH] and not got[20, 34 + MARK_REACH : 47 - MARK_REACH].any()
    # A value held by fewer than 3 detected pixels is no mark's.
    short = image.copy()
    short[30, 10:13] = 185  # a 3-px line, 2 of them detected
    two = np.zeros_like(found)
    two[30, 10:12] = True
    assert np.array_equal(completed(short, two), two)
    short[30, 13] = 185  # 4 px, 3 of them detected
    two[30, 12] = True
    assert completed(short, two)[30, 13]
    # Nor is a value the pixels around the group hold more often than it does:
    # the black around a label on the surround.
    label = np.zeros((40, 80), np.uint8)
    label[:, :40] = 120  # tissue, then the black surround
    label[18:23, 30:42] = 255  # a label over the edge, mostly on the tissue
    edges = np.zeros_like(found)
    edges[17:24, 29:43] = True  # the label and a px around it
    assert np.array_equal(completed(label, edges), edges)
    # Two values in one group (a white cross on a grey line): both are its own.
    cross = image.copy()
    cross[16:25, 20] = cross[20, 16:25] = 255
    both = found.copy()
    both[16:25, 20] = True
    both[22, 20] = False
    both[20, 16:25] = True
    got = completed(cross, both)
    assert got[22, 20] and got[20, 40]
    # A mark of the tissue's own grey takes nothing: the tissue's pixels of that
    # grey beside it are not the mark's.
    grey = np.full((40, 80), 100, np.uint8)
    grey[::2, ::2] = 100 + MARK_CONTRAST - 1  # a checkered 'tissue'
    grey[line] = 100 + MARK_CONTRAST - 1
    assert np.array_equal(completed(grey, found), found)


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
