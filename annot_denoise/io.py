"""Read and write scans without losing bit depth, channels or data.

Every command goes through these functions, so they are the one place that
decides what a supported image is. Images live in memory as numpy arrays:
``HxW`` (grey), ``HxWx2`` (grey + alpha), ``HxWx3`` (RGB) or ``HxWx4`` (RGBA),
dtype ``uint8`` or ``uint16``. A file that cannot be read raises
:class:`ImageReadError`, whose message is one line naming the file and the reason.
Writes are atomic: a temporary file in the destination folder, then ``os.replace``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import stat
import struct
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from annot_denoise.guard import WriteGuard, identity

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
DICOM_SUFFIXES = (".dcm", ".dicom")
# What list_images picks up; extension-less files are DICOM when they carry DICM.
READ_SUFFIXES = IMAGE_SUFFIXES + DICOM_SUFFIXES
# Large enough for a 12000x12000 scan, small enough that a forged header cannot
# make us allocate tens of gigabytes (a decompression bomb).
MAX_PIXELS = 150_000_000
# Files are read whole; a long uncompressed cine loop fits, a stray disk image does not.
MAX_FILE_BYTES = 4 << 30
JPEG_QUALITY = 95
PNG_COMPRESSION = 3

# Pillow's own bomb check warns at ~89 Mpx; ours is the one that decides.
Image.MAX_IMAGE_PIXELS = None


class ImageReadError(Exception):
    """A file that is not a readable, supported image."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{printable(str(path), newlines=True)}: {reason}")


# Characters that steer a terminal or a log instead of being shown: C0 and C1
# controls, DEL, and the bidirectional overrides that make a name read backwards.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, newlines: bool = False) -> str:
    """``text`` with control characters shown as escapes (``\\x1b``), so a file name
    cannot colour, move or clear the terminal; with ``newlines`` line breaks too,
    so it cannot start a log line of its own."""

    def escape(match: re.Match) -> str:
        char = match.group()
        if char == "\n" and not newlines:
            return char
        return char.encode("unicode_escape").decode("ascii")

    return _UNPRINTABLE.sub(escape, text)


def list_images(root: Path) -> list[Path]:
    """Return the supported image files under ``root`` (recursive), sorted.

    ``root`` may also be a single file, returned as is whatever its suffix, so
    that the reader can say what is wrong with it. Hidden files and folders
    (names starting with ".", such as our own temporary files and macOS "._"
    files) are skipped.
    """
    root = Path(root)
    if not root.is_dir():  # a symlink to a folder is a folder
        if root.is_file() or root.is_symlink():
            return [root]
        raise FileNotFoundError(f"{root}: no such file or folder")
    from annot_denoise.dicom import is_dicom_path

    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if name.lower().endswith(READ_SUFFIXES) or is_dicom_path(path):
                found.append(path)
    return sorted(found)


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot be written into, or made, or None: it is a file, or
    its nearest existing ancestor is not a folder."""
    if folder.exists() and not folder.is_dir():
        return "is a file, not a folder"
    for parent in folder.parents:
        if parent.is_dir():
            return None
        if parent.exists() or parent.is_symlink():
            return f"cannot be created: {parent} is not a folder"
    return None


def read_image(path: Path | str) -> np.ndarray:
    """Decode ``path`` into a ``uint8``/``uint16`` array, keeping channels and depth."""
    return decode_image(read_bytes(Path(path)), path)


def read_frames(path: Path | str) -> list[np.ndarray]:
    """Every frame of ``path``: a DICOM cine loop's frames, or the one image."""
    data = read_bytes(Path(path))
    if data and is_dicom(data, path):
        from annot_denoise import dicom

        return list(dicom.decode(data, path).frames)
    return [decode_image(data, path)]


def read_bytes(path: Path) -> bytes:
    """The file's bytes, or an :class:`ImageReadError` saying why they cannot be had."""
    check_file(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _os_error(path, exc) from None


def check_file(path: Path) -> None:
    """Raise :class:`ImageReadError` unless ``path`` is a regular file we may read whole."""
    try:
        info = path.stat()
    except OSError as exc:
        raise _os_error(path, exc) from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageReadError(path, "is a folder, not an image")
    # Reading a FIFO or a device would block or never end.
    if not stat.S_ISREG(info.st_mode):
        raise ImageReadError(path, "not a regular file (a pipe, socket or device)")
    if info.st_size > MAX_FILE_BYTES:
        size = f"{info.st_size / 2**30:.1f} GiB"
        raise ImageReadError(path, f"file too large: {size} (limit {MAX_FILE_BYTES >> 30} GiB)")
    if not os.access(path, os.R_OK):
        raise ImageReadError(path, "permission denied")


def image_size(path: Path | str) -> tuple[int, int]:
    """(width, height) of a single image from its header; errors as :func:`read_image`
    (a cine loop included)."""
    width, height, frames = image_header(path)
    if frames > 1:
        from annot_denoise import dicom

        dicom.require_single_frame(frames, path)
    return width, height


def image_header(path: Path | str) -> tuple[int, int, int]:
    """(width, height, frames) from the header alone where possible: a DICOM cine
    loop's frames, 1 for other images. Errors as :func:`read_image`."""
    path = Path(path)
    check_file(path)  # before open(): a FIFO would be waited on forever
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
        if is_dicom(head, path):
            from annot_denoise import dicom

            return dicom.header(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                _check_size(img.width, img.height, path)
                return img.width, img.height, 1
    except ImageReadError:
        raise
    except Exception:  # Pillow raises many types for junk: let the full reader say why
        image = read_image(path)
        return image.shape[1], image.shape[0], 1


def _os_error(path: Path, exc: OSError) -> ImageReadError:
    if isinstance(exc, IsADirectoryError):
        return ImageReadError(path, "is a folder, not an image")
    if isinstance(exc, FileNotFoundError):
        reason = "broken symbolic link" if path.is_symlink() else "no such file"
        return ImageReadError(path, reason)
    if isinstance(exc, PermissionError):
        return ImageReadError(path, "permission denied")
    return ImageReadError(path, f"cannot read ({exc.strerror or exc})")


def has_preamble(data: bytes) -> bool:
    """True for bytes that start like a DICOM Part 10 file (128-byte preamble + DICM)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def is_dicom(data: bytes, path: Path | str) -> bool:
    """DICOM by content (the preamble), or by suffix: bare datasets have no preamble."""
    return has_preamble(data) or Path(path).suffix.lower() in DICOM_SUFFIXES


def decode_image(data: bytes, path: Path | str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes; ``path`` is only used in error messages."""
    if not data:
        raise ImageReadError(path, "empty file (0 bytes)")
    if is_dicom(data, path):
        return _single_dicom_frame(data, path)
    try:
        with warnings.catch_warnings():
            # Pillow warns about damage (corrupt EXIF, ...) it works around; we report
            # what cannot be worked around as errors, so its warnings are noise.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                _check_size(img.width, img.height, path)
                _check_single_frame(img, path)
                if _is_png_16bit_color(data):
                    # Pillow reduces 16-bit colour PNGs to 8 bits; OpenCV keeps all 16.
                    return _decode_with_opencv(data, path)
                if (
                    img.format == "TIFF"
                    and img.mode in ("RGB", "RGBA")
                    and (max(img.tag_v2.get(258, (8,))) > 8)
                ):
                    # Pillow reduces 16-bit colour TIFF to 8 bits too.
                    return _opencv_decode(data, path)
                img.load()
                return _pil_to_array(img, path)
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        fmt = _sniff(data)
        if fmt:
            reason = f"truncated or corrupt image data (starts like {fmt} but cannot be decoded)"
            raise ImageReadError(path, reason) from None
        raise ImageReadError(path, "not an image in a supported format") from None
    except (OSError, SyntaxError, ValueError) as exc:
        reason = str(exc).split("\n")[0] or type(exc).__name__
        lowered = reason.lower()
        if any(k in lowered for k in ("truncated", "broken data stream", "decoder", "decode")):
            reason = f"truncated or corrupt image data ({reason})"
        raise ImageReadError(path, reason) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"image too large ({exc})") from None
    except Exception as exc:  # a decoder's surprise on a crafted file must not end a batch
        first = str(exc).split("\n")[0][:200]
        raise ImageReadError(path, f"cannot decode ({type(exc).__name__}: {first})") from None


def write_image(path: Path | str, image: np.ndarray, guard: WriteGuard | None = None) -> None:
    """Encode ``image`` in the format named by ``path``'s suffix, atomically.

    PNG and TIFF keep 8 or 16 bits; JPEG is written at quality 95 and refuses
    16-bit data rather than silently dropping bits. ``guard``: as for
    :func:`atomic_write_bytes`.
    """
    path = Path(path)
    atomic_write_bytes(path, encode_image(image, path.suffix), guard)


def encode_image(image: np.ndarray, suffix: str) -> bytes:
    """Encode ``image`` to the bytes of a ``suffix`` file (".png", ".jpg", ...)."""
    suffix = suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"cannot write {suffix!r} files; choose one of {IMAGE_SUFFIXES}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"cannot write {image.dtype} images; expected uint8 or uint16")
    if image.dtype == np.uint16 and suffix in (".jpg", ".jpeg", ".bmp", ".webp"):
        raise ValueError(f"{suffix} cannot hold 16-bit data; write .png or .tif instead")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 2:
        # OpenCV has no grey+alpha layout; Pillow writes LA for PNG (8-bit only).
        return _encode_grey_alpha(image, suffix)
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        if channels == 4:
            raise ValueError("JPEG cannot hold an alpha channel; write .png instead")
    elif suffix == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    elif suffix == ".webp":
        # OpenCV before 4.12 cannot ask libwebp to keep the colour under alpha == 0.
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, "WEBP", lossless=True, exact=True)
        return buf.getvalue()
    bgr = _rgb_to_bgr(image)
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(bgr), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} {image.dtype} image as {suffix}")
    return buf.tobytes()


def atomic_write_bytes(path: Path | str, data: bytes, guard: WriteGuard | None = None) -> None:
    """Write ``data`` to ``path`` so that a crash never leaves a partial file there.

    With a ``guard``, missing folders are created only outside the protected
    ones, and the folder the file is written into is checked by identity after it
    is opened: what is written is where it was checked (no link or mount swapped
    in between can redirect it into the input tree).
    """
    path = Path(path)
    if guard is not None:
        guard.make_dirs(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = f".{path.name}.{secrets.token_hex(8)}.tmp"
    if os.name != "posix":  # no dir_fd: the check is on the path, just before the write
        if guard is not None:
            guard.check_folder(path.parent.stat(), path)
        _write_and_replace(path.parent / tmp, path, data, {})
        return
    folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if guard is not None:
            guard.check_folder(os.fstat(folder), path)
        _write_and_replace(Path(tmp), Path(path.name), data, {"dir_fd": folder})
    finally:
        os.close(folder)


def _write_and_replace(tmp: Path, path: Path, data: bytes, at: dict) -> None:
    # os.open with 0o666 honours the umask; mkstemp would leave the file 0600.
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666, **at)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        folder = at.get("dir_fd")
        os.replace(tmp, path, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, **at)
        raise


def remove_stale_temporaries(
    folder: Path | str,
    finals: set[Path] | Callable[[Path], bool],
    guard: WriteGuard | None = None,
) -> int:
    """Delete the ``.NAME.<hex>.tmp`` files that killed writes of ``finals`` (a set of
    paths, or a test of a path when the names are not all known in advance) left
    under ``folder`` (one walk); returns how many. Only for files this process
    owns: a temporary of another live writer is not stale. Folders ``guard``
    protects (an input tree mounted inside ``folder``) are not entered."""
    owns = finals if callable(finals) else finals.__contains__
    removed = 0
    for dirpath, dirnames, names in os.walk(folder):
        if guard is not None:
            dirnames[:] = [d for d in dirnames if not _protected(guard, Path(dirpath) / d)]
        for name in names:
            match = _TEMP_NAME.match(name)
            if match and owns(Path(dirpath) / match["name"]):
                (Path(dirpath) / name).unlink(missing_ok=True)
                removed += 1
    return removed


def _protected(guard: WriteGuard, folder: Path) -> bool:
    try:
        return identity(folder.stat()) in guard.dirs
    except OSError:
        return True


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{16}\.tmp$")


def atomic_write_text(path: Path | str, text: str, guard: WriteGuard | None = None) -> None:
    """Text flavour of :func:`atomic_write_bytes` (UTF-8).

    File names that are not UTF-8 (decoded by Python with surrogate escapes) are
    written back as the bytes the file system has, instead of failing.
    """
    atomic_write_bytes(path, text.encode("utf-8", "surrogateescape"), guard)


def to_float(image: np.ndarray) -> np.ndarray:
    """Scale by the dtype's range (not the image's maximum) to float32 in [0, 1]."""
    scale = 65535.0 if image.dtype == np.uint16 else 255.0
    return image.astype(np.float32) / scale


def from_float(image: np.ndarray, dtype: np.dtype | type) -> np.ndarray:
    """Inverse of :func:`to_float`: clip to [0, 1], scale, round."""
    scale = 65535.0 if np.dtype(dtype) == np.uint16 else 255.0
    return (np.clip(image, 0.0, 1.0) * scale + 0.5).astype(dtype)


def split_alpha(image: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Separate colour from alpha: (HxW or HxWx3, alpha or None)."""
    if image.ndim == 3 and image.shape[2] in (2, 4):
        color = image[..., :-1]
        return (color[..., 0] if color.shape[2] == 1 else color), image[..., -1]
    return image, None


def merge_alpha(color: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """Inverse of :func:`split_alpha`."""
    if alpha is None:
        return color
    if color.ndim == 2:
        color = color[..., None]
    return np.concatenate([color, alpha[..., None].astype(color.dtype)], axis=2)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Colour part of ``image`` as HxWx3 (grey is repeated, alpha dropped)."""
    color, _ = split_alpha(image)
    if color.ndim == 3 and color.shape[2] == 1:  # grey with a channel axis (numpy callers)
        color = color[..., 0]
    if color.ndim == 2:
        return np.repeat(color[..., None], 3, axis=2)
    return color


def to_grey(image: np.ndarray) -> np.ndarray:
    """Colour part of ``image`` as HxW luminance (ITU-R BT.601), same dtype."""
    color, _ = split_alpha(image)
    if color.ndim == 3 and color.shape[2] == 1:  # grey with a channel axis (numpy callers)
        return color[..., 0]
    if color.ndim == 2:
        return color
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    grey = color.astype(np.float32) @ weights
    return np.clip(grey + 0.5, 0, np.iinfo(image.dtype).max).astype(image.dtype)


def differs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """HxW bool: pixels where any channel of ``a`` and ``b`` differs.

    One channel at a time: numpy's reductions over a short last axis are several
    times slower, and this runs on every synthesised sample.
    """
    if a.ndim == 2:
        return a != b
    out = a[..., 0] != b[..., 0]
    for c in range(1, a.shape[2]):
        out |= a[..., c] != b[..., c]
    return out


def describe(image: np.ndarray) -> str:
    """Short human description, e.g. '544x336 RGB 8-bit'."""
    h, w = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    mode = {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}-channel")
    return f"{w}x{h} {mode} {8 * image.dtype.itemsize}-bit"


# --------------------------------------------------------------------------- internals


def _check_size(width: int, height: int, path: Path | str) -> None:
    if width < 1 or height < 1:
        raise ImageReadError(path, f"image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            path,
            f"image too large: {width}x{height} = {width * height / 1e6:.0f} Mpx "
            f"(limit {MAX_PIXELS / 1e6:.0f} Mpx; a decompression bomb or a corrupt header)",
        )


# Formats whose extra frames are frames of the scan (a multi-page TIFF stack, an
# animated PNG or WebP). A JPEG's extra images (MPO) are previews of the same
# picture, and the primary image is the picture.
_FRAME_FORMATS = {"TIFF": "TIFF", "PNG": "PNG (APNG)", "WEBP": "WebP"}


def _check_single_frame(img: Image.Image, path: Path | str) -> None:
    """Refuse a file of several frames rather than clean its first and drop the rest."""
    frames = getattr(img, "n_frames", 1)
    if frames > 1 and img.format in _FRAME_FORMATS:
        raise ImageReadError(
            path,
            f"multi-frame {_FRAME_FORMATS[img.format]} ({frames} frames): only its first "
            "frame could be cleaned and the rest would be lost; save each frame as its own "
            "file, or the loop as DICOM (every frame of a DICOM cine loop is cleaned)",
        )


def _single_dicom_frame(data: bytes, path: Path | str) -> np.ndarray:
    from annot_denoise import dicom

    scan = dicom.decode(data, path)
    dicom.require_single_frame(len(scan.frames), path)
    return scan.frames[0]


_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"\xff\xd8\xff": "JPEG",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"BM": "BMP",
    b"GIF8": "GIF",
}


def _sniff(data: bytes) -> str | None:
    """The format a file's first bytes claim, for a better message when decoding fails."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for sig, fmt in _SIGNATURES.items() if data.startswith(sig)), None)


def _is_png_16bit_color(data: bytes) -> bool:
    # IHDR is always the first chunk: bit depth at byte 24, colour type at 25.
    if len(data) < 26 or data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    return data[24] == 16 and data[25] in (2, 4, 6)


def _decode_with_opencv(data: bytes, path: Path | str) -> np.ndarray:
    width, height = struct.unpack(">II", data[16:24])
    _check_size(width, height, path)
    image = _opencv_decode(data, path)
    # OpenCV has no grey+alpha layout: it repeats grey into B, G and R.
    return image[..., [0, 3]] if data[25] == 4 else image


def _opencv_decode(data: bytes, path: Path | str) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(path, "truncated or corrupt image data")
    return _rgb_to_bgr(image)  # the swap is its own inverse


def _pil_to_array(img: Image.Image, path: Path | str) -> np.ndarray:
    if img.format == "JPEG" or img.format == "MPO":
        # Scanners and phones store rotation in EXIF; apply it like every viewer does.
        img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "1":
        return np.asarray(img, dtype=np.uint8) * 255
    if mode == "P" or mode == "PA":
        has_alpha = "transparency" in img.info or mode == "PA"
        img, mode = (img.convert("RGBA"), "RGBA") if has_alpha else (img.convert("RGB"), "RGB")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        img, mode = img.convert("RGB"), "RGB"
    if mode in ("L", "LA", "RGB", "RGBA"):
        return np.array(img, dtype=np.uint8)
    if mode == "RGBa" or mode == "La":
        return np.array(img.convert(mode.upper()), dtype=np.uint8)
    if mode.startswith("I;16"):
        return np.array(img).astype(np.uint16)
    if mode == "I":
        arr = np.array(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(path, "32-bit integer image with values outside 0..65535")
        return arr.astype(np.uint16)
    if mode == "F":
        raise ImageReadError(path, "floating-point images are not supported; convert to 16-bit")
    raise ImageReadError(path, f"unsupported image mode {mode!r}")


def _rgb_to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 3 and image.shape[2] == 3:
        return image[..., ::-1]
    if image.ndim == 3 and image.shape[2] == 4:
        return image[..., [2, 1, 0, 3]]
    return image


def _encode_grey_alpha(image: np.ndarray, suffix: str) -> bytes:
    if suffix == ".png" and image.dtype == np.uint16:
        return _png_grey_alpha_16(image)
    if suffix not in (".png", ".tif", ".tiff") or image.dtype != np.uint8:
        raise ValueError(
            "grey+alpha images can only be written as .png (8 or 16-bit) or 8-bit .tif"
        )
    buf = io.BytesIO()
    fmt = "PNG" if suffix == ".png" else "TIFF"
    Image.fromarray(np.ascontiguousarray(image), mode="LA").save(buf, format=fmt)
    return buf.getvalue()


def _png_grey_alpha_16(image: np.ndarray) -> bytes:
    """16-bit grey+alpha PNG (colour type 4), which neither Pillow nor OpenCV writes."""
    h, w, _ = image.shape
    rows = np.zeros((h, 1 + 4 * w), np.uint8)  # each row: filter type 0, then the samples
    rows[:, 1:] = np.ascontiguousarray(image, dtype=">u2").view(np.uint8).reshape(h, 4 * w)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 4, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), PNG_COMPRESSION))
        + chunk(b"IEND", b"")
    )
