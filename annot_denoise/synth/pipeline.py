"""The synthesis pipeline: clean scans in, (clean, annotated, mask) triples out.

For every scan under CLEAN_DIR (and every copy), a generator seeded from
(seed, file name, copy) drives one drawer, so the same seed gives the same
bytes whatever the order, the worker count or the other files present. The
mask is computed from the pixels that really changed, not from what the
drawer meant to draw. Everything is written as PNG (lossless).
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

import numpy as np

from annot_denoise.io import (
    ImageReadError,
    atomic_write_text,
    differs,
    list_images,
    read_image,
    split_alpha,
    to_rgb,
    write_image,
)
from annot_denoise.progress import Progress
from annot_denoise.sheet import contact_sheet
from annot_denoise.synth.drawers import COLORS, DRAWERS
from annot_denoise.synth.placement import content_region

log = logging.getLogger(__name__)


class SynthError(Exception):
    """A problem with the job as a whole (folder, drawer, colours)."""


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
    unknown = [c for c in colors if c not in COLORS]
    if unknown or not colors:
        raise SynthError(f"unknown colour(s) {unknown}; choose from {sorted(COLORS)}")
    return tuple(colors)


def annotate(
    image: np.ndarray,
    drawer: str,
    rng: np.random.Generator,
    *,
    colors: Sequence[str] = ("white", "yellow", "cyan"),
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Draw on a copy of ``image``: (clean, annotated, exact mask, drawn parameters).

    Grey scans become RGB when a non-grey colour may be drawn, so the clean and
    annotated images of a pair always share one layout.
    """
    fn = resolve_drawer(drawer)
    clean = promote(image, colors)
    annotated = clean.copy()
    params: dict = {}
    if drawer in DRAWERS:
        fn(annotated, rng, region=content_region(annotated), colors=colors, record=params)
    else:
        intended = fn(annotated, rng)
        if not isinstance(annotated, np.ndarray) or annotated.shape != clean.shape:
            raise SynthError(f"--drawer {drawer}: changed the image's shape or type")
        if intended is not None:
            params["intended_pixels"] = int(np.count_nonzero(intended))
    mask = differs(split_alpha(annotated)[0], split_alpha(clean)[0])
    return clean, annotated, mask, params


def promote(image: np.ndarray, colors: Sequence[str]) -> np.ndarray:
    """Grey (or grey+alpha) -> RGB(A) when any colour in ``colors`` is not grey."""
    color, alpha = split_alpha(image)
    if color.ndim == 3 or all(len(set(COLORS[c])) == 1 for c in colors):
        return image
    rgb = to_rgb(color)
    return rgb if alpha is None else np.concatenate([rgb, alpha[..., None]], axis=2)


def output_names(sources: Sequence[Path], root: Path, copies: int) -> list[tuple[Path, str, int]]:
    """(source, output name, copy index): names relative to ``root``, suffix .png."""
    digits = max(2, len(str(copies - 1)))
    taken: set[str] = set()
    plan = []
    for src in sources:
        rel = src.relative_to(root) if src != root else Path(src.name)
        base = rel.with_suffix("")
        if base.as_posix() in taken:  # a.jpg and a.png side by side
            base = rel
        taken.add(base.as_posix())
        for k in range(copies):
            stem = base.as_posix() + (f"_c{k:0{digits}d}" if copies > 1 else "")
            plan.append((src, stem + ".png", k))
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
    colors: Sequence[str] = ("white", "yellow", "cyan"),
    workers: int = 0,
    progress: Progress | None = None,
) -> SynthReport:
    """Write ``clean/``, ``annotated/``, ``masks/`` and ``manifest.jsonl`` under ``out_dir``."""
    progress = progress or Progress()
    started = time.perf_counter()
    colors = check_colors(colors)
    resolve_drawer(drawer)  # fail before any work, with a message naming the spec
    clean_dir, out_dir = Path(clean_dir), Path(out_dir)
    sources = _sources(clean_dir, out_dir)
    root = clean_dir if clean_dir.is_dir() else clean_dir.parent
    plan = output_names(sources, root, copies)
    jobs = [
        (str(src), src.relative_to(root).as_posix(), name, k, drawer, seed, colors, str(out_dir))
        for src, name, k in plan
    ]
    report, rows = SynthReport(out_dir), []
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        results = pool.map(_synth_one, jobs, chunksize=4) if pool else map(_synth_one, jobs)
        with progress.task("synthesising", total=len(jobs)) as bar:
            for row, error in results:
                if error:
                    if error not in report.failed:  # one line per bad source, not per copy
                        report.failed.append(error)
                        log.error("%s", error)
                else:
                    rows.append(row)
                    report.written += 1
                bar.advance(1)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    manifest = "".join(json.dumps(r) + "\n" for r in sorted(rows, key=lambda r: r["output"]))
    atomic_write_text(out_dir / "manifest.jsonl", manifest)
    settings = {
        "clean_dir": str(clean_dir),
        "drawer": drawer,
        "copies": copies,
        "seed": seed,
        "colors": list(colors),
        "written": report.written,
        "failed": report.failed,
    }
    atomic_write_text(out_dir / "synth.json", json.dumps(settings, indent=2))
    report.seconds = time.perf_counter() - started
    return report


def preview(
    clean_dir: Path,
    out_path: Path,
    count: int,
    *,
    drawer: str = "mixed",
    seed: int = 0,
    colors: Sequence[str] = ("white", "yellow", "cyan"),
) -> Path:
    """Contact sheet of ``count`` samples (annotated | mask), cycling through the scans."""
    colors = check_colors(colors)
    resolve_drawer(drawer)
    sources = _sources(Path(clean_dir), Path(out_path).parent)
    rows, tiles = [], []
    for i in range(count):
        src = sources[i % len(sources)]
        try:
            image = read_image(src)
        except ImageReadError as exc:
            log.error("%s", exc)
            continue
        _, annotated, mask, _ = annotate(image, drawer, item_rng(seed, src.name, i), colors=colors)
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


def _sources(clean_dir: Path, out_dir: Path) -> list[Path]:
    if not clean_dir.exists():
        raise SynthError(f"{clean_dir}: no such file or folder")
    if clean_dir.is_dir() and out_dir.resolve().is_relative_to(clean_dir.resolve()):
        raise SynthError(f"output folder {out_dir} is inside the input folder {clean_dir}")
    sources = list_images(clean_dir)
    if not sources:
        raise SynthError(f"{clean_dir}: no images found")
    return sources


def _synth_one(job: tuple) -> tuple[dict | None, str | None]:
    """Worker: read, draw, write one output; errors come back as one line."""
    src, rel, name, copy, drawer, seed, colors, out_dir = job
    try:
        image = read_image(src)
    except ImageReadError as exc:
        return None, str(exc)
    clean, annotated, mask, params = annotate(
        image, drawer, item_rng(seed, name, copy), colors=colors
    )
    out = Path(out_dir)
    write_image(out / "clean" / name, clean)
    write_image(out / "annotated" / name, annotated)
    write_image(out / "masks" / name, mask.astype(np.uint8) * 255)
    row = {
        "output": name,
        "source": rel,
        "copy": copy,
        "drawer": drawer,
        "seed": seed,
        "mask_pixels": int(mask.sum()),
        "params": params,
    }
    return row, None
