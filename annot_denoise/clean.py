"""Clean folders of real scans: mirror the input tree, never touch the input.

Each output has its input's relative path, name, format, size, channels and
bit depth. Outputs that already exist are skipped (an interrupted run resumes
by running the same command again) unless ``overwrite`` is set. Reading and
writing run in a thread pool while the network works on the current batch.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annot_denoise import __version__
from annot_denoise.distributed import from_env, shard
from annot_denoise.inference import Restorer
from annot_denoise.io import (
    IMAGE_SUFFIXES,
    ImageReadError,
    atomic_write_text,
    list_images,
    read_image,
    write_image,
)
from annot_denoise.progress import Progress
from annot_denoise.sheet import contact_sheet, thumbnail

log = logging.getLogger(__name__)


class CleanError(Exception):
    """A problem with the job as a whole (paths), reported before any work starts."""


@dataclass
class CleanReport:
    out_dir: Path
    processed: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def plan_outputs(inputs: Path, out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) for every image under ``inputs``; refuses unsafe layouts."""
    inputs, out = Path(inputs), Path(out)
    if not inputs.exists():
        raise CleanError(f"{inputs}: no such file or folder")
    src_root = inputs.resolve() if inputs.is_dir() else inputs.resolve().parent
    dst = out.resolve()
    if dst == src_root:
        raise CleanError(f"output folder {out} is the input folder; choose another -o")
    if inputs.is_dir() and dst.is_relative_to(src_root):
        raise CleanError(
            f"output folder {out} is inside the input folder {inputs}; choose another -o"
        )
    if inputs.is_file():
        return [(inputs, out / inputs.name)]
    sources = list_images(inputs)
    if not sources:
        raise CleanError(f"{inputs}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return [(src, out / src.relative_to(inputs)) for src in sources]


def mask_path(output: Path) -> Path:
    """Where ``--save-mask`` puts an output's predicted mask: beside it, as PNG."""
    return output.with_name(output.name + ".mask.png")


def clean(
    inputs: Path,
    out: Path,
    restorer: Restorer,
    *,
    batch_size: int = 4,
    overwrite: bool = False,
    workers: int = 2,
    save_mask: bool = False,
    report_csv: bool = False,
    preview: int = 0,
    progress: Progress | None = None,
    meta: dict | None = None,
) -> CleanReport:
    """Clean every image under ``inputs`` into ``out``; see the module docstring."""
    if save_mask and not restorer.predicts_mask:
        raise CleanError(
            "--save-mask needs a mask-aware model (model.arch: maskunet); this checkpoint "
            "has no mask head"
        )
    progress = progress or Progress()
    started = time.perf_counter()
    world = from_env()
    # Under torchrun each rank takes every size-th file; together they cover all.
    plan = shard(plan_outputs(inputs, out), world)
    report = CleanReport(Path(out))
    todo = [(s, d) for s, d in plan if overwrite or not d.exists()]
    report.skipped = len(plan) - len(todo)
    suffix = f".rank{world.rank}" if world.distributed else ""
    preview = preview if world.main else 0
    if report.skipped:
        log.info("skipping %d images whose output exists (--overwrite to redo)", report.skipped)
    Path(out).mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    sheet: list[list[np.ndarray]] = []  # thumbnails for --preview
    with ThreadPoolExecutor(max(1, workers)) as pool, progress.task("cleaning", len(todo)) as bar:
        writes: list[tuple[Path, Future]] = []
        for chunk, reads in _prefetch(pool, todo, batch_size):
            images, dests = [], []
            for (src, dst), fut in zip(chunk, reads):
                try:
                    images.append(fut.result())
                    dests.append((src, dst))
                except ImageReadError as exc:
                    report.failed.append(str(exc))
                    log.error("%s", exc)
            for (src, dst), image, result in zip(dests, images, restorer.restore(images)):
                if len(sheet) < preview:
                    sheet.append([thumbnail(image), thumbnail(result.image)])
                    if result.mask is not None:
                        sheet[-1].append(thumbnail(result.mask))
                mask = result.mask if save_mask else None
                writes.append((src, pool.submit(_write, dst, result.image, mask)))
                report.outputs.append(dst)
                rows[dst.relative_to(out).as_posix()] = {
                    "image": dst.relative_to(out).as_posix(),
                    "changed_fraction": round(result.changed, 6),
                    "mask_fraction": round(float(result.mask.mean()), 6)
                    if result.mask is not None
                    else "",
                }
            bar.advance(len(chunk))
        for src, fut in writes:
            try:
                fut.result()
                report.processed += 1
            except (OSError, ValueError) as exc:
                report.failed.append(f"{src}: cannot write output ({exc})")
                log.error("%s: cannot write output (%s)", src, exc)
    report.seconds = time.perf_counter() - started
    if report_csv:
        _write_csv_report(Path(out) / f"clean_report{suffix}.csv", rows)
    if sheet:
        labels = ["before", "after", "mask"][: len(sheet[0])]
        write_image(Path(out) / "clean_preview.png", contact_sheet(sheet, labels=labels))
    record = {
        "version": __version__,
        "inputs": str(inputs),
        "out": str(out),
        "processed": report.processed,
        "skipped": report.skipped,
        "failed": report.failed,
        "rank": world.rank,
        "world_size": world.size,
        "seconds": round(report.seconds, 2),
        **(meta or {}),
    }
    atomic_write_text(Path(out) / f"clean_run{suffix}.json", json.dumps(record, indent=2))
    return report


def _write(dst: Path, image: np.ndarray, mask: np.ndarray | None) -> None:
    # The mask first: an existing output then always has its mask (resume skips it).
    if mask is not None:
        write_image(mask_path(dst), mask.astype(np.uint8) * 255)
    write_image(dst, image)


def _write_csv_report(path: Path, rows: dict[str, dict]) -> None:
    """Per-image changed-pixel fractions, merged with an earlier (interrupted) run's."""
    merged: dict[str, dict] = {}
    if path.is_file():
        with path.open(newline="", encoding="utf-8") as fh:
            merged = {r["image"]: r for r in csv.DictReader(fh)}
    merged.update(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "changed_fraction", "mask_fraction"])
    writer.writeheader()
    writer.writerows(merged[k] for k in sorted(merged))
    atomic_write_text(path, buf.getvalue())


def _prefetch(
    pool: ThreadPoolExecutor, todo: Sequence[tuple[Path, Path]], batch_size: int
) -> Iterator[tuple[Sequence[tuple[Path, Path]], list[Future[np.ndarray]]]]:
    """Yield batches whose reads were started one batch ahead."""
    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    pending = [pool.submit(read_image, src) for src, _ in chunks[0]] if chunks else []
    for i, chunk in enumerate(chunks):
        current = pending
        if i + 1 < len(chunks):
            pending = [pool.submit(read_image, src) for src, _ in chunks[i + 1]]
        yield chunk, current
