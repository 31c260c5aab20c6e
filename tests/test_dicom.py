"""DICOM in and out: pixel mappings, element-by-element preservation, clean of cine loops."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pydicom = pytest.importorskip("pydicom")
from PIL import Image  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixels import pixel_array  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import (  # noqa: E402
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from typer.testing import CliRunner  # noqa: E402

from annot_denoise import dicom  # noqa: E402
from annot_denoise.clean import clean, mask_path  # noqa: E402
from annot_denoise.cli import app  # noqa: E402
from annot_denoise.config import CleanConfig  # noqa: E402
from annot_denoise.inference import Restorer  # noqa: E402
from annot_denoise.io import ImageReadError, list_images, read_image, write_image  # noqa: E402
from annot_denoise.pretrained import resolve_model  # noqa: E402
from annot_denoise.synth.pipeline import synth  # noqa: E402
from annot_denoise.training.checkpoint import load_model  # noqa: E402

US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
# What cleaning may change; every other element must come back exactly as it was.
CHANGED = {"SOPInstanceUID", "ImageType", "DerivationDescription", "PixelData"}


def make_dataset(
    pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int | None = None
) -> Dataset:
    """A plausible ultrasound dataset with patient, study, private and sequence elements."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    multi = pixels.ndim == (4 if photometric == "RGB" else 3)
    ds.SOPClassUID = US_MULTIFRAME if multi else US_IMAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "12345"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.Manufacturer = "Acme Ultrasound"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL"]
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "00"
    region = Dataset()
    region.RegionSpatialFormat = 1
    region.PhysicalDeltaX = 0.01
    ds.SequenceOfUltrasoundRegions = Sequence([region])
    ds.add_new(0x00091001, "LO", "vendor private value")
    ds.private_block(0x0011, "ACME 1.0", create=True).add_new(0x01, "SH", "probe L12")
    bits = bits or 8 * pixels.dtype.itemsize
    ds.set_pixel_data(pixels, photometric, bits, generate_instance_uid=False)
    if multi:
        ds.FrameTime = 33.3
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def noise(shape, dtype=np.uint8, low=0, high=256, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, shape).astype(dtype)


LAYOUTS = [
    ("mono2-8", noise((24, 32)), "MONOCHROME2", 8),
    ("mono2-12of16", noise((24, 32), np.uint16, 0, 4096), "MONOCHROME2", 12),
    ("mono2-16", noise((24, 32), np.uint16, 0, 65536), "MONOCHROME2", 16),
    ("mono1-16", noise((24, 32), np.uint16, 0, 65536), "MONOCHROME1", 16),
    ("signed-12", noise((24, 32), np.int16, -2048, 2048), "MONOCHROME2", 12),
    ("rgb-8", noise((24, 32, 3)), "RGB", 8),
    ("cine-grey", noise((5, 24, 32)), "MONOCHROME2", 8),
    ("cine-rgb", noise((3, 24, 32, 3)), "RGB", 8),
]


@pytest.mark.parametrize(("name", "pixels", "photometric", "bits"), LAYOUTS)
def test_unchanged_frames_write_back_the_same_stored_values(name, pixels, photometric, bits):
    source = make_dataset(pixels, photometric, bits)
    scan = dicom.decode(to_bytes(source), f"{name}.dcm")
    assert scan.frames.dtype in (np.uint8, np.uint16)
    assert scan.frames.shape[0] == (pixels.shape[0] if "cine" in name else 1)
    back = pydicom.dcmread(io.BytesIO(dicom.encode(scan, scan.frames.copy(), description="x")))
    assert np.array_equal(back.pixel_array, pixels)
    assert back.PhotometricInterpretation == photometric
    assert back.BitsStored == bits


def test_low_bit_depth_fills_the_dtype_range() -> None:
    # 12 bits in 16: white must look white to a network that divides by 65535.
    pixels = np.array([[0, 4095]], np.uint16)
    scan = dicom.decode(to_bytes(make_dataset(pixels, bits=12)))
    assert scan.frames[0].tolist() == [[0, 65520]]


def test_monochrome1_is_shown_the_right_way_round() -> None:
    pixels = np.array([[0, 255]], np.uint8)  # 0 is white in MONOCHROME1
    scan = dicom.decode(to_bytes(make_dataset(pixels, "MONOCHROME1")))
    assert scan.frames[0].tolist() == [[255, 0]]


def test_every_other_element_is_preserved_element_by_element() -> None:
    source = make_dataset(noise((24, 32)))
    scan = dicom.decode(to_bytes(source))
    edited = scan.frames.copy()
    edited[0, 5:9, 5:9] = 0
    out = pydicom.dcmread(
        io.BytesIO(dicom.encode(scan, edited, description="annotations removed by test"))
    )
    for elem in source:
        if elem.keyword in CHANGED:
            continue
        assert elem.tag in out, elem
        assert out[elem.tag].value == elem.value, elem
        assert out[elem.tag].VR == elem.VR, elem
    assert {e.tag for e in out} - {e.tag for e in source} == {
        pydicom.tag.Tag("DerivationDescription")
    }
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert list(out.ImageType) == ["DERIVED", "PRIMARY", "ABDOMINAL"]
    assert out.DerivationDescription == "annotations removed by test"
    assert out.BurnedInAnnotation == "YES" and out.LossyImageCompression == "00"
    assert np.array_equal(out.pixel_array, edited[0])


def test_burned_in_annotation_changes_only_on_request() -> None:
    scan = dicom.decode(to_bytes(make_dataset(noise((8, 8)))))
    out = dicom.encode(scan, scan.frames, description="x", clear_burned_in=True)
    assert pydicom.dcmread(io.BytesIO(out)).BurnedInAnnotation == "NO"


def test_existing_derivation_description_is_extended() -> None:
    ds = make_dataset(noise((8, 8)))
    ds.DerivationDescription = "resampled"
    scan = dicom.decode(to_bytes(ds))
    out = pydicom.dcmread(io.BytesIO(dicom.encode(scan, scan.frames, description="cleaned")))
    assert out.DerivationDescription == "resampled; cleaned"


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless])
@pytest.mark.parametrize("bits", [8, 16])
def test_compressed_input_is_written_uncompressed(syntax, bits: int) -> None:
    pixels = noise((64, 80), np.uint8 if bits == 8 else np.uint16, 0, 1 << bits)
    ds = make_dataset(pixels)
    ds.compress(syntax)  # JPEG-LS: encoded by pyjpegls, a test-only dependency
    data = to_bytes(ds)
    if syntax == JPEGLSLossless:  # what users have: the [dicom] extra's pylibjpeg decodes it
        assert np.array_equal(pixel_array(io.BytesIO(data), decoding_plugin="pylibjpeg"), pixels)
    scan = dicom.decode(data)
    assert np.array_equal(scan.frames[0], pixels)
    out = pydicom.dcmread(io.BytesIO(dicom.encode(scan, scan.frames, description="x")))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(out.pixel_array, pixels)


def test_bare_dataset_without_file_meta_is_read_and_written_as_part_10() -> None:
    # Old archives: no preamble, no file meta, implicit VR little endian.
    pixels = noise((12, 16))
    ds = make_dataset(pixels)
    del ds.file_meta
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    scan = dicom.decode(buf.getvalue(), "old.dcm")
    assert np.array_equal(scan.frames[0], pixels)
    out = dicom.encode(scan, scan.frames, description="x")
    assert out[128:132] == b"DICM"
    back = pydicom.dcmread(io.BytesIO(out))
    assert back.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
    assert back.PatientName == "Doe^Jane" and np.array_equal(back.pixel_array, pixels)


def test_deflated_input_is_read() -> None:
    pixels = noise((24, 32))
    ds = make_dataset(pixels)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assert np.array_equal(dicom.decode(to_bytes(ds)).frames[0], pixels)


def jpeg_ybr_dataset(rgb: np.ndarray) -> Dataset:
    """A JPEG Baseline (YBR_FULL_422) ultrasound frame, as many scanners store them."""
    ds = make_dataset(rgb, "RGB")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


def test_jpeg_ybr_input_comes_back_rgb_uncompressed_and_still_marked_lossy() -> None:
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 40, 40)
    rgb[:, 24:] = (30, 160, 220)
    scan = dicom.decode(to_bytes(jpeg_ybr_dataset(rgb)))
    assert scan.frames.shape == (1, 32, 48, 3)
    assert np.abs(scan.frames[0].astype(int) - rgb).mean() < 4  # YBR converted to RGB
    out = pydicom.dcmread(io.BytesIO(dicom.encode(scan, scan.frames, description="x")))
    assert out.PhotometricInterpretation == "RGB"
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.LossyImageCompression == "01"
    assert np.array_equal(out.pixel_array, scan.frames[0])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\0" * 128 + b"DICM" + b"\x02\x00\x10", "not a readable DICOM|without pixel data"),
        (b"\0" * 128 + b"DICM", "not a readable DICOM|without pixel data"),
        (b"\0" * 128 + b"DICM" + b"\xff" * 40, "not a readable DICOM|without pixel data"),
    ],
)
def test_broken_dicom_headers_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(ImageReadError, match=rf"^bad\.dcm: .*({reason})"):
        dicom.decode(data, "bad.dcm")


def test_truncated_pixel_data_is_named(tmp_path: Path) -> None:
    data = to_bytes(make_dataset(noise((64, 64))))
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ImageReadError, match=r"cut\.dcm: .*(truncated|corrupt|not a readable)"):
        read_image(path)


def test_dicom_without_pixels_is_refused(tmp_path: Path) -> None:
    ds = make_dataset(noise((8, 8)))
    del ds.PixelData
    with pytest.raises(ImageReadError, match="without pixel data"):
        dicom.decode(to_bytes(ds), "report.dcm")


def test_palette_colour_is_refused_by_name() -> None:
    ds = make_dataset(noise((8, 8)))
    ds.PhotometricInterpretation = "PALETTE COLOR"
    with pytest.raises(ImageReadError, match="PALETTE COLOR"):
        dicom.decode(to_bytes(ds), "palette.dcm")


def test_missing_extra_gives_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "scan.dcm"
    path.write_bytes(to_bytes(make_dataset(noise((8, 8)))))
    monkeypatch.setitem(sys.modules, "pydicom", None)  # import pydicom now raises ImportError
    with pytest.raises(ImageReadError, match=r"scan\.dcm: .*pip install 'annot-denoise\[dicom\]'"):
        read_image(path)


def test_listing_finds_dcm_and_preamble_files_but_not_dicomdir(tmp_path: Path) -> None:
    data = to_bytes(make_dataset(noise((8, 8))))
    for name in ("a.dcm", "b.DICOM", "IM_0001", "1.2.840.113619.2.1", "DICOMDIR"):
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes").write_bytes(b"just text, no preamble" * 10)
    found = [p.name for p in list_images(tmp_path)]
    assert found == ["1.2.840.113619.2.1", "IM_0001", "a.dcm", "b.DICOM"]


def test_read_image_gives_a_single_frame_and_refuses_cine_loops(tmp_path: Path) -> None:
    one = tmp_path / "one.dcm"
    one.write_bytes(to_bytes(make_dataset(noise((8, 9)))))
    assert read_image(one).shape == (8, 9)
    cine = tmp_path / "cine.dcm"
    cine.write_bytes(to_bytes(make_dataset(noise((4, 8, 9)))))
    with pytest.raises(ImageReadError, match=r"cine\.dcm: multi-frame DICOM \(4 frames\)"):
        read_image(cine)


def test_synth_takes_dicom_scans_and_writes_png(tmp_path: Path) -> None:
    from annot_denoise.phantom import make_phantom

    src = tmp_path / "scans"
    src.mkdir()
    scan = make_phantom(96, 128, np.random.default_rng(0))
    (src / "scan.dcm").write_bytes(to_bytes(make_dataset(scan)))
    # No scanner interface drawn: the clean copy is then the DICOM's pixels, exactly.
    report = synth(src, tmp_path / "out", seed=0, scanner_ui="off")
    assert report.ok
    clean_copy = read_image(tmp_path / "out" / "clean" / "scan.png")
    if clean_copy.ndim == 3:  # promoted to RGB for coloured marks
        clean_copy = clean_copy[..., 0]
    assert np.array_equal(clean_copy, scan)


def test_synth_makes_a_pair_of_every_frame_of_a_cine_loop(tmp_path: Path) -> None:
    from annot_denoise.phantom import make_phantom

    src = tmp_path / "scans"
    src.mkdir()
    loop = np.stack([make_phantom(64, 80, np.random.default_rng(k)) for k in range(3)])
    (src / "loop.dcm").write_bytes(to_bytes(make_dataset(loop)))
    (src / "one.dcm").write_bytes(to_bytes(make_dataset(loop[0])))
    report = synth(src, tmp_path / "out", seed=0, workers=2, colors=["white"], scanner_ui="off")
    assert report.ok and report.written == 4, report.failed
    for k in range(3):
        assert np.array_equal(
            read_image(tmp_path / "out" / "clean" / f"loop.frame{k:04d}.png"), loop[k]
        )
    assert np.array_equal(read_image(tmp_path / "out" / "clean" / "one.png"), loop[0])
    rows = [json.loads(line) for line in (tmp_path / "out" / "manifest.jsonl").open()]
    assert [r.get("frame") for r in rows] == [0, 1, 2, None]
    assert all(r["source"] == "loop.dcm" for r in rows[:3])
    # Each frame gets its own marks, and the same seed the same bytes.
    masks = [read_image(tmp_path / "out" / "masks" / r["output"]) for r in rows[:3]]
    assert not np.array_equal(masks[0], masks[1])
    again = synth(src, tmp_path / "again", seed=0, colors=["white"], scanner_ui="off")
    assert again.ok
    for r in rows:
        for sub in ("annotated", "masks"):
            one, two = (tmp_path / d / sub / r["output"] for d in ("out", "again"))
            assert one.read_bytes() == two.read_bytes()


# --------------------------------------------------------------------------- clean


@pytest.fixture(scope="module")
def default_restorer() -> Restorer:
    model, ckpt = load_model(resolve_model(None))
    return Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))


def annotated_scan(seed: int, channels: int = 1) -> np.ndarray:
    """A phantom with two white "+" calipers joined by a dotted line, drawn here (not
    by the drawers, whose look may change) where the seed puts them."""
    import cv2

    from annot_denoise.phantom import make_phantom

    rng = np.random.default_rng(seed)
    image = make_phantom(96, 128, rng)
    y, x0 = int(rng.integers(30, 66)), int(rng.integers(20, 40))
    x1 = x0 + int(rng.integers(50, 70))
    for x in (x0, x1):
        cv2.line(image, (x - 4, y), (x + 4, y), 255, 1)
        cv2.line(image, (x, y - 4), (x, y + 4), 255, 1)
    image[y, x0 + 6 : x1 - 5 : 3] = 255
    if channels == 3:
        image = np.repeat(image[..., None], 3, axis=2)
    return image


def test_clean_writes_dicom_back_frame_by_frame(tmp_path: Path) -> None:
    """What clean writes for DICOM, frame by frame; the stand-in network finds the
    white marks whatever the shipped weights do (test_pretrained judges those)."""
    from standins import BrightMarksInTwoStages

    restorer = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))
    src = tmp_path / "scans"
    src.mkdir()
    cine = np.stack([annotated_scan(k) for k in range(3)])
    single = annotated_scan(7, channels=3)
    (src / "cine.dcm").write_bytes(to_bytes(make_dataset(cine)))
    (src / "IM_0002").write_bytes(to_bytes(make_dataset(single, "RGB")))
    write_image(src / "plain.png", annotated_scan(9))
    before = {p: p.read_bytes() for p in src.iterdir()}
    out = tmp_path / "out"
    # What a run killed while writing frame 1's mask leaves behind: swept on the rerun,
    # while a temporary that is not ours stays.
    out.mkdir()
    stale = out / ".cine.dcm.frame0001.mask.png.0123456789abcdef.tmp"
    foreign = out / ".other.dcm.frame0001.mask.png.0123456789abcdef.tmp"
    stale.write_bytes(b"\x89PNG")
    foreign.write_bytes(b"\x89PNG")
    report = clean(
        CleanConfig(inputs=src, out=out, save_mask=True),
        restorer,
        meta={"model": "default"},
    )
    assert report.ok and report.processed == 3
    assert not stale.exists() and foreign.exists()
    assert {p: p.read_bytes() for p in src.iterdir()} == before  # inputs untouched

    cleaned = pydicom.dcmread(out / "cine.dcm")
    assert cleaned.NumberOfFrames == 3 and cleaned.PatientName == "Doe^Jane"
    assert "annot-denoise" in cleaned.DerivationDescription
    assert "default" in cleaned.DerivationDescription
    frames = cleaned.pixel_array
    for k in range(3):
        mask = read_image(mask_path(out / "cine.dcm", k)) > 0
        assert mask.any(), f"frame {k}: no marks found"
        assert np.array_equal(frames[k][~mask], cine[k][~mask])  # untouched outside
        assert not np.array_equal(frames[k], cine[k])
    rgb = pydicom.dcmread(out / "IM_0002")
    assert rgb.pixel_array.shape == single.shape
    assert mask_path(out / "IM_0002").is_file()
    assert read_image(out / "plain.png").shape == (96, 128)


def test_clean_reads_per_frame_masks_of_a_cine_loop_back(tmp_path: Path) -> None:
    model, ckpt = load_model(resolve_model(None))
    exact = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"), dilate=0)
    src, given = tmp_path / "scans", tmp_path / "masks"
    src.mkdir()
    cine = np.stack([annotated_scan(k) for k in range(3)])
    (src / "cine.dcm").write_bytes(to_bytes(make_dataset(cine)))
    holes = []
    for k in range(3):  # a different box on every frame, as --save-mask would write them
        hole = np.zeros((96, 128), bool)
        hole[10 + 20 * k : 20 + 20 * k, 30:60] = True
        holes.append(hole)
        write_image(mask_path(given / "cine.dcm", k), hole.astype(np.uint8) * 255)
    report = clean(
        CleanConfig(inputs=src, out=tmp_path / "out", masks=given, save_mask=True), exact
    )
    assert report.ok and report.processed == 1, report.failed
    frames = pydicom.dcmread(tmp_path / "out" / "cine.dcm").pixel_array
    for k in range(3):
        written = read_image(mask_path(tmp_path / "out" / "cine.dcm", k)) > 0
        assert np.array_equal(written, holes[k])  # its own mask, not another frame's
        assert np.array_equal(frames[k][~holes[k]], cine[k][~holes[k]])

    # Without every frame's mask and without the loop's one mask: an error naming
    # the frames that lack one.
    mask_path(given / "cine.dcm", 2).unlink()
    report = clean(CleanConfig(inputs=src, out=tmp_path / "none", masks=given), exact)
    assert not report.ok and "frame(s) 2" in report.failed[0]
    # With the loop's one mask, it serves all frames.
    write_image(mask_path(given / "cine.dcm"), holes[0].astype(np.uint8) * 255)
    report = clean(
        CleanConfig(inputs=src, out=tmp_path / "one", masks=given, save_mask=True), exact
    )
    assert report.ok, report.failed
    for k in range(3):
        assert np.array_equal(read_image(mask_path(tmp_path / "one" / "cine.dcm", k)) > 0, holes[0])


def test_a_forged_frame_count_is_one_error_line(tmp_path: Path) -> None:
    src = tmp_path / "scans"
    src.mkdir()
    ds = make_dataset(noise((2, 24, 32)))
    ds.NumberOfFrames = 10**9
    (src / "forged.dcm").write_bytes(to_bytes(ds))
    write_image(src / "good.png", noise((24, 32)))
    report = synth(src, tmp_path / "out")
    assert report.written == 1 and len(report.failed) == 1
    assert "forged.dcm" in report.failed[0] and "too large" in report.failed[0]


def test_clean_cli_clear_burned_in_flag(tmp_path: Path) -> None:
    src = tmp_path / "scans"
    src.mkdir()
    (src / "a.dcm").write_bytes(to_bytes(make_dataset(annotated_scan(1))))
    runner = CliRunner()
    kept = runner.invoke(app, ["clean", str(src), "-o", str(tmp_path / "o1"), "--no-progress"])
    assert kept.exit_code == 0, kept.output
    assert pydicom.dcmread(tmp_path / "o1" / "a.dcm").BurnedInAnnotation == "YES"
    args = ["clean", str(src), "-o", str(tmp_path / "o2"), "--no-progress", "--clear-burned-in"]
    cleared = runner.invoke(app, args)
    assert cleared.exit_code == 0, cleared.output
    assert pydicom.dcmread(tmp_path / "o2" / "a.dcm").BurnedInAnnotation == "NO"


def test_clean_without_the_extra_names_it_and_carries_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "scans"
    src.mkdir()
    (src / "a.dcm").write_bytes(to_bytes(make_dataset(annotated_scan(1))))
    write_image(src / "b.png", annotated_scan(2))
    monkeypatch.setitem(sys.modules, "pydicom", None)
    result = CliRunner().invoke(
        app, ["clean", str(src), "-o", str(tmp_path / "out"), "--no-progress"]
    )
    assert result.exit_code == 1
    assert "a.dcm" in result.output and "annot-denoise[dicom]" in result.output
    assert (tmp_path / "out" / "b.png").is_file()
    assert not (tmp_path / "out" / "a.dcm").exists()


def test_training_on_the_fly_takes_every_frame_of_a_cine_loop(tmp_path: Path) -> None:
    from annot_denoise.phantom import make_phantom
    from annot_denoise.training.data import SyntheticDataset, _readable

    loop = np.stack([make_phantom(64, 80, np.random.default_rng(k)) for k in range(3)])
    (tmp_path / "loop.dcm").write_bytes(to_bytes(make_dataset(loop)))
    write_image(tmp_path / "one.png", make_phantom(64, 80, np.random.default_rng(9)))
    good, errors = _readable(list_images(tmp_path))
    assert len(good) == 2 and not errors
    data = SyntheticDataset(good, channels=1, size=None, patch=32, repeats=1, colors=["white"])
    assert len(data) == 4  # three frames and the single scan
    scans = {frame.tobytes() for frame in data._scans}
    assert {f.tobytes() for f in loop} <= scans
    item = data[0]
    assert item["annotated"].shape[-2:] == (32, 32)


def test_train_and_eval_take_dicom_scans(tmp_path: Path) -> None:
    from annot_denoise.config import EvalConfig, validate_config
    from annot_denoise.evaluation.evaluate import evaluate
    from annot_denoise.phantom import make_phantom
    from annot_denoise.synth.pipeline import annotate
    from annot_denoise.training.loop import train

    scans = tmp_path / "scans"
    pairs = tmp_path / "pairs"
    for k in range(6):
        scan = make_phantom(64, 96, np.random.default_rng(k))
        scans.mkdir(exist_ok=True)
        (scans / f"IM_{k:04d}").write_bytes(to_bytes(make_dataset(scan)))  # no suffix
        clean_img, annotated, mask, _ = annotate(scan, "calipers", np.random.default_rng(k))
        for sub, image in (("clean", clean_img), ("annotated", annotated)):
            (pairs / sub).mkdir(parents=True, exist_ok=True)
            photometric = "RGB" if image.ndim == 3 else "MONOCHROME2"
            (pairs / sub / f"s{k}.dcm").write_bytes(to_bytes(make_dataset(image, photometric)))
        write_image(pairs / "masks" / f"s{k}.png", mask.astype(np.uint8) * 255)
    cfg = validate_config(
        {
            "data": {"on_the_fly": True, "clean_dir": str(scans), "size": None, "patch": 32},
            "model": {"arch": "maskunet", "width": 8, "depth": 2},
            "train": {"epochs": 1, "batch_size": 4, "workers": 0, "samples": 1},
            "output": {"dir": str(tmp_path / "run")},
        }
    )
    train(cfg, device="cpu")
    assert (tmp_path / "run" / "best.pt").is_file()
    model, ckpt = load_model(tmp_path / "run" / "best.pt")
    restorer = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    report = evaluate(EvalConfig(data_dir=pairs, out=tmp_path / "eval"), {"model": restorer})
    assert not report.failed
    rows = [row for row in report.per_image if row["method"] == "model"]
    assert {row["image"] for row in rows} == {f"s{k}.dcm" for k in range(6)}
    assert all(row["f1"] == row["f1"] for row in rows)  # masks found: F1 is a number
