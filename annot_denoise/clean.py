"""Clean folders of real scans: mirror the input tree, never touch the input.

Each output has its input's relative path, name, format, size, channels and
bit depth. DICOM inputs come back as DICOM with every frame of a cine loop
cleaned (see :mod:`annot_denoise.dicom` for what changes in the dataset).
Outputs that already exist are skipped (an interrupted run resumes by running
the same command again) unless ``overwrite`` is set. Reading and writing run in
a thread pool while the network works; on the CPU two batches are in the network
at once (see :func:`annot_denoise.runtime.inference_streams`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annot_denoise import __version__, dicom
from annot_denoise.config import CleanConfig
from annot_denoise.distributed import from_env, shard
from annot_denoise.evaluation.sheet import contact_sheet, thumbnail
from annot_denoise.guard import WriteGuard
from annot_denoise.inference import Restorer
from annot_denoise.io import (
    IMAGE_SUFFIXES,
    READ_SUFFIXES,
    ImageReadError,
    atomic_write_bytes,
    atomic_write_text,
    decode_image,
    folder_problem,
    is_dicom,
    list_images,
    read_bytes,
    read_image,
    remove_stale_temporaries,
    split_alpha,
    write_image,
)
from annot_denoise.progress import Progress
from annot_denoise.runtime import in_order, inference_streams, intra_op_threads

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
    # Seconds per stage (decode, detect, inpaint, postprocess, encode), summed over
    # threads: {stage: {"wall_s", "cpu_s"}} (see runtime.StageTimes).
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

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
        raise CleanError(f"{inputs}: no images found (looked for {', '.join(READ_SUFFIXES)})")
    return [(src, out / src.relative_to(inputs)) for src in sources]


_FRAME_MASK = re.compile(r"\.frame\d{4}\.mask\.png$")


def mask_path(output: Path, frame: int | None = None) -> Path:
    """Where ``--save-mask`` puts an output's predicted mask: beside it, as PNG.

    Frames of a multi-frame DICOM get one mask each: ``NAME.frame0007.mask.png``.
    """
    tag = "" if frame is None else f".frame{frame:04d}"
    return output.with_name(f"{output.name}{tag}.mask.png")


@dataclass
class Scan:
    """One input file: its frames (one for ordinary images) and, for DICOM, the dataset."""

    frames: list[np.ndarray]
    dicom: dicom.DicomScan | None = None
    masks: list[np.ndarray] | None = None  # bool HxW per frame, given with --masks


def read_scan(path: Path) -> Scan:
    """Read any supported input for cleaning; DICOM keeps its dataset for writing back."""
    data = read_bytes(path)
    # A DICOM named like an image (scan.png) is written back as that image format.
    if is_dicom(data, path) and not path.name.lower().endswith(IMAGE_SUFFIXES):
        scan = dicom.decode(data, path)
        return Scan(list(scan.frames), scan)
    return Scan([decode_image(data, path)])


def _attach_masks(scan: Scan, path: Path, given: list[Path]) -> Scan:
    """``scan`` with the mask of each frame read (nonzero = annotation; the scan's
    size); one file may serve several frames and is read once."""
    read = {m: _read_mask(m, path, scan.frames[0].shape[:2]) for m in dict.fromkeys(given)}
    scan.masks = [read[m] for m in given]
    return scan


def _read_mask(mask: Path, path: Path, size: tuple[int, ...]) -> np.ndarray:
    values, _ = split_alpha(read_image(mask))  # alpha is not the mask
    if values.ndim == 3 and (values != values[..., :1]).any():
        raise ImageReadError(
            path, f"its mask {mask} is not a mask: its colour channels differ (a colour image?)"
        )
    hole = (values[..., 0] if values.ndim == 3 else values) > 0
    if hole.shape != size:
        raise ImageReadError(
            path,
            f"its mask {mask} is {hole.shape[1]}x{hole.shape[0]}, the image {size[1]}x{size[0]}",
        )
    return hole


def frame_masks(masks: Path, relative: Path, frames: int) -> tuple[list[Path], list[int]]:
    """A cine loop's per-frame masks under ``masks`` (as ``save_mask`` writes them:
    ``NAME.frame0007.mask.png``) and the frames that have none."""
    paths = [mask_path(masks / relative, k) for k in range(frames)] if frames > 1 else []
    return paths, [k for k, p in enumerate(paths) if not p.is_file()]


def _ranges(numbers: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5'."""
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def mask_candidates(masks: Path, relative: Path) -> list[Path]:
    """Where the one mask for the input at ``relative`` may lie under ``masks``, in order."""
    candidates = [
        mask_path(masks / relative),  # what --save-mask wrote: NAME.mask.png
        masks / relative,  # the same name (synth's masks/ beside annotated/)
    ]
    if relative.suffix.lower() in READ_SUFFIXES:  # scan.jpg -> scan.png; not 1.2.840.5
        candidates.append((masks / relative).with_suffix(".png"))
    return list(dict.fromkeys(candidates))


def _without_masks(
    plan: list[tuple[Path, Path]], inputs: Path, masks: Path
) -> list[tuple[Path, Path]]:
    """The plan less the given masks, when they lie among the inputs."""
    root = inputs.resolve() if inputs.is_dir() else inputs.resolve().parent
    inside = masks.resolve()
    if inside == root:  # NAME.mask.png beside each scan
        kept = [(src, dst) for src, dst in plan if not src.name.lower().endswith(".mask.png")]
    elif inside.is_relative_to(root):  # a mask folder among the scans
        kept = [(src, dst) for src, dst in plan if not src.resolve().is_relative_to(inside)]
    else:
        return plan
    if not kept:
        raise CleanError(f"{inputs}: no images found besides the masks in {masks}")
    return kept


def clean(
    cfg: CleanConfig,
    restorer: Restorer,
    *,
    progress: Progress | None = None,
    meta: dict | None = None,
) -> CleanReport:
    """Clean every image under ``cfg.inputs`` into ``cfg.out`` with ``restorer``; see
    the module docstring. ``meta`` is added to clean_run.json.

    ``cfg.clear_burned_in`` sets DICOM Burned In Annotation to NO in the outputs; it
    is off by default because removing calipers is not de-identification.
    ``cfg.streams`` batches are computed side by side (None: 2 on the CPU, 1 on a GPU).

    ``cfg.masks`` (a folder mirroring the inputs) gives the annotations instead of
    detecting them: for ``sub/a.png`` the first of ``sub/a.png.mask.png`` (as
    ``save_mask`` writes), ``sub/a.png`` and ``sub/a.png`` with a ``.png`` suffix;
    nonzero pixels are annotation. A cine loop takes one mask per frame when all
    are there (``sub/a.dcm.frame0007.mask.png``), else its one mask for every
    frame. The holes are the masks grown as detections are; every other pixel is
    the input.
    A file without its mask fails; the others carry on.
    """
    _check_job(cfg, restorer)
    inputs, out = Path(cfg.inputs), Path(cfg.out)
    masks = Path(cfg.masks) if cfg.masks is not None else None
    progress = progress or Progress()
    started = time.perf_counter()
    world = from_env()
    plan = plan_outputs(inputs, out)
    if masks is not None:
        plan = _without_masks(plan, inputs, masks)
    guard = _guard(inputs, out, masks, plan)
    # Under torchrun each rank takes every size-th file; together they cover all.
    plan = shard(plan, world)
    report = CleanReport(out)
    todo = []
    for src, dst in plan:
        if why := guard.problem(dst):
            report.failed.append(why)
            log.error("%s", why)
        elif cfg.overwrite or not dst.exists():
            todo.append((src, dst))
    report.skipped = len(plan) - len(todo) - len(report.failed)
    if report.skipped:
        log.info("skipping %d images whose output exists (--overwrite to redo)", report.skipped)
    suffix = f".rank{world.rank}" if world.distributed else ""
    guard.make_dirs(out)
    _sweep(out, plan, suffix, world.main, guard)
    description = f"annotations removed by annot-denoise {__version__}" + (
        f" (model {Path(str(meta['model'])).name})" if meta and meta.get("model") else ""
    )
    run = _Run(cfg, restorer, guard, description, cfg.preview if world.main else 0)
    batch_size = cfg.batch_size or restorer.batch_size
    batches = max(1, -(-len(todo) // batch_size))
    streams, threads = inference_streams(restorer.device, cfg.streams, batches)
    restorer.stages.reset()
    rows = run.execute(todo, report, progress, batch_size, streams, threads)
    report.seconds = time.perf_counter() - started
    report.stages = restorer.stages.snapshot()
    if cfg.report_csv:
        _write_csv_report(out / f"clean_report{suffix}.csv", rows, guard)
    if run.sheet:
        labels = ["before", "after", "mask"][: len(run.sheet[0])]
        write_image(out / "clean_preview.png", contact_sheet(run.sheet, labels=labels), guard)
    record = {
        "version": __version__,
        "inputs": str(inputs),
        "out": str(out),
        "processed": report.processed,
        "skipped": report.skipped,
        "failed": report.failed,
        "rank": world.rank,
        "world_size": world.size,
        "masks": str(masks) if masks is not None else None,
        "mask_threshold": restorer.threshold if restorer.predicts_mask else None,
        "dilate": restorer.dilate if restorer.predicts_mask else None,
        "tta": restorer.tta,
        "postprocess": list(restorer.postprocess.steps) if restorer.predicts_mask else None,
        "batch_size": batch_size,
        "streams": streams,
        "threads_per_stream": threads,
        "seconds": round(report.seconds, 2),
        "stages": report.stages,
        **(meta or {}),
    }
    atomic_write_text(out / f"clean_run{suffix}.json", json.dumps(record, indent=2), guard)
    return report


def _check_job(cfg: CleanConfig, restorer: Restorer) -> None:
    """Refuse, before any work, what this restorer cannot do or would overwrite."""
    masks, out = cfg.masks, Path(cfg.out)
    if masks is not None and not restorer.takes_masks:
        raise CleanError(
            "--masks needs a mask-aware model at native resolution (maskunet); this "
            "checkpoint cannot inpaint given masks"
        )
    if masks is not None and not Path(masks).is_dir():
        raise CleanError(f"--masks {masks}: no such folder")
    if masks is not None and cfg.save_mask and Path(masks).resolve() == out.resolve():
        raise CleanError(
            f"--save-mask would overwrite the given masks in {masks}; choose another -o"
        )
    if cfg.save_mask and not restorer.predicts_mask:
        raise CleanError(
            "--save-mask needs a mask-aware model (model.arch: maskunet); this checkpoint "
            "has no mask head"
        )
    if why := folder_problem(out):
        raise CleanError(f"-o {out}: {why}")


def _sweep(
    out: Path, plan: list[tuple[Path, Path]], suffix: str, main: bool, guard: WriteGuard
) -> None:
    """Remove the hidden temporaries a killed run left behind, of this rank's own
    files only (another rank's writes may still be in flight)."""
    outputs = {d for _, d in plan}
    owned = outputs | {mask_path(d) for _, d in plan}
    extras = [f"clean_run{suffix}.json", f"clean_report{suffix}.csv"]
    owned |= {out / name for name in extras + ["clean_preview.png"] * main}

    def owns(path: Path) -> bool:  # per-frame masks of cine loops: counts unknown yet
        if path in owned:
            return True
        frame = _FRAME_MASK.search(path.name)
        return bool(frame) and path.with_name(path.name[: frame.start()]) in outputs

    if removed := remove_stale_temporaries(out, owns, guard):
        log.info("removed %d temporary files left by an interrupted run", removed)


class _Run:
    """One rank's files through read -> network -> write, every stage overlapped:
    reads run a batch ahead, ``streams`` batches share the network, writes run in
    the thread pool while the next batch computes."""

    def __init__(
        self,
        cfg: CleanConfig,
        restorer: Restorer,
        guard: WriteGuard,
        description: str,
        preview: int,
    ) -> None:
        self.cfg, self.restorer, self.guard = cfg, restorer, guard
        self.out = Path(cfg.out)
        self.masks = Path(cfg.masks) if cfg.masks is not None else None
        self.description, self.preview = description, preview
        self.sheet: list[list[np.ndarray]] = []  # thumbnails for --preview

    def execute(
        self,
        todo: list[tuple[Path, Path]],
        report: CleanReport,
        progress: Progress,
        batch_size: int,
        streams: int,
        threads: int,
    ) -> dict[str, dict]:
        """Clean ``todo``, filling ``report``; the CSV rows of the written files."""
        rows: dict[str, dict] = {}
        writes: list[tuple[Path, Path, dict, Future]] = []
        with (
            ThreadPoolExecutor(max(1, self.cfg.workers)) as pool,
            ThreadPoolExecutor(streams) as compute,
            intra_op_threads(threads),
            progress.task("cleaning", len(todo)) as bar,
        ):

            def batches() -> Iterator[tuple[list, list[Scan]]]:
                for chunk, reads in _prefetch(pool, self.read, todo, batch_size):
                    scans, dests = [], []
                    for (src, dst), fut in zip(chunk, reads):
                        try:
                            scans.append(fut.result())
                            dests.append((src, dst))
                        except ImageReadError as exc:
                            report.failed.append(str(exc))
                            log.error("%s", exc)
                            bar.advance(1)
                    yield dests, scans

            def submit(batch: tuple[list, list[Scan]]) -> Future[list]:
                # Frames of every file in the batch go through the network together.
                frames = [f for scan in batch[1] for f in scan.frames]
                if self.masks is None:
                    return compute.submit(self.restorer.restore, frames)
                given = [m for scan in batch[1] for m in scan.masks]
                return compute.submit(self.restorer.inpaint, frames, given)

            # Batches in the network, oldest first; results are handled in input order.
            for (dests, scans), computed in in_order(batches(), submit, streams):
                writes += self._hand_back((dests, scans, computed), pool, bar)
            for src, dst, row, fut in writes:
                try:
                    fut.result()
                except Exception as exc:  # one file's failed write never ends the batch
                    report.failed.append(f"{src}: cannot write output ({exc})")
                    log.error("%s: cannot write output (%s)", src, exc)
                else:  # an output is listed, and reported, once it is written
                    report.processed += 1
                    report.outputs.append(dst)
                    rows[row["image"]] = row
        return rows

    def _hand_back(
        self, batch: tuple[list, list[Scan], Future[list]], pool: ThreadPoolExecutor, bar
    ) -> list[tuple[Path, Path, dict, Future]]:
        """Queue the writes of one computed batch; (source, output, CSV row, write)."""
        dests, scans, computed = batch
        results = iter(computed.result())
        writes = []
        for (src, dst), scan in zip(dests, scans):
            done = [next(results) for _ in scan.frames]
            if len(self.sheet) < self.preview:
                self.sheet.append([thumbnail(scan.frames[0]), thumbnail(done[0].image)])
                if done[0].mask is not None:
                    self.sheet[-1].append(thumbnail(done[0].mask))
            job = (dst, scan, done, self.cfg.save_mask, self.description)
            holes = [r.mask for r in done if r.mask is not None]
            row = {
                "image": dst.relative_to(self.out).as_posix(),
                "changed_fraction": round(float(np.mean([r.changed for r in done])), 6),
                "mask_fraction": round(float(np.mean([m.mean() for m in holes])), 6)
                if holes
                else "",
            }
            fut = pool.submit(self.write, *job)
            writes.append((src, dst, row, fut))
        bar.advance(len(dests))
        return writes

    def write(self, *job) -> None:
        with self.restorer.stages("encode"):
            _write(*job, self.cfg.clear_burned_in, self.guard)

    def read(self, src: Path, dst: Path) -> Scan:
        """The scan at ``src`` with, under ``--masks``, its given masks attached."""
        with self.restorer.stages("decode"):
            return self._read(src, dst)

    def _read(self, src: Path, dst: Path) -> Scan:
        scan = read_scan(src)
        if self.masks is None:
            return scan
        masks, relative = self.masks, dst.relative_to(self.out)
        per_frame, missing = frame_masks(masks, relative, len(scan.frames))
        if per_frame and not missing:
            return _attach_masks(scan, src, per_frame)
        partly = (
            f"; frame masks missing for frame(s) {_ranges(missing)}"
            if (per_frame and len(missing) < len(per_frame))
            else ""
        )
        candidates = mask_candidates(masks, relative)
        # A scan being cleaned is never a mask (--masks INPUT, where NAME is the scan).
        own = [c for c in candidates if self.guard.is_input(c)]
        found = [c for c in candidates if c.is_file() and c not in own]
        if not found:
            names = ", ".join(c.relative_to(masks).as_posix() for c in candidates)
            also = "; ".join(f"{c.name} is a scan, not a mask" for c in own)
            raise ImageReadError(
                src,
                f"no mask for it under {masks} (looked for {names}"
                + (f"; {also}" if also else "")
                + f"){partly}",
            )
        if partly:
            log.warning("%s: one mask for every frame%s", src, partly)
        return _attach_masks(scan, src, [found[0]] * len(scan.frames))


def _write(
    dst: Path,
    scan: Scan,
    results: list,
    save_mask: bool,
    description: str,
    clear_burned_in: bool,
    guard: WriteGuard,
) -> None:
    # Masks first: an existing output then always has its masks (resume skips it).
    if save_mask:
        for k, result in enumerate(results):
            frame = k if len(results) > 1 else None
            write_image(mask_path(dst, frame), result.mask.astype(np.uint8) * 255, guard)
    if scan.dicom is None:
        write_image(dst, results[0].image, guard)
        return
    frames = np.stack([r.image for r in results])
    data = dicom.encode(
        scan.dicom, frames, description=description, clear_burned_in=clear_burned_in
    )
    atomic_write_bytes(dst, data, guard)


def _write_csv_report(path: Path, rows: dict[str, dict], guard: WriteGuard) -> None:
    """Per-image changed-pixel fractions, merged with an earlier (interrupted) run's."""
    merged: dict[str, dict] = {}
    if path.is_file():
        with path.open(newline="", encoding="utf-8", errors="surrogateescape") as fh:
            merged = {r["image"]: r for r in csv.DictReader(fh)}
    merged.update(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "changed_fraction", "mask_fraction"])
    writer.writeheader()
    writer.writerows(merged[k] for k in sorted(merged))
    atomic_write_text(path, buf.getvalue(), guard)


def _guard(
    inputs: Path, out: Path, masks: Path | None, plan: list[tuple[Path, Path]]
) -> WriteGuard:
    """What no write of this job may touch: the input tree, the masks, every input file."""
    folders = [inputs] * inputs.is_dir() + [masks] * (masks is not None)
    guard = WriteGuard.protecting(folders, [src for src, _ in plan])
    if guard.problem(out / "clean_run.json"):
        raise CleanError(
            f"output folder {out} resolves into the input folder {inputs}"
            + (f" or the masks {masks}" if masks is not None else "")
            + " (through a link or a mount); choose another -o"
        )
    return guard


def _prefetch(
    pool: ThreadPoolExecutor,
    read: Callable[[Path, Path], Scan],
    todo: Sequence[tuple[Path, Path]],
    batch_size: int,
) -> Iterator[tuple[Sequence[tuple[Path, Path]], list[Future[Scan]]]]:
    """Yield batches whose reads were started one batch ahead."""
    chunks = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    pending = [pool.submit(read, src, dst) for src, dst in chunks[0]] if chunks else []
    for i, chunk in enumerate(chunks):
        current = pending
        if i + 1 < len(chunks):
            pending = [pool.submit(read, src, dst) for src, dst in chunks[i + 1]]
        yield chunk, current
