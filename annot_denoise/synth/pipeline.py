"""The synthesis pipeline: clean scans in, (clean, annotated, mask) triples out.

For every scan under CLEAN_DIR (and every copy), a generator seeded from
(seed, file name, copy) drives one drawer, so the same seed gives the same
bytes whatever the order, the worker count or the other files present. The
mask is computed from the pixels that really changed, not from what the
drawer meant to draw. Everything is written as PNG (lossless; ``jpeg_quality``
compresses each pair in memory first). Every frame of a DICOM cine loop is a
scan of its own (``loop.frame0007.png``). docs/synth.md describes the options.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from annot_denoise.evaluation.sheet import contact_sheet
from annot_denoise.guard import UnsafeOutputError, WriteGuard
from annot_denoise.io import (
    ImageReadError,
    atomic_write_text,
    differs,
    folder_problem,
    image_header,
    list_images,
    read_frames,
    split_alpha,
    to_rgb,
    write_image,
)
from annot_denoise.progress import Progress
from annot_denoise.synth.compress import (
    JpegQuality,
    check_jpeg_quality,
    draw_quality,
    jpeg_changed,
    jpeg_roundtrip,
)
from annot_denoise.synth.drawers import DRAWERS
from annot_denoise.synth.placement import content_region
from annot_denoise.synth.render import check_color_names, is_grey
from annot_denoise.synth.scanner_ui import draw_scanner_ui
from annot_denoise.synth.vocabulary import LabelsError, check_labels

log = logging.getLogger(__name__)


ScannerUI = Literal["keep", "remove", "off"]
SCANNER_UI_MODES: tuple[str, ...] = ("keep", "remove", "off")
DEFAULT_COLORS: tuple[str, ...] = ("white", "yellow", "cyan")
# Built-in drawers that type labels, and so take a replacement vocabulary.
_LABEL_DRAWERS = ("text", "mixed")


class SynthError(Exception):
    """A problem with the job as a whole (folder, drawer, colours, options)."""


@dataclass
class SynthReport:
    out_dir: Path
    written: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def resolve_drawer(spec: str) -> Callable[..., np.ndarray]:
    """A built-in drawer name, or ``package.module:function`` for the user's own."""
    if spec in DRAWERS:
        return DRAWERS[spec]
    if ":" not in spec:
        raise SynthError(
            f"unknown drawer {spec!r}; choose one of {sorted(DRAWERS)} or give module:function"
        )
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may raise anything while importing
        raise SynthError(f"--drawer {spec}: cannot import {module_name!r} ({exc})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SynthError(f"--drawer {spec}: {module_name!r} has no function {attr!r}")
    return fn


def check_colors(colors: Sequence[str]) -> tuple[str, ...]:
    """``colors`` as a tuple of names in ``COLORS`` or ``"sampled"``, else a SynthError."""
    try:
        return tuple(check_color_names(colors))
    except ValueError as exc:
        raise SynthError(str(exc).replace("unknown colours", "unknown colour(s)")) from None


def check_options(
    scanner_ui: str, jpeg_quality: object, labels: Sequence[str] | None
) -> tuple[str, JpegQuality, tuple[str, ...] | None]:
    """The synthesis options validated, or one SynthError that names the bad one."""
    if scanner_ui not in SCANNER_UI_MODES:
        raise SynthError(f"scanner UI {scanner_ui!r}: choose one of {list(SCANNER_UI_MODES)}")
    try:
        quality = check_jpeg_quality(jpeg_quality)
        vocabulary = check_labels(labels) if labels is not None else None
    except (ValueError, LabelsError) as exc:
        raise SynthError(str(exc)) from None
    return scanner_ui, quality, vocabulary


def annotate(
    image: np.ndarray,
    drawer: str,
    rng: np.random.Generator,
    *,
    colors: Sequence[str] = DEFAULT_COLORS,
    scanner_ui: ScannerUI = "keep",
    labels: Sequence[str] | None = None,
    jpeg_quality: JpegQuality = None,
    interface: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Draw on a copy of ``image``: (clean, annotated, exact mask, drawn parameters).

    Grey scans become RGB when a non-grey colour may be drawn, so the clean and
    annotated images of a pair always share one layout.

    ``scanner_ui``: ``"keep"`` burns one scanner interface (``scanner_ui.draw_scanner_ui``)
    into both images, so it is never in the mask; ``"remove"`` into the annotated image
    only, so it is in the mask; ``"off"`` draws none. It is drawn before the marks, which
    may lie over it. ``labels`` replaces the label vocabulary of the ``text`` and ``mixed``
    drawers. ``jpeg_quality`` (one quality, or a (lo, hi) range drawn per pair) sends both
    images through the same JPEG round trip after drawing, the clean one without marks.

    The mask holds every pixel the drawing changed: without compression, exactly the
    pixels where the two images differ. With compression it is the pixels the drawing
    painted to a new value before compression, plus those where the compressed pair
    differs by more than ``JPEG_TOLERANCE`` (2 levels of 8 bits): JPEG codes 8x8 blocks
    (16x16 with colour subsampling), so a mark smears, rings and bleeds its colour over
    the blocks it touches, far past its strokes (up to a hundred levels next to a
    saturated mark). Outside the mask the compressed pair differs by at most 2 levels,
    the compression noise of the mark's blocks; no other pixel differs, since identical
    blocks compress identically.

    The built-in drawers keep their readouts, labels, side letters and body markers off
    the interface (a scanner never prints over its own text); ``interface`` (bool HxW)
    names the pixels of one the caller burned into ``image`` already, for the same
    purpose. A ``module:function`` drawer is called as ``fn(image, rng)`` and is told
    nothing about the interface.

    The interface and the compression quality come from generators seeded from ``rng``
    before anything is drawn, so the marks on a scan are the same whichever
    ``jpeg_quality`` is chosen, and whichever ``scanner_ui`` except for those moved off
    the interface.
    """
    fn = resolve_drawer(drawer)
    scanner_ui, quality_spec, vocabulary = check_options(scanner_ui, jpeg_quality, labels)
    ui_rng, jpeg_rng = (np.random.default_rng(int(k)) for k in rng.integers(0, 2**63, 2))
    clean = np.array(promote(image, colors), copy=True)
    region = content_region(clean) if min(clean.shape[:2]) > 0 else None
    params: dict = {}
    ui: dict = {}
    avoid = None if interface is None else np.asarray(interface, dtype=bool)
    if avoid is not None and avoid.shape != clean.shape[:2]:
        raise SynthError(
            f"interface shape {avoid.shape} does not match the image's {clean.shape[:2]}"
        )
    if scanner_ui == "keep":
        drawn = draw_scanner_ui(clean, ui_rng, region=region, record=ui)
        avoid = drawn if avoid is None else avoid | drawn
    annotated = clean.copy()
    if scanner_ui == "remove":
        drawn = draw_scanner_ui(annotated, ui_rng, region=region, record=ui)
        avoid = drawn if avoid is None else avoid | drawn
    if drawer in DRAWERS:
        extra = {"labels": vocabulary} if vocabulary and drawer in _LABEL_DRAWERS else {}
        fn(annotated, rng, region=region, colors=colors, record=params, avoid=avoid, **extra)
    else:
        intended = fn(annotated, rng)
        if not isinstance(annotated, np.ndarray) or annotated.shape != clean.shape:
            raise SynthError(f"--drawer {drawer}: changed the image's shape or type")
        if intended is not None:
            params["intended_pixels"] = int(np.count_nonzero(intended))
    mask = differs(split_alpha(annotated)[0], split_alpha(clean)[0])
    params["scanner_ui"] = scanner_ui
    if ui:
        params["ui"] = ui
    quality = draw_quality(quality_spec, jpeg_rng)
    if quality is not None and min(clean.shape[:2]) > 0:
        clean, annotated = jpeg_roundtrip(clean, quality), jpeg_roundtrip(annotated, quality)
        mask |= jpeg_changed(clean, annotated)
        params["jpeg_quality"] = quality
    return clean, annotated, mask, params


def promote(image: np.ndarray, colors: Sequence[str]) -> np.ndarray:
    """Grey (or grey+alpha) -> RGB(A) when any colour in ``colors`` is not grey."""
    color, alpha = split_alpha(image)
    if color.ndim == 3 or all(is_grey(c) for c in colors):
        return image
    rgb = to_rgb(color)
    return rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=2)


def output_names(
    sources: Sequence[Path], root: Path, copies: int, frames: Sequence[int] | None = None
) -> list[tuple[Path, str, int, int | None]]:
    """(source, output name, copy index, frame): names relative to ``root``, suffix
    .png. ``frames`` counts each source's frames; a cine loop's frame k is named
    ``NAME.frame000k``; the frame is None for single images."""
    digits = max(2, len(str(copies - 1)))
    taken: set[str] = set()
    plan = []
    for i, src in enumerate(sources):
        rel = src.relative_to(root) if src != root else Path(src.name)
        count = frames[i] if frames else 1
        tags = {
            f: "" if f is None else f".frame{f:04d}"
            for f in (range(count) if count > 1 else [None])
        }
        base = rel.with_suffix("")
        # a.jpg and a.png side by side, or loop.dcm's frame 0 and a loop.frame0000.png
        if any(base.as_posix() + tag in taken for tag in tags.values()):
            base = rel
        taken.update(base.as_posix() + tag for tag in tags.values())
        for frame, tag in tags.items():
            for k in range(copies):
                stem = base.as_posix() + tag + (f"_c{k:0{digits}d}" if copies > 1 else "")
                plan.append((src, stem + ".png", k, frame))
    return plan


def item_rng(seed: int, name: str, copy: int) -> np.random.Generator:
    """The generator for one output, independent of order and of other files."""
    return np.random.default_rng(
        np.random.SeedSequence([seed, zlib.crc32(name.encode("utf-8", "surrogateescape")), copy])
    )


def synth(
    clean_dir: Path,
    out_dir: Path,
    *,
    drawer: str = "mixed",
    copies: int = 1,
    seed: int = 0,
    colors: Sequence[str] = DEFAULT_COLORS,
    workers: int = 0,
    progress: Progress | None = None,
    scanner_ui: ScannerUI = "keep",
    labels: Sequence[str] | None = None,
    jpeg_quality: JpegQuality = None,
) -> SynthReport:
    """Write ``clean/``, ``annotated/``, ``masks/`` and ``manifest.jsonl`` under ``out_dir``.

    ``scanner_ui``, ``labels`` and ``jpeg_quality`` mean what they mean for ``annotate``;
    they are checked before any work and recorded in ``synth.json`` and in every manifest
    row (``scanner_ui``, ``jpeg_quality`` as drawn for that pair).
    """
    progress = progress or Progress()
    started = time.perf_counter()
    colors = check_colors(colors)
    scanner_ui, jpeg_quality, labels = check_options(scanner_ui, jpeg_quality, labels)
    options = {"scanner_ui": scanner_ui, "labels": labels, "jpeg_quality": jpeg_quality}
    resolve_drawer(drawer)  # fail before any work, with a message naming the spec
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    sources = _sources(clean_dir, out_dir)
    root = clean_dir if clean_dir.is_dir() else clean_dir.parent
    # Folders only: every output is a new .png name, replaced, never written through.
    guard = WriteGuard.protecting([clean_dir] if clean_dir.is_dir() else [])
    if guard.problem(out_dir / "manifest.jsonl"):
        raise SynthError(
            f"output folder {out_dir} resolves into the input folder {clean_dir} "
            "(through a link or a mount); choose another folder"
        )
    plan = output_names(sources, root, copies, [_frames(src) for src in sources])
    # Jobs by source file, so a cine loop is decoded once per job rather than once
    # per frame; a file's outputs are split over the workers (many copies, or a
    # long loop, still run in parallel).
    outputs: dict[Path, list[tuple[str, int, int | None]]] = {}
    for src, name, k, frame in plan:
        outputs.setdefault(src, []).append((name, k, frame))
    jobs = []
    for src, items in outputs.items():
        rel, size = src.relative_to(root).as_posix(), -(-len(items) // max(1, workers))
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            jobs.append((str(src), rel, chunk, drawer, seed, colors, options, str(out_dir), guard))
    report, rows = SynthReport(out_dir), []
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_synth_one, jobs) if pool else map(_synth_one, jobs)
        with progress.task("synthesising", total=len(plan)) as bar:
            for job, (done, error) in zip(jobs, results):
                if error and error not in report.failed:  # one line per bad source
                    report.failed.append(error)
                    log.error("%s", error)
                rows += done
                report.written += len(done)
                bar.advance(len(job[2]))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    manifest = "".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["output"]))
    atomic_write_text(out_dir / "manifest.jsonl", manifest, guard)
    settings = {
        "clean_dir": str(clean_dir),
        "drawer": drawer,
        "copies": copies,
        "seed": seed,
        "colors": list(colors),
        "scanner_ui": scanner_ui,
        "jpeg_quality": list(jpeg_quality) if isinstance(jpeg_quality, tuple) else jpeg_quality,
        "labels": list(labels) if labels is not None else None,
        "written": report.written,
        "failed": report.failed,
    }
    atomic_write_text(out_dir / "synth.json", json.dumps(settings, indent=2), guard)
    report.seconds = time.perf_counter() - started
    return report


def preview(
    clean_dir: Path,
    out_path: Path,
    count: int,
    *,
    drawer: str = "mixed",
    seed: int = 0,
    colors: Sequence[str] = DEFAULT_COLORS,
    scanner_ui: ScannerUI = "keep",
    labels: Sequence[str] | None = None,
    jpeg_quality: JpegQuality = None,
) -> Path:
    """Contact sheet of ``count`` samples (annotated | mask), cycling through the scans."""
    colors = check_colors(colors)
    scanner_ui, jpeg_quality, labels = check_options(scanner_ui, jpeg_quality, labels)
    resolve_drawer(drawer)
    sources = _sources(Path(clean_dir), Path(out_path).parent)
    rows, tiles = [], []
    for i in range(count):
        src = sources[i % len(sources)]
        try:
            image = read_frames(src)[0]
        except ImageReadError as exc:
            log.error("%s", exc)
            continue
        _, annotated, mask, _ = annotate(
            image,
            drawer,
            item_rng(seed, src.name, i),
            colors=colors,
            scanner_ui=scanner_ui,
            labels=labels,
            jpeg_quality=jpeg_quality,
        )
        tiles += [annotated, mask]
        if len(tiles) == 4:
            rows.append(tiles)
            tiles = []
    if tiles:
        rows.append(tiles)
    if not rows:
        raise SynthError(f"{clean_dir}: no readable scans to preview")
    write_image(out_path, contact_sheet(rows, tile_height=220))
    return Path(out_path)


def _frames(path: Path) -> int:
    try:
        return image_header(path)[2]
    except ImageReadError:
        return 1  # reading it fails later, with the reason on one line


def _sources(clean_dir: Path, out_dir: Path) -> list[Path]:
    if not clean_dir.exists():
        raise SynthError(f"{clean_dir}: no such file or folder")
    if why := folder_problem(out_dir):
        raise SynthError(f"{out_dir}: {why}")
    if clean_dir.is_dir() and out_dir.resolve().is_relative_to(clean_dir.resolve()):
        raise SynthError(f"output folder {out_dir} is inside the input folder {clean_dir}")
    sources = list_images(clean_dir)
    if not sources:
        raise SynthError(f"{clean_dir}: no images found")
    return sources


def _synth_one(job: tuple) -> tuple[list[dict], str | None]:
    """Worker: read one source, draw and write each of its outputs (every copy of
    every frame); a source that cannot be read comes back as one line."""
    src, rel, items, drawer, seed, colors, options, out_dir, guard = job
    try:
        frames = read_frames(src)
    except ImageReadError as exc:
        return [], str(exc)
    wanted = [f for _, _, f in items]
    last = max((f for f in wanted if f is not None), default=-1)
    if (None in wanted and len(frames) != 1) or len(frames) <= last:  # the header lied
        return [], f"{src}: {len(frames)} frames decoded, not what its header said"
    rows = []
    out = Path(out_dir)
    for name, copy, frame in items:
        image = frames[frame or 0]
        clean, annotated, mask, params = annotate(
            image, drawer, item_rng(seed, name, copy), colors=colors, **options
        )
        try:
            write_image(out / "clean" / name, clean, guard)
            write_image(out / "annotated" / name, annotated, guard)
            write_image(out / "masks" / name, mask.astype(np.uint8) * 255, guard)
        except (OSError, UnsafeOutputError) as exc:
            return rows, f"{src}: cannot write {name} ({exc})"
        rows.append({
            "output": name,
            "source": rel,
            **({"frame": frame} if frame is not None else {}),
            "copy": copy,
            "drawer": drawer,
            "seed": seed,
            "scanner_ui": options["scanner_ui"],
            **({"jpeg_quality": params["jpeg_quality"]} if "jpeg_quality" in params else {}),
            "mask_pixels": int(mask.sum()),
            "params": params,
        })  # fmt: skip
    return rows, None
