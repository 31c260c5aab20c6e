"""A corpus of hostile and broken files, built here, through clean, synth and eval.

Every bad file must get one line naming it and the reason; the rest of the batch
is processed; the exit code is 1; no output (or temporary file) is left for it.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from annot_denoise.cli import app
from annot_denoise.io import encode_image, read_image, write_image
from annot_denoise.phantom import make_phantom


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload))
    )


def png_with_header(width: int, height: int, idat: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def dicom_bytes(pixels: np.ndarray, photometric: str = "MONOCHROME2", **elements) -> bytes | None:
    try:
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    except ImportError:
        return None
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.6.1"
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.set_pixel_data(
        pixels, "MONOCHROME2" if pixels.ndim == 2 else "RGB", 8, generate_instance_uid=False
    )
    ds.PhotometricInterpretation = photometric
    for name, value in elements.items():  # header values that lie about the pixels
        setattr(ds, name, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def build_corpus(root: Path) -> tuple[dict[str, str], dict[str, tuple]]:
    """Write the corpus; return {bad name: reason regex} and {good name: shape}."""
    root.mkdir(parents=True, exist_ok=True)
    scan = make_phantom(64, 80, np.random.default_rng(0))
    png = encode_image(scan, ".png")
    jpg = encode_image(np.repeat(scan[..., None], 3, axis=2), ".jpg")
    webp = encode_image(np.repeat(scan[..., None], 3, axis=2), ".webp")
    bad: dict[str, str] = {}

    def put(name: str, data: bytes, reason: str) -> None:
        (root / name).write_bytes(data)
        bad[name] = reason

    put("zero.png", b"", "empty file")
    put("truncated.png", png[: len(png) // 2], "truncated")
    put("truncated.jpg", jpg[: len(jpg) // 2], "truncated")
    put("truncated.webp", webp[:60], "truncated or corrupt")
    put("text.png", b"hello, this is a text file\n" * 20, "not an image")
    put("page.jpg", b"<html><body>404 Not Found</body></html>", "not an image")
    put("signature_only.png", png[:8], "not an image|truncated")
    put("jpeg_header_only.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)), "truncated or corrupt")
    put("garbage.tif", b"II*\x00" + bytes(range(256)) * 2, "not an image|corrupt")
    put("bad_zlib.png", png_with_header(80, 64, b"this is not zlib data"), "truncated or corrupt")
    put("bomb.png", png_with_header(100_000, 100_000, zlib.compress(b"\0" * 64)), "too large")
    bmp = bytearray(encode_image(scan, ".bmp"))
    bmp[18:26] = struct.pack("<ii", 1 << 30, 1 << 30)
    put("bomb.bmp", bytes(bmp), "too large")
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), np.nan, np.float32)).save(buf, "TIFF")
    put("nan.tif", buf.getvalue(), "floating-point")
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8), 1 << 20, np.int32)).save(buf, "TIFF")
    put("int32.tif", buf.getvalue(), "outside 0..65535")
    pages = [Image.fromarray(np.roll(scan, 7 * k, axis=1)) for k in range(3)]
    for name, fmt, options in [
        ("stack.tif", "TIFF", {}),
        ("cine.png", "PNG", {}),  # animated PNG
        ("cine.webp", "WEBP", {"lossless": True}),
    ]:
        buf = io.BytesIO()
        pages[0].save(buf, fmt, save_all=True, append_images=pages[1:], **options)
        put(name, buf.getvalue(), "multi-frame .*3 frames.*rest would be lost")
    put(os.fsdecode(b"latin1_\xe9t\xe9.png"), b"junk", "not an image")  # not UTF-8
    put("ünï cödé 超声 scan.png", b"junk", "not an image")
    os.symlink(root / "gone.png", root / "dangling.png")
    bad["dangling.png"] = "broken symbolic link"
    os.symlink(root / "loop_b.png", root / "loop_a.png")
    os.symlink(root / "loop_a.png", root / "loop_b.png")
    bad["loop_a.png"] = bad["loop_b.png"] = "cannot read"
    os.mkfifo(root / "fifo.png")
    bad["fifo.png"] = "not a regular file"
    if os.geteuid() != 0:  # root reads anything
        put("unreadable.png", png, "permission denied")
        (root / "unreadable.png").chmod(0)
    dcm = dicom_bytes(scan)
    if dcm is not None:
        put("truncated.dcm", dcm[: len(dcm) - 2000], "truncated|corrupt|not a readable")
        put("palette.dcm", dicom_bytes(scan, "PALETTE COLOR"), "PALETTE COLOR")
        put("header_only.dcm", dcm[:300], "without pixel data|not a readable|truncated")
        long = dicom_bytes(scan, PixelData=bytes(2 * scan.size))
        put("pixels_longer_than_header.dcm", long, "holds 10240 values; its header describes 5120")
        rgb = np.repeat(scan[..., None], 3, axis=2)
        put("rgb_called_grey.dcm", dicom_bytes(rgb, "MONOCHROME2"), "contradicts itself")
        put("grey_called_rgb.dcm", dicom_bytes(scan, "RGB"), "contradicts itself")
        put(
            "frames_lie.dcm",
            dicom_bytes(scan, NumberOfFrames=7),
            "truncated or corrupt|multi-frame",
        )

    good: dict[str, tuple] = {}
    for name, image in {
        "good.png": scan,
        "one_pixel.png": scan[:1, :1],
        "strip_wide.png": np.tile(scan[:1], (1, 1250)),  # 1 x 100000
        "strip_tall.png": np.tile(scan[:, :1], (800, 1)),  # 51200 x 1
        "deep16.tif": scan.astype(np.uint16) * 257,
        "name with spaces ünï 超声.png": scan,
        "folder.png/inside.png": scan,  # a folder named like an image is searched
    }.items():
        write_image(root / name, image)
        good[name] = image.shape
    (root / "jpeg_named.png").write_bytes(jpg)  # content decides the format
    good["jpeg_named.png"] = (64, 80, 3)
    (root / os.fsdecode(b"latin1_ok_\xe9.png")).write_bytes(png)
    good[os.fsdecode(b"latin1_ok_\xe9.png")] = scan.shape
    return bad, good


def shown(name: str) -> str:
    """How a file name appears in the output (undecodable bytes are escaped)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def check_lines(output: str, root: Path, bad: dict[str, str]) -> None:
    lines = output.splitlines()
    for name, reason in bad.items():
        hits = [line for line in lines if shown(str(root / name)) + ":" in line]
        assert len(hits) == 1, f"{name}: expected one line, got {hits}"
        assert re.search(reason, hits[0]), f"{name}: {hits[0]!r} does not say {reason!r}"


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict[str, str], dict[str, tuple]]:
    root = tmp_path / "corpus"
    bad, good = build_corpus(root)
    assert len(bad) >= 20
    return root, bad, good


def test_corpus_through_clean(corpus, tmp_path: Path) -> None:
    root, bad, good = corpus
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["clean", str(root), "-o", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output
    check_lines(result.output, root, bad)
    assert f"failed {len(bad)}" in result.output
    for name, shape in good.items():
        assert read_image(out / name).shape == shape, name
    for name in bad:
        assert not (out / name).exists() and not (out / name).is_symlink(), name
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    # The failures are recorded for scripts, too.
    import json

    record = json.loads((out / "clean_run.json").read_text())
    assert len(record["failed"]) == len(bad)


def test_corpus_through_synth(corpus, tmp_path: Path) -> None:
    root, bad, good = corpus
    out = tmp_path / "synth"
    result = CliRunner().invoke(app, ["synth", str(root), str(out), "--no-progress"])
    assert result.exit_code == 1, result.output
    check_lines(result.output, root, bad)
    written = {
        p.relative_to(out / "annotated").as_posix()
        for p in (out / "annotated").rglob("*.png")
        if p.is_file()
    }
    assert len(written) == len(good)
    for name in bad:
        assert not (out / "annotated" / Path(name).with_suffix(".png")).exists(), name
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_corpus_through_eval(corpus, tmp_path: Path) -> None:
    root, bad, good = corpus
    data = tmp_path / "pairs"
    data.mkdir()
    (data / "annotated").symlink_to(root, target_is_directory=True)
    scan = make_phantom(64, 80, np.random.default_rng(0))
    for name in bad:
        if name.endswith(".dcm"):
            (data / "clean" / name).write_bytes(dicom_bytes(scan))
        else:
            write_image(data / "clean" / name, scan)
    for name in good:
        write_image(data / "clean" / name, read_image(root / name))
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", str(data), "-o", str(out), "--no-progress"])
    assert result.exit_code == 1, result.output
    # eval checks headers first: a valid header of another size is a partner mismatch.
    reasons = {name: f"{reason}|sizes differ" for name, reason in bad.items()}
    check_lines(result.output, data / "annotated", reasons)
    import json

    report = json.loads((out / "report.json").read_text())
    assert len(report["failed"]) == len(bad)
