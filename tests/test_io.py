"""Tests for image I/O: every supported format round-trips, every kind of bad file is refused.

Every test writes its own files under ``tmp_path``; nothing binary is checked in.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from annot_denoise import io as aio
from annot_denoise.io import (
    ImageReadError,
    decode_image,
    describe,
    encode_image,
    from_float,
    list_images,
    merge_alpha,
    read_image,
    split_alpha,
    to_float,
    to_grey,
    to_rgb,
    write_image,
)


def textured(height: int, width: int, channels: int = 1, dtype=np.uint8, seed: int = 0):
    """A noisy test image of the given layout and dtype (copied from conftest)."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, top + 1, size=shape, dtype=np.int64).astype(dtype)


def smooth_rgb(height: int = 64, width: int = 80) -> np.ndarray:
    """Gentle colour gradients: what JPEG is designed for, so its error stays small."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 40 + 150 * xx / width
    green = 200 - 120 * yy / height
    blue = 60 + 60 * (xx + yy) / (width + height)
    return np.stack([red, green, blue], axis=2).round().astype(np.uint8)


def pil_bytes(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def raw_png(width: int, height: int, depth: int, color_type: int, rows: list[bytes]) -> bytes:
    """A minimal PNG built by hand, for layouts that neither Pillow nor OpenCV write."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def with_png_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` with its IHDR claiming ``width`` x ``height`` and a valid CRC."""
    data = bytearray(png)
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def assert_read_error(path: Path, *fragments: str) -> ImageReadError:
    """read_image(path) raises one line that starts with the path and says why."""
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    message = str(info.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    assert info.value.path == path
    reason = info.value.reason.lower()
    assert reason.strip()
    assert any(fragment in reason for fragment in fragments), message
    return info.value


# --------------------------------------------------------------------------- round trips


EXACT_CASES = [
    ("png", 1, np.uint8),
    ("png", 2, np.uint8),
    ("png", 3, np.uint8),
    ("png", 4, np.uint8),
    ("png", 1, np.uint16),
    ("png", 3, np.uint16),
    ("png", 4, np.uint16),
    ("tif", 1, np.uint8),
    ("tif", 3, np.uint8),
    ("tif", 4, np.uint8),
    ("tiff", 1, np.uint16),
    ("bmp", 1, np.uint8),
    ("bmp", 3, np.uint8),
    ("bmp", 4, np.uint8),
    ("webp", 3, np.uint8),
]


@pytest.mark.parametrize(
    ("suffix", "channels", "dtype"),
    EXACT_CASES,
    ids=[f"{s}-{c}ch-{np.dtype(d).name}" for s, c, d in EXACT_CASES],
)
def test_lossless_round_trip(tmp_path: Path, suffix: str, channels: int, dtype) -> None:
    image = textured(23, 37, channels, dtype, seed=channels)
    path = tmp_path / f"scan.{suffix}"
    write_image(path, image)
    back = read_image(path)
    assert back.dtype == image.dtype
    assert back.shape == image.shape
    assert np.array_equal(back, image)
    # A second generation is byte-for-byte the same pixels as well.
    write_image(path, back)
    assert np.array_equal(read_image(path), image)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_color_tiff_keeps_16_bits(tmp_path: Path, channels: int) -> None:
    image = textured(23, 37, channels, np.uint16, seed=5)
    path = tmp_path / "scan.tif"
    write_image(path, image)
    # The file itself is fine: OpenCV reads all 16 bits back.
    on_disk = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert on_disk.dtype == np.uint16 and on_disk.shape == image.shape
    back = read_image(path)
    assert back.dtype == np.uint16
    assert np.array_equal(back, image)


def test_webp_rgba_round_trip_with_visible_alpha(tmp_path: Path) -> None:
    image = textured(23, 37, 4, seed=1)
    image[..., 3] = np.maximum(image[..., 3], 1)
    write_image(tmp_path / "scan.webp", image)
    assert np.array_equal(read_image(tmp_path / "scan.webp"), image)


def test_webp_keeps_color_under_transparent_pixels(tmp_path: Path) -> None:
    image = textured(23, 37, 4, seed=2)
    image[:5, :5, 3] = 0
    write_image(tmp_path / "scan.webp", image)
    assert np.array_equal(read_image(tmp_path / "scan.webp"), image)


def test_webp_grey_comes_back_as_three_equal_channels(tmp_path: Path) -> None:
    # WebP has no grey layout, so the channel count cannot survive; the values must.
    image = textured(23, 37, 1, seed=3)
    write_image(tmp_path / "scan.webp", image)
    back = read_image(tmp_path / "scan.webp")
    assert back.shape == (23, 37, 3) and back.dtype == np.uint8
    for channel in range(3):
        assert np.array_equal(back[..., channel], image)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".JPG"])
@pytest.mark.parametrize("grey", [False, True])
def test_jpeg_round_trip_is_close_and_high_quality(tmp_path: Path, suffix: str, grey: bool) -> None:
    image = smooth_rgb()
    if grey:
        image = to_grey(image)
    path = tmp_path / f"scan{suffix}"
    write_image(path, image)
    back = read_image(path)
    assert back.shape == image.shape and back.dtype == np.uint8
    assert np.abs(back.astype(np.int16) - image).mean() < 1.5
    # Quality 95 scales the standard luminance table (mean ~58) by 0.1; quality 75 gives ~29.
    with Image.open(path) as img:
        assert np.mean(img.quantization[0]) < 8


def test_hxwx1_is_written_and_read_as_hxw(tmp_path: Path) -> None:
    image = textured(9, 11, 1)
    write_image(tmp_path / "one.png", image[..., None])
    assert np.array_equal(read_image(tmp_path / "one.png"), image)


def test_uppercase_suffix_and_missing_folders(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "SCAN.PNG"
    image = textured(8, 8, 3)
    write_image(path, image)
    assert np.array_equal(read_image(path), image)


def test_content_decides_the_format_not_the_suffix(tmp_path: Path) -> None:
    image = textured(8, 9, 3)
    path = tmp_path / "really_a_png.jpg"
    path.write_bytes(encode_image(image, ".png"))
    assert np.array_equal(read_image(path), image)


# --------------------------------------------------------------------------- depth and scaling


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_depth_is_kept(tmp_path: Path, dtype) -> None:
    image = textured(10, 12, 1, dtype)
    write_image(tmp_path / "d.png", image)
    assert read_image(tmp_path / "d.png").dtype == dtype


def test_dim_16bit_image_is_not_stretched(tmp_path: Path) -> None:
    image = (textured(10, 12, 1, np.uint16) % 1001).astype(np.uint16)
    image[0, 0] = 1000
    write_image(tmp_path / "dim.png", image)
    back = read_image(tmp_path / "dim.png")
    assert back.dtype == np.uint16 and back.max() == 1000
    as_float = to_float(back)
    assert as_float.dtype == np.float32
    assert as_float.max() == pytest.approx(1000 / 65535)
    assert np.array_equal(from_float(as_float, np.uint16), image)


@pytest.mark.parametrize(("dtype", "top"), [(np.uint8, 255), (np.uint16, 65535)])
def test_to_float_and_back_is_exact_for_every_value(dtype, top: int) -> None:
    values = np.arange(top + 1, dtype=dtype)
    scaled = to_float(values)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    assert np.array_equal(from_float(scaled, dtype), values)


def test_from_float_clips_and_rounds() -> None:
    out = from_float(np.array([-0.5, 0.0, 0.5 / 255, 1.0, 7.0], np.float32), np.uint8)
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 1, 255, 255]


# --------------------------------------------------------------------------- modes other than L/RGB


def test_palette_png_comes_back_rgb(tmp_path: Path) -> None:
    palette = [10, 20, 30, 200, 100, 50, 0, 255, 0]
    img = Image.fromarray(np.array([[0, 1, 2], [2, 1, 0]], np.uint8), mode="P")
    img.putpalette(palette)
    path = tmp_path / "palette.png"
    path.write_bytes(pil_bytes(img, "PNG"))
    back = read_image(path)
    assert back.shape == (2, 3, 3) and back.dtype == np.uint8
    colors = np.array(palette, np.uint8).reshape(3, 3)
    assert np.array_equal(back, colors[[[0, 1, 2], [2, 1, 0]]])


def test_palette_png_with_transparency_comes_back_rgba(tmp_path: Path) -> None:
    img = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), mode="P")
    img.putpalette([0, 0, 0, 250, 240, 230])
    path = tmp_path / "palette_alpha.png"
    path.write_bytes(pil_bytes(img, "PNG", transparency=0))
    back = read_image(path)
    assert back.shape == (2, 2, 4) and back.dtype == np.uint8
    assert back[..., 3].tolist() == [[0, 255], [255, 0]]
    assert back[0, 1].tolist() == [250, 240, 230, 255]


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_bilevel_image_comes_back_0_or_255(tmp_path: Path, fmt: str) -> None:
    bits = np.array([[0, 1, 1], [1, 0, 0]], bool)
    path = tmp_path / f"bits.{fmt.lower()}"
    path.write_bytes(pil_bytes(Image.fromarray(bits), fmt))
    back = read_image(path)
    assert back.dtype == np.uint8
    assert np.array_equal(back, bits.astype(np.uint8) * 255)


def test_cmyk_jpeg_comes_back_rgb(tmp_path: Path) -> None:
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(pil_bytes(Image.new("CMYK", (16, 8), (0, 255, 255, 0)), "JPEG", quality=95))
    back = read_image(path)
    assert back.shape == (8, 16, 3) and back.dtype == np.uint8
    assert np.abs(back.astype(int) - [255, 0, 0]).max() < 8


def test_exif_rotated_jpeg_is_turned_upright(tmp_path: Path) -> None:
    stored = np.zeros((32, 48, 3), np.uint8)
    stored[:8, :8] = 255  # a marker in the stored top-left corner
    img = Image.fromarray(stored)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(pil_bytes(img, "JPEG", quality=95, exif=exif.tobytes()))
    back = read_image(path)
    assert back.shape == (48, 32, 3)
    assert back[:8, -8:].mean() > 200  # the stored top-left is now the top-right
    assert back[:8, :8].mean() < 50


def test_16bit_grey_tiff_from_pillow(tmp_path: Path) -> None:
    image = (textured(6, 7, 1, np.uint16) % 4096).astype(np.uint16)
    path = tmp_path / "pillow16.tif"
    path.write_bytes(pil_bytes(Image.fromarray(image), "TIFF"))
    back = read_image(path)
    assert back.dtype == np.uint16 and np.array_equal(back, image)


def test_16bit_grey_png_built_by_hand(tmp_path: Path) -> None:
    values = np.array([[1000, 70, 65535]], dtype=">u2")
    path = tmp_path / "g16.png"
    path.write_bytes(raw_png(3, 1, 16, 0, [values.tobytes()]))
    back = read_image(path)
    assert back.dtype == np.uint16 and back.tolist() == [[1000, 70, 65535]]


def test_16bit_grey_alpha_png_keeps_layout_and_depth(tmp_path: Path) -> None:
    pixels = np.array([[[1000, 65535], [300, 2]]], dtype=">u2")
    path = tmp_path / "la16.png"
    path.write_bytes(raw_png(2, 1, 16, 4, [pixels.tobytes()]))
    back = read_image(path)
    assert back.dtype == np.uint16
    assert back.tolist() == [[[1000, 65535], [300, 2]]]


def test_int32_tiff_within_16_bits_is_read_as_uint16(tmp_path: Path) -> None:
    path = tmp_path / "int32.tif"
    path.write_bytes(pil_bytes(Image.fromarray(np.full((3, 4), 1000, np.int32)), "TIFF"))
    back = read_image(path)
    assert back.dtype == np.uint16 and np.all(back == 1000)


# --------------------------------------------------------------------------- bad files


@pytest.fixture
def real_png() -> bytes:
    return encode_image(textured(48, 64, 3, seed=11), ".png")


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert_read_error(path, "empty", "0 bytes")


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("half.png", lambda: encode_image(textured(48, 64, 3, seed=11), ".png")),
        ("half16.png", lambda: encode_image(textured(48, 64, 3, np.uint16, seed=11), ".png")),
        ("half.jpg", lambda: encode_image(textured(64, 64, 3, seed=12), ".jpg")),
        ("half.bmp", lambda: encode_image(textured(48, 64, 3, seed=13), ".bmp")),
    ],
)
def test_truncated_file(tmp_path: Path, name: str, make) -> None:
    data = make()
    path = tmp_path / name
    path.write_bytes(data[: len(data) // 2])
    assert_read_error(path, "truncat")


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n")
    assert_read_error(path, "not an image")


def test_folder_named_like_an_image(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.mkdir()
    assert_read_error(path, "folder")


def test_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "link.png"
    path.symlink_to(tmp_path / "gone.png")
    assert_read_error(path, "broken symbolic link")


def test_missing_file(tmp_path: Path) -> None:
    assert_read_error(tmp_path / "nothing.png", "no such file")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file"
)
def test_unreadable_file(tmp_path: Path, real_png: bytes) -> None:
    path = tmp_path / "locked.png"
    path.write_bytes(real_png)
    path.chmod(0)
    try:
        assert_read_error(path, "permission denied")
    finally:
        path.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_permission_error_is_reported(
    tmp_path: Path, real_png: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same path as above, reachable when the suite runs as root.
    path = tmp_path / "locked.png"
    path.write_bytes(real_png)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert_read_error(path, "permission denied")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16], ids=["pillow-path", "opencv-path"])
def test_huge_header_is_refused_without_decoding(
    tmp_path: Path, dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8-bit PNG goes through Pillow, 16-bit colour through OpenCV: both must stop at the header.
    tiny = encode_image(np.zeros((1, 1, 3), dtype), ".png")
    path = tmp_path / "bomb.png"
    path.write_bytes(with_png_size(tiny, 100_000, 100_000))

    def never(*args, **kwargs):
        raise AssertionError("pixel data was decoded for an oversized header")

    monkeypatch.setattr(ImageFile.ImageFile, "load", never)
    monkeypatch.setattr(cv2, "imdecode", never)
    error = assert_read_error(path, "too large")
    assert "100000x100000" in str(error)


def test_size_limit_admits_a_12000_square_scan() -> None:
    aio._check_size(12_000, 12_000, "ok.png")
    side = int(aio.MAX_PIXELS**0.5)
    with pytest.raises(ImageReadError, match="too large"):
        aio._check_size(side + 1, side + 1, "big.png")


def test_float_tiff_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "float.tif"
    path.write_bytes(pil_bytes(Image.fromarray(np.full((4, 5), 0.5, np.float32)), "TIFF"))
    error = assert_read_error(path, "floating-point")
    assert "16-bit" in error.reason


def test_int32_tiff_out_of_range_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "int32.tif"
    path.write_bytes(pil_bytes(Image.fromarray(np.full((3, 4), 70_000, np.int32)), "TIFF"))
    assert_read_error(path, "outside 0..65535")


def test_decode_image_names_its_source() -> None:
    with pytest.raises(ImageReadError, match=r"^upload\.png: empty"):
        decode_image(b"", "upload.png")


# --------------------------------------------------------------------------- list_images


def test_list_images(tmp_path: Path) -> None:
    wanted = [
        "a.png",
        "b.Jpg",
        "c.JPEG",
        "d.tif",
        "e.TIFF",
        "f.bmp",
        "g.webp",
        "H.PNG",
        "sub/x.png",
        "sub/deeper/y.jpg",
        "sub2/z.png",
        "scan.dcm",  # DICOM by suffix; extension-less DICOM is in test_dicom.py
    ]
    unwanted = [
        "notes.txt",
        "png",
        "archive.png.zip",
        ".hidden.png",
        "._a.png",
        ".cache/inside.png",
        "sub/.git/objects.png",
    ]
    for name in wanted + unwanted:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = list_images(tmp_path)
    assert found == sorted(tmp_path / name for name in wanted)
    assert found == sorted(found)


def test_list_images_single_file_is_returned_as_given(tmp_path: Path) -> None:
    for name in ("scan.png", "notes.txt", ".hidden.png"):
        path = tmp_path / name
        path.write_bytes(b"")
        assert list_images(path) == [path]


def test_list_images_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        list_images(tmp_path / "nope")


def test_list_images_empty_folder(tmp_path: Path) -> None:
    assert list_images(tmp_path) == []


# --------------------------------------------------------------------------- write_image


def test_failed_replace_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="No space left"):
        write_image(tmp_path / "out.png", textured(8, 8))
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "out.png"
    old = textured(8, 8, seed=1)
    write_image(path, old)

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_image(path, textured(8, 8, seed=2))
    assert list(tmp_path.iterdir()) == [path]
    assert np.array_equal(read_image(path), old)


def test_failed_encode_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cv2, "imencode", lambda *args, **kwargs: (False, None))
    with pytest.raises(ValueError, match="could not encode"):
        write_image(tmp_path / "out.png", textured(8, 8))
    assert list(tmp_path.iterdir()) == []


def test_write_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "out.png"
    write_image(path, textured(8, 8, seed=1))
    new = textured(12, 5, 3, seed=2)
    write_image(path, new)
    assert np.array_equal(read_image(path), new)
    assert list(tmp_path.iterdir()) == [path]


def test_written_files_honour_the_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        write_image(tmp_path / "out.png", textured(4, 4))
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / "out.png").stat().st_mode) == 0o644


def test_atomic_write_text(tmp_path: Path) -> None:
    aio.atomic_write_text(tmp_path / "deep" / "notes.txt", "café\n")
    assert (tmp_path / "deep" / "notes.txt").read_text(encoding="utf-8") == "café\n"
    assert [p.name for p in (tmp_path / "deep").iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".bmp", ".webp"])
def test_16bit_to_an_8bit_format_is_refused(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(ValueError, match=r"16-bit.*\.png or \.tif"):
        write_image(tmp_path / f"out{suffix}", textured(8, 8, 1, np.uint16))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("channels", [2, 4])
def test_alpha_to_jpeg_is_refused(tmp_path: Path, channels: int) -> None:
    with pytest.raises(ValueError, match=r"alpha|grey\+alpha"):
        write_image(tmp_path / "out.jpg", textured(8, 8, channels))
    assert list(tmp_path.iterdir()) == []


def test_grey_alpha_round_trips_where_the_format_holds_it(tmp_path: Path) -> None:
    for name, dtype in (("la16.png", np.uint16), ("la8.png", np.uint8), ("la8.tif", np.uint8)):
        image = textured(9, 7, 2, dtype)
        write_image(tmp_path / name, image)
        back = read_image(tmp_path / name)
        assert back.dtype == dtype and np.array_equal(back, image), name
    with pytest.raises(ValueError, match="grey\\+alpha"):
        write_image(tmp_path / "la16.tif", textured(8, 8, 2, np.uint16))


@pytest.mark.parametrize(
    ("image", "suffix", "match"),
    [
        (np.zeros((4, 4), np.float32), ".png", "float32"),
        (np.zeros((4, 4), np.int16), ".png", "int16"),
        (np.zeros((4, 4), np.uint8), ".gif", "'.gif'"),
    ],
)
def test_unwritable_dtype_or_suffix(tmp_path: Path, image, suffix: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        write_image(tmp_path / f"out{suffix}", image)


# --------------------------------------------------------------------------- channel helpers


def test_split_and_merge_alpha() -> None:
    rgba = textured(5, 6, 4)
    color, alpha = split_alpha(rgba)
    assert color.shape == (5, 6, 3) and np.array_equal(alpha, rgba[..., 3])
    assert np.array_equal(merge_alpha(color, alpha), rgba)

    grey_alpha = textured(5, 6, 2, np.uint16)
    grey, alpha = split_alpha(grey_alpha)
    assert grey.shape == (5, 6) and np.array_equal(grey, grey_alpha[..., 0])
    assert np.array_equal(merge_alpha(grey, alpha), grey_alpha)

    for plain in (textured(5, 6), textured(5, 6, 3)):
        color, alpha = split_alpha(plain)
        assert color is plain and alpha is None
        assert merge_alpha(color, None) is color


def test_to_rgb() -> None:
    grey = textured(5, 6)
    rgb = to_rgb(grey)
    assert rgb.shape == (5, 6, 3)
    assert all(np.array_equal(rgb[..., c], grey) for c in range(3))
    assert np.array_equal(to_rgb(textured(5, 6, 4)), textured(5, 6, 4)[..., :3])
    assert to_rgb(textured(5, 6, 2)).shape == (5, 6, 3)
    assert to_rgb(textured(5, 6, 3, np.uint16)).dtype == np.uint16


@pytest.mark.parametrize(("dtype", "top"), [(np.uint8, 255), (np.uint16, 65535)])
def test_to_grey(dtype, top: int) -> None:
    values = np.arange(top + 1, dtype=dtype)[None, :]
    assert np.array_equal(to_grey(values), values)
    equal_channels = np.repeat(values[..., None], 3, axis=2)
    grey = to_grey(equal_channels)
    assert grey.dtype == dtype and np.array_equal(grey, values)
    red = np.zeros((1, 1, 4), dtype)
    red[..., 0] = top
    red[..., 3] = top
    assert to_grey(red)[0, 0] == round(0.299 * top)
    assert np.array_equal(to_grey(textured(3, 4, 2, dtype)), textured(3, 4, 2, dtype)[..., 0])


@pytest.mark.parametrize(
    ("image", "text"),
    [
        (np.zeros((336, 544, 3), np.uint8), "544x336 RGB 8-bit"),
        (np.zeros((10, 20), np.uint16), "20x10 grey 16-bit"),
        (np.zeros((10, 20, 2), np.uint8), "20x10 grey+alpha 8-bit"),
        (np.zeros((1, 7, 4), np.uint16), "7x1 RGBA 16-bit"),
    ],
)
def test_describe(image: np.ndarray, text: str) -> None:
    assert describe(image) == text


# --------------------------------------------------------------------------- property


@st.composite
def layouts(draw) -> tuple[int, int, int, type]:
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    channels = draw(st.sampled_from([1, 2, 3, 4] if dtype == np.uint8 else [1, 3, 4]))
    return draw(st.integers(1, 40)), draw(st.integers(1, 40)), channels, dtype


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(layout=layouts(), seed=st.integers(0, 2**16))
@example(layout=(1, 40, 3, np.uint16), seed=0)
@example(layout=(40, 1, 2, np.uint8), seed=0)
@example(layout=(1, 1, 4, np.uint16), seed=0)
def test_png_round_trip_property(tmp_path: Path, layout, seed: int) -> None:
    height, width, channels, dtype = layout
    image = textured(height, width, channels, dtype, seed)
    path = tmp_path / "prop.png"
    write_image(path, image)
    back = read_image(path)
    assert back.dtype == image.dtype and back.shape == image.shape
    assert np.array_equal(back, image)
