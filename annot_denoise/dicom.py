"""DICOM in and out: frames as plain arrays, the dataset kept for writing back.

Optional: needs the ``dicom`` extra (pydicom, plus pylibjpeg and its plug-ins for
JPEG / JPEG 2000 / RLE pixel data). Without it a DICOM input is refused with one
line saying what to install.

Reading maps stored values onto the same ``uint8``/``uint16`` arrays every other
format uses, reversibly, so pixels the model leaves alone are written back bit
for bit:

- ``Bits Stored`` below ``Bits Allocated`` (12-bit in 16) is shifted up to fill
  the dtype, because the network normalises by the dtype's range;
- signed data is offset to unsigned;
- MONOCHROME1 (low = white) is inverted so marks look as they do on screen;
- YBR colour is converted to RGB (and written back as RGB: converting back
  to YBR would round).

Writing replaces only the pixel data and the elements that describe it, gives
the result a new SOP Instance UID (derived pixels must not reuse the old one),
marks Image Type as DERIVED, appends to Derivation Description, and stores it as
uncompressed Explicit VR Little Endian. Lossy Image Compression is left as it
was; Burned In Annotation changes only when the caller asks.
"""

from __future__ import annotations

import copy
import io
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from annot_denoise.io import DICOM_SUFFIXES, MAX_PIXELS, ImageReadError, has_preamble

EXTRA_HINT = "DICOM support needs the optional extra: pip install 'annot-denoise[dicom]'"
_MONO = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420")


@dataclass
class DicomScan:
    """A decoded DICOM file: ``frames`` is (N, H, W) or (N, H, W, 3)."""

    frames: np.ndarray
    dataset: Any  # pydicom.Dataset, without its pixel data
    bits_stored: int
    signed: bool
    inverted: bool

    @property
    def multi_frame(self) -> bool:
        return len(self.frames) > 1


def is_dicom_path(path: Path) -> bool:
    """DICOM by suffix, or a file without a format suffix that carries the DICM preamble."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    # Exports often name files by UID ("1.2.840.1136"): a numeric suffix is no format.
    if (path.suffix and not path.suffix[1:].isdigit()) or path.name.upper() == "DICOMDIR":
        return False  # DICOMDIR is an index, not an image
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block the listing
            return False
        with path.open("rb") as fh:
            return has_preamble(fh.read(132))
    except OSError:
        return False


def decode(data: bytes, path: Path | str = "<bytes>") -> DicomScan:
    """Decode DICOM bytes; every failure is an :class:`ImageReadError` naming ``path``."""
    return _one_line_errors(_decode, data, path)


def _one_line_errors(fn: Callable[..., Any], data: Any, path: Path | str) -> Any:
    """``fn(data, path)``, with anything a malformed file makes pydicom or numpy raise
    turned into one :class:`ImageReadError`: a bad file must never end a batch."""
    try:
        return fn(data, path)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(
            path, f"malformed DICOM ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


def _decode(data: bytes, path: Path | str) -> DicomScan:
    pydicom = _pydicom(path)
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns about what we report as errors
            ds = pydicom.dcmread(io.BytesIO(data), force=not has_preamble(data))
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(path, f"not a readable DICOM file ({_first_line(exc)})") from None
    if "PixelData" not in ds:
        raise ImageReadError(path, "DICOM file without pixel data (a report or index?)")
    _complete_file_meta(ds)
    try:
        photometric = str(ds.PhotometricInterpretation).strip()
        rows, cols = int(ds.Rows), int(ds.Columns)
        frames_count = int(getattr(ds, "NumberOfFrames", 1) or 1)
        allocated, stored = int(ds.BitsAllocated), int(ds.BitsStored)
        signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
        samples = int(getattr(ds, "SamplesPerPixel", 1))
    except (AttributeError, ValueError, TypeError) as exc:
        raise ImageReadError(path, f"DICOM pixel description incomplete ({exc})") from None
    if photometric not in _MONO + _COLOUR:
        raise ImageReadError(
            path, f"DICOM photometric interpretation {photometric!r} is not supported"
        )
    colour = photometric in _COLOUR
    if samples != (3 if colour else 1):
        raise ImageReadError(
            path,
            f"DICOM header contradicts itself: photometric interpretation {photometric} "
            f"but Samples per Pixel {samples} ({photometric} has {3 if colour else 1})",
        )
    if allocated not in (8, 16) or not 1 <= stored <= allocated:
        raise ImageReadError(
            path, f"DICOM with {stored} of {allocated} bits is not supported (8 or 16 bits)"
        )
    if rows * cols * frames_count > MAX_PIXELS or rows < 1 or cols < 1:
        raise ImageReadError(
            path, f"DICOM too large or empty: {frames_count} frame(s) of {cols}x{rows}"
        )
    try:
        # pydicom converts YBR to RGB here (as_rgb), and unpacks planar layouts.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        raise ImageReadError(
            path, f"cannot decode DICOM pixel data ({_first_line(exc)}); {EXTRA_HINT}"
        ) from None
    except (ValueError, TypeError, KeyError, AttributeError, EOFError) as exc:
        raise ImageReadError(
            path, f"truncated or corrupt DICOM pixel data ({_first_line(exc)})"
        ) from None
    shape = (frames_count, rows, cols, 3) if colour else (frames_count, rows, cols)
    if arr.size != np.prod(shape):
        raise ImageReadError(
            path,
            f"DICOM pixel data holds {arr.size} values; its header describes {np.prod(shape)} "
            f"({frames_count} frame(s) of {cols}x{rows}, {samples} sample(s) per pixel)",
        )
    arr = arr.reshape(shape)
    frames = _to_unsigned(arr, stored, signed, allocated)
    inverted = photometric == "MONOCHROME1"
    if inverted:
        frames = np.iinfo(frames.dtype).max - frames
    del ds.PixelData
    return DicomScan(frames, ds, stored, signed, inverted)


def header(path: Path | str) -> tuple[int, int, int]:
    """(width, height, frames) from the header, without the pixel data."""
    return _one_line_errors(_header, path, path)


def _header(path: Path | str, _: Path | str) -> tuple[int, int, int]:
    pydicom = _pydicom(path)
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        width, height = int(ds.Columns), int(ds.Rows)
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise ImageReadError(path, f"not a readable DICOM file ({_first_line(exc)})") from None
    except AttributeError:
        raise ImageReadError(path, "DICOM file without pixel data (a report or index?)") from None
    # As decode() checks: a forged frame count must not make callers plan billions
    # of frames before the pixels are ever read.
    if width * height * frames > MAX_PIXELS or min(width, height, frames) < 1:
        raise ImageReadError(
            path, f"DICOM too large or empty: {frames} frame(s) of {width}x{height}"
        )
    return width, height, frames


def require_single_frame(frames: int, path: Path | str) -> None:
    """Pairs (train from a synth folder, eval) are one frame per file; synth, train
    on the fly and clean take cine loops too."""
    if frames > 1:
        raise ImageReadError(
            path,
            f"multi-frame DICOM ({frames} frames): pairs are single frames; `synth` "
            "makes a pair of every frame, and train's on-the-fly clean scans and "
            "`clean` take loops",
        )


def encode(
    scan: DicomScan,
    frames: np.ndarray,
    *,
    description: str,
    clear_burned_in: bool = False,
) -> bytes:
    """Bytes of a new DICOM file: ``scan``'s dataset with ``frames`` as its pixels."""
    import pydicom.uid

    if frames.shape != scan.frames.shape or frames.dtype != scan.frames.dtype:
        raise ValueError(f"frames {frames.shape} {frames.dtype} do not match the input's")
    ds = copy.deepcopy(scan.dataset)
    stored_values = frames
    if scan.inverted:
        stored_values = np.iinfo(frames.dtype).max - frames
    stored_values = _from_unsigned(stored_values, scan.bits_stored, scan.signed)
    colour = frames.ndim == 4
    photometric = "RGB" if colour else str(ds.PhotometricInterpretation).strip()
    pixels = stored_values if len(frames) > 1 else stored_values[0]
    ds.set_pixel_data(pixels, photometric, scan.bits_stored, generate_instance_uid=False)
    # Derived pixels get a new identity; the file meta must agree with the dataset.
    uid = pydicom.uid.generate_uid()
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    if "SOPClassUID" in ds:
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    image_type = list(ds.ImageType) if "ImageType" in ds else ["DERIVED", "SECONDARY"]
    image_type[0] = "DERIVED"
    ds.ImageType = image_type
    previous = str(ds.get("DerivationDescription", "")).strip()
    ds.DerivationDescription = (f"{previous}; {description}" if previous else description)[:1024]
    if clear_burned_in:
        ds.BurnedInAnnotation = "NO"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- internals


def _pydicom(path: Path | str) -> Any:
    try:
        import pydicom
    except ImportError:
        raise ImageReadError(path, EXTRA_HINT) from None
    return pydicom


def _complete_file_meta(ds: Any) -> None:
    """Old archives hold bare datasets without file meta: name the encoding pydicom
    found, so the pixel data can be decoded and the output is a proper Part 10 file."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit, little = ds.original_encoding
        syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta.TransferSyntaxUID = syntax if little else ExplicitVRBigEndian


def _to_unsigned(arr: np.ndarray, stored: int, signed: bool, allocated: int) -> np.ndarray:
    dtype = np.uint8 if allocated == 8 else np.uint16
    values = arr.astype(np.int64)
    if signed:
        values = values + (1 << (stored - 1))
    values = np.clip(values, 0, (1 << stored) - 1)  # bits above Bits Stored are not pixel data
    return (values << (8 * np.dtype(dtype).itemsize - stored)).astype(dtype)


def _from_unsigned(frames: np.ndarray, stored: int, signed: bool) -> np.ndarray:
    shift = 8 * frames.dtype.itemsize - stored
    values = frames.astype(np.int64)
    if shift:
        values = np.minimum((values + (1 << (shift - 1))) >> shift, (1 << stored) - 1)
    if signed:
        values = values - (1 << (stored - 1))
        return values.astype(np.int8 if frames.dtype == np.uint8 else np.int16)
    return values.astype(frames.dtype)


def _first_line(exc: BaseException) -> str:
    return (str(exc).split("\n")[0] or type(exc).__name__)[:200]
