"""Property tests over random sizes and layouts: clean, image I/O and drawers.

What the example-based tests pin at one size is checked here on generated images,
including the degenerate ones (1x1, one-pixel rows and columns, odd sizes). Fixed
layouts already covered elsewhere (test_io's PNG property, test_drawers' contract and
"never raises" property) are not repeated.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image

from annot_denoise.clean import clean, mask_path
from annot_denoise.config import CleanConfig
from annot_denoise.inference import Restorer
from annot_denoise.io import differs, read_image, split_alpha, to_grey, to_rgb, write_image
from annot_denoise.pretrained import resolve_model
from annot_denoise.synth.drawers import COLORS, DRAWERS
from annot_denoise.synth.pipeline import annotate, promote
from annot_denoise.training.checkpoint import load_model

CHANNELS = {"grey": 0, "grey+alpha": 2, "rgb": 3, "rgba": 4}  # 0 = a plain HxW array
DTYPES = [np.uint8, np.uint16]


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    """The shipped default model (a mask-aware maskunet) on the CPU."""
    model, ckpt = load_model(resolve_model(None))
    return Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))


@cache
def annotated_scan() -> np.ndarray:
    """A 128x128 RGB phantom with real annotations: crops give the network something to find."""
    from annot_denoise.phantom import make_phantom

    scan = np.repeat(make_phantom(128, 128, np.random.default_rng(7))[..., None], 3, axis=2)
    DRAWERS["mixed"](scan, np.random.default_rng(7), colors=("white", "yellow"))
    return scan


def make_image(h: int, w: int, channels: int, dtype, content: str, seed: int) -> np.ndarray:
    """An image of the given layout: noise, one flat value, or a crop of an annotated scan.

    Alpha is always noise, so "alpha is kept" is checked on every value.
    """
    rng = np.random.default_rng(seed)
    top = int(np.iinfo(dtype).max)
    colour = 3 if channels in (3, 4) else 1
    if content == "noise":
        body = rng.integers(0, top, (h, w, colour), endpoint=True).astype(dtype)
    elif content == "flat":
        body = np.full((h, w, colour), rng.integers(0, top, endpoint=True), dtype)
    else:
        scan = annotated_scan()
        y, x = rng.integers(0, 129 - h), rng.integers(0, 129 - w)
        crop = scan[y : y + h, x : x + w]
        crop = crop if colour == 3 else to_grey(crop)[..., None]
        body = crop.astype(dtype) * (257 if dtype == np.uint16 else 1)
    if channels in (2, 4):
        alpha = rng.integers(0, top, (h, w, 1), endpoint=True).astype(dtype)
        body = np.concatenate([body, alpha], axis=2)
    return np.ascontiguousarray(body[..., 0] if channels == 0 else body)


@st.composite
def images(draw, max_side: int = 100, layouts=None) -> np.ndarray:
    dtype, channels = draw(
        st.sampled_from(layouts or [(d, c) for d in DTYPES for c in CHANNELS.values()])
    )
    h, w = draw(st.integers(1, max_side)), draw(st.integers(1, max_side))
    content = draw(st.sampled_from(["noise", "flat", "scan"]))
    return make_image(h, w, channels, dtype, content, draw(st.integers(0, 2**16)))


def assert_same_geometry_and_untouched_outside(image, out, mask) -> None:
    """Shape, dtype and alpha kept; every pixel outside the mask is the input's."""
    assert out.shape == image.shape and out.dtype == image.dtype
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    _, alpha_in = split_alpha(image)
    _, alpha_out = split_alpha(out)
    if alpha_in is not None:
        assert np.array_equal(alpha_out, alpha_in)
    assert np.array_equal(out[~mask], image[~mask])


# --------------------------------------------------------------------------- clean


@settings(max_examples=40, deadline=None)
@given(first=images(), second=images())
@example(
    first=make_image(1, 1, 0, np.uint8, "noise", 0),
    second=make_image(1, 1, 4, np.uint16, "flat", 1),
)
@example(
    first=make_image(1, 37, 3, np.uint8, "scan", 2),
    second=make_image(37, 1, 2, np.uint16, "noise", 3),
)
@example(
    first=make_image(3, 5, 2, np.uint8, "scan", 4),
    second=make_image(65, 33, 4, np.uint8, "scan", 5),
)
@example(
    first=make_image(100, 100, 0, np.uint16, "scan", 6),
    second=make_image(2, 99, 3, np.uint16, "scan", 7),
)
def test_restore_keeps_geometry_alpha_and_pixels_outside_the_mask(
    restorer: Restorer, first: np.ndarray, second: np.ndarray
) -> None:
    together = restorer.restore([first, second])
    for image, result in zip([first, second], together):
        assert_same_geometry_and_untouched_outside(image, result.image, result.mask)
        assert result.changed == pytest.approx(float(differs(image, result.image).mean()))
        assert not (differs(image, result.image) & ~result.mask).any()
        # clean batches frames of different files together: a neighbour changes nothing.
        alone = restorer.restore([image])[0]
        assert np.array_equal(alone.image, result.image)
        assert np.array_equal(alone.mask, result.mask)


# Layouts write_image can store in both PNG and TIFF (16-bit grey+alpha: PNG only).
FILE_LAYOUTS = [(np.uint8, c) for c in (0, 2, 3, 4)] + [(np.uint16, c) for c in (0, 3, 4)]


@settings(max_examples=12, deadline=None)
@given(image=images(max_side=70, layouts=FILE_LAYOUTS), suffix=st.sampled_from([".png", ".tif"]))
@example(image=make_image(1, 1, 4, np.uint16, "noise", 0), suffix=".tif")
@example(image=make_image(1, 37, 2, np.uint8, "scan", 1), suffix=".png")
@example(image=make_image(37, 1, 0, np.uint16, "scan", 2), suffix=".png")
@example(image=make_image(65, 33, 3, np.uint8, "scan", 3), suffix=".tif")
def test_clean_writes_the_restored_image_in_the_input_layout(
    restorer: Restorer, image: np.ndarray, suffix: str
) -> None:
    if image.ndim == 3 and image.shape[2] == 2:
        suffix = ".png"  # the one format that stores grey+alpha
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "in", Path(tmp) / "out"
        write_image(src / f"scan{suffix}", image)
        report = clean(CleanConfig(inputs=src, out=out, save_mask=True), restorer)
        assert report.ok and report.processed == 1, report.failed
        written = read_image(out / f"scan{suffix}")
        mask = read_image(mask_path(out / f"scan{suffix}")) == 255
        assert_same_geometry_and_untouched_outside(image, written, mask)
        # The file holds exactly what the network path gives (lossless formats).
        expected = restorer.restore([image])[0]
        assert np.array_equal(written, expected.image)
        assert np.array_equal(mask, expected.mask)


def _png_grey_alpha_16(image: np.ndarray) -> bytes:
    """A 16-bit grey+alpha PNG built by hand: read_image reads it, nothing here writes it."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    h, w, _ = image.shape
    rows = b"".join(b"\x00" + image[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _tiff_grey_alpha_8(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="LA").save(buf, format="TIFF")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "dtype", "encode"),
    [("la16.png", np.uint16, _png_grey_alpha_16), ("la8.tif", np.uint8, _tiff_grey_alpha_8)],
)
def test_clean_writes_back_every_readable_grey_alpha_input(
    tmp_path: Path, restorer: Restorer, name: str, dtype, encode
) -> None:
    image = make_image(24, 31, 2, dtype, "scan", 0)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / name).write_bytes(encode(image))
    assert np.array_equal(read_image(tmp_path / "in" / name), image)  # readable: a promise
    report = clean(CleanConfig(inputs=tmp_path / "in", out=tmp_path / "out"), restorer)
    assert report.ok, report.failed
    written = read_image(tmp_path / "out" / name)
    assert written.shape == image.shape and written.dtype == image.dtype
    assert np.array_equal(written[..., 1], image[..., 1])


# --------------------------------------------------------------------------- image I/O

# Layouts each format stores losslessly (PNG has its own property in test_io.py).
LOSSLESS = {
    ".tif": [(np.uint8, c) for c in (0, 3, 4)] + [(np.uint16, c) for c in (0, 3, 4)],
    ".tiff": [(np.uint16, 0), (np.uint8, 3)],
    ".TIF": [(np.uint16, 4), (np.uint8, 0)],
    ".bmp": [(np.uint8, c) for c in (0, 3, 4)],
    ".BMP": [(np.uint8, 3)],
    ".webp": [(np.uint8, c) for c in (0, 3, 4)],
    ".WebP": [(np.uint8, 4)],
}


@st.composite
def lossless_files(draw) -> tuple[str, np.ndarray]:
    suffix = draw(st.sampled_from(sorted(LOSSLESS)))
    return suffix, draw(images(max_side=48, layouts=LOSSLESS[suffix]))


@settings(max_examples=60, deadline=None)
@given(case=lossless_files(), transparent=st.booleans())
@example(case=(".tif", make_image(1, 1, 4, np.uint16, "noise", 0)), transparent=True)
@example(case=(".bmp", make_image(1, 37, 4, np.uint8, "noise", 1)), transparent=True)
@example(case=(".bmp", make_image(37, 1, 0, np.uint8, "noise", 2)), transparent=False)
@example(case=(".webp", make_image(1, 1, 0, np.uint8, "flat", 3)), transparent=False)
@example(case=(".webp", make_image(3, 5, 4, np.uint8, "noise", 4)), transparent=True)
@example(case=(".tif", make_image(65, 33, 3, np.uint16, "scan", 5)), transparent=False)
def test_read_write_read_is_exact_for_every_lossless_format(case, transparent: bool) -> None:
    suffix, image = case
    if transparent and image.ndim == 3 and image.shape[2] == 4:
        image = image.copy()
        image[: (image.shape[0] + 1) // 2, :, 3] = 0  # colour under alpha 0 must survive too
    # WebP has no grey layout: grey comes back as three equal channels, values intact.
    expected = to_rgb(image) if suffix.lower() == ".webp" and image.ndim == 2 else image
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"scan{suffix}"
        write_image(path, image)
        first = read_image(path)
        assert first.dtype == expected.dtype and first.shape == expected.shape
        assert np.array_equal(first, expected)
        write_image(path, first)  # a second generation through the same format
        assert np.array_equal(read_image(path), expected)
        assert [p.name for p in Path(tmp).iterdir()] == [path.name]  # no temporary left


# --------------------------------------------------------------------------- drawers

ANY_LAYOUT = [(d, c) for d in DTYPES for c in (0, 1, 2, 3, 4)]  # 1 = an HxWx1 array


@st.composite
def regions(draw, h: int, w: int) -> np.ndarray | None:
    kind = draw(st.sampled_from(["none", "empty", "full", "sparse", "box"]))
    if kind == "none":
        return None
    if kind in ("empty", "full"):
        return np.full((h, w), kind == "full")
    if kind == "sparse":
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        return rng.random((h, w)) < 0.05
    region = np.zeros((h, w), bool)
    y, x = draw(st.integers(0, h - 1)), draw(st.integers(0, w - 1))
    region[y : y + draw(st.integers(1, h)), x : x + draw(st.integers(1, w))] = True
    return region


@st.composite
def drawer_cases(draw):
    dtype, channels = draw(st.sampled_from(ANY_LAYOUT))
    h, w = draw(st.integers(1, 80)), draw(st.integers(1, 80))
    content = draw(st.sampled_from(["noise", "flat", "scan"]))
    image = make_image(
        h, w, 0 if channels == 1 else channels, dtype, content, draw(st.integers(0, 2**16))
    )
    if channels == 1:
        image = image[..., None]
    colors = draw(st.lists(st.sampled_from(sorted(COLORS)), min_size=1, max_size=4, unique=True))
    return image, draw(regions(h, w)), tuple(colors), draw(st.integers(0, 2**32 - 1))


@settings(max_examples=25, deadline=None)
@given(case=drawer_cases(), name=st.sampled_from(sorted(DRAWERS)))
@example(case=(np.zeros((1, 1), np.uint8), None, ("white",), 0), name="mixed")
@example(case=(np.zeros((2, 50, 3), np.uint16), None, ("cyan",), 1), name="text")
@example(
    case=(np.full((7, 7, 4), 9, np.uint8), np.ones((7, 7), bool), ("red",), 2), name="calipers"
)
@example(
    case=(np.zeros((50, 2, 1), np.uint8), np.zeros((50, 2), bool), ("grey",), 3), name="arrows"
)
def test_drawer_with_any_region_and_colours_is_deterministic_and_bounded(case, name: str) -> None:
    image, region, colors, seed = case

    def draw_once() -> tuple[np.ndarray, np.ndarray, dict]:
        out, record = image.copy(), {}
        mask = DRAWERS[name](
            out, np.random.default_rng(seed), region=region, colors=colors, record=record
        )
        return out, mask, record

    out, mask, record = draw_once()
    assert isinstance(mask, np.ndarray) and mask.dtype == bool and mask.shape == image.shape[:2]
    assert out.dtype == image.dtype and out.shape == image.shape
    assert not (differs(out, image) & ~mask).any()
    if image.ndim == 3 and image.shape[2] in (2, 4):
        assert np.array_equal(out[..., -1], image[..., -1])
    json.dumps(record)
    again, mask_again, record_again = draw_once()
    assert np.array_equal(again, out) and np.array_equal(mask_again, mask)
    assert record_again == record


@settings(max_examples=15, deadline=None)
@given(case=drawer_cases(), name=st.sampled_from(sorted(DRAWERS)), step=st.sampled_from([1, 2, 3]))
def test_drawer_paints_into_the_callers_array_even_when_it_is_a_view(case, name, step) -> None:
    """Flipped or strided views (a caller's crop or flip) get the same marks, in place."""
    image, region, colors, seed = case
    big = np.repeat(np.repeat(image, step, axis=0), step, axis=1)
    big = np.ascontiguousarray(big[::-1, ::-1])
    view = big[::-step, ::-step]  # negative, non-unit strides into ``big``
    assert view.shape == image.shape
    copy = np.ascontiguousarray(view)
    kwargs = {"region": region, "colors": colors}
    mask_view = DRAWERS[name](view, np.random.default_rng(seed), **kwargs)
    mask_copy = DRAWERS[name](copy, np.random.default_rng(seed), **kwargs)
    assert np.array_equal(mask_view, mask_copy)
    assert np.array_equal(big[::-step, ::-step], copy)  # the marks landed in ``big`` itself


@settings(max_examples=25, deadline=None)
@given(
    case=drawer_cases(),
    name=st.sampled_from(sorted(DRAWERS)),
    scanner_ui=st.sampled_from(["keep", "remove", "off"]),
)
@example(case=(np.zeros((1, 1, 2), np.uint8), None, ("yellow",), 0), name="mixed", scanner_ui="off")
@example(
    case=(np.full((7, 7), 200, np.uint16), None, ("white", "green"), 1),
    name="colorbar",
    scanner_ui="keep",
)
@example(
    case=(make_image(80, 80, 4, np.uint16, "scan", 3), None, ("cyan",), 5),
    name="mixed",
    scanner_ui="keep",
)
def test_annotate_mask_is_exactly_the_changed_pixels(case, name: str, scanner_ui: str) -> None:
    """The drawer's mask bounds the change; the pipeline records the exact change, with
    or without a scanner interface on the clean image."""
    image, _, colors, seed = case
    before = image.copy()
    clean_img, annotated, mask, params = annotate(
        image, name, np.random.default_rng(seed), colors=colors, scanner_ui=scanner_ui
    )
    assert np.array_equal(image, before)  # the caller's scan is not drawn on
    base = promote(image, colors)
    assert clean_img.shape == base.shape and clean_img.dtype == base.dtype
    if scanner_ui != "keep" or min(image.shape[:2]) < 40:
        assert np.array_equal(clean_img, base)
    assert annotated.shape == clean_img.shape and annotated.dtype == clean_img.dtype
    assert mask.dtype == bool and mask.shape == image.shape[:2]
    colour_clean, alpha_clean = split_alpha(clean_img)
    colour_annotated, alpha_annotated = split_alpha(annotated)
    assert np.array_equal(mask, differs(colour_annotated, colour_clean))
    if alpha_clean is not None:
        assert np.array_equal(alpha_annotated, alpha_clean)
        assert np.array_equal(alpha_clean, split_alpha(base)[1])
    assert params["scanner_ui"] == scanner_ui
    json.dumps(params)
