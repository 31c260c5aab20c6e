"""Evaluation against ground truth: models and baselines, same images, same run.

For every pair in a synth-style folder we clean the annotated scan with each
learned model and each baseline, then measure against the clean original at the
file's native resolution: PSNR and SSIM over the whole image, PSNR inside the
annotation mask, the mean absolute change outside the mask dilated by 3 px
(collateral damage), and, for methods that predict a mask, its precision,
recall, F1 and IoU against the true one.
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch

from annot_denoise.config import EvalConfig
from annot_denoise.evaluation.baselines import BASELINES
from annot_denoise.evaluation.metrics import PSNR_CAP, mask_scores, mean_abs_change, psnr, ssim
from annot_denoise.evaluation.report import GalleryItem, write_report
from annot_denoise.evaluation.sheet import contact_sheet
from annot_denoise.guard import WriteGuard
from annot_denoise.inference import Restorer
from annot_denoise.io import (
    ImageReadError,
    atomic_write_text,
    folder_problem,
    to_float,
    to_grey,
    to_rgb,
    write_image,
)
from annot_denoise.progress import Progress
from annot_denoise.runtime import in_order, inference_batch, inference_streams, intra_op_threads
from annot_denoise.training.data import DatasetError, check_pairs, find_pairs, read_pair

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "psnr_mask", "change_outside")
MASK_METRICS = ("precision", "recall", "f1", "iou")
OUTSIDE_MARGIN = 3  # px: anti-aliasing and dilation fringes are not collateral damage


@dataclass
class EvalReport:
    out_dir: Path
    methods: dict[str, dict[str, float]]  # method -> metric -> mean
    per_image: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_out_dir(data_dir: Path, out_dir: Path) -> None:
    """Refuse, before any work, a report folder that is a file or lies among the pairs
    (its contact sheet would become a scan of the next run)."""
    if why := folder_problem(out_dir):
        raise DatasetError(f"-o {out_dir}: {why}")
    pairs = [data_dir / sub for sub in ("clean", "annotated", "masks")]
    if WriteGuard.protecting(p for p in pairs if p.is_dir()).problem(out_dir / "report.json"):
        raise DatasetError(
            f"-o {out_dir}: lies inside the pairs under {data_dir} (clean/, annotated/ or "
            "masks/, by name, link or mount); choose another folder"
        )


def evaluate(
    cfg: EvalConfig,
    models: dict[str, Restorer],
    *,
    progress: Progress | None = None,
    curves: dict[str, list[dict]] | None = None,
    meta: dict | None = None,
) -> EvalReport:
    """Score ``models`` (name -> Restorer) and ``cfg.baselines`` on the pairs under
    ``cfg.data_dir``; write report.json, per_image.csv, contact_sheet.png and
    report.html to ``cfg.out``. ``curves`` maps a model name to its training history,
    plotted in the report; ``meta`` is added to report.json. ``cfg.oracle`` adds, for
    each mask-aware model, a row ``NAME (true mask)``: its inpainter given the true
    mask, i.e. what a perfect detector would score."""
    if not models and not cfg.baselines:
        raise ValueError("nothing to score: no models and no baselines")
    progress = progress or Progress()
    started = time.perf_counter()
    data_dir, out_dir = Path(cfg.data_dir), Path(cfg.out)
    _check_out_dir(data_dir, out_dir)
    pairs, failed = check_pairs(find_pairs(data_dir))
    for line in failed:
        log.error("%s", line)
    oracles = {
        f"{name} (true mask)": r for name, r in models.items() if cfg.oracle and r.takes_masks
    }
    scoring = _Scoring(models, oracles, tuple(cfg.baselines), cfg.sheet_rows)
    shown = scoring.first or cfg.baselines[0]
    # As clean runs: batches side by side on the CPU, each scored whole (models,
    # baselines, metrics) in its stream, merged in input order.
    device = next(iter(models.values())).device if models else torch.device("cpu")
    size = inference_batch(device, cfg.batch_size)
    chunks = [pairs[i : i + size] for i in range(0, len(pairs), size)]
    streams, threads = inference_streams(device, cfg.streams, len(chunks))
    with (
        ThreadPoolExecutor(streams) as pool,
        intra_op_threads(threads),
        progress.task("evaluating", total=len(pairs)) as bar,
    ):
        for chunk, done in in_order(chunks, partial(pool.submit, scoring.score), streams):
            scoring.merge(done.result(), failed)
            bar.advance(len(chunk))
        # The gallery's images are restored again: with the same threads, the same bits.
        gallery = _gallery(pairs, scoring.rows, shown, models.get(shown))
    rows = scoring.rows
    summary = {name: _summary([r for r in rows if r["method"] == name]) for name in scoring.methods}
    report = EvalReport(out_dir, summary, rows, failed, time.perf_counter() - started)
    settings = {
        "settings": cfg.model_dump(mode="json"),
        "batch_size": size,
        "streams": streams,
        "threads_per_stream": threads,
    }
    _write_report(report, data_dir, len({r["image"] for r in rows}), settings | (meta or {}))
    if scoring.sheet:
        grid = contact_sheet(scoring.sheet, labels=["annotated", shown, "truth", "mask"])
        write_image(out_dir / "contact_sheet.png", grid)
    write_report(
        out_dir / "report.html",
        title=f"annot-denoise evaluation: {data_dir}",
        methods=summary,
        gallery=gallery,
        curves=curves,
        notes=[
            f"{len({r['image'] for r in rows})} image pairs; gallery: {shown}, chosen by PSNR "
            f"inside the true mask. Baselines: identity (no change), telea (OpenCV inpainting "
            f"given the true mask, an oracle), classical (blind colour + top-hat + Telea).",
            *([f"{len(failed)} pairs could not be read: see report.json"] if failed else []),
        ],
    )
    return report


class _Scoring:
    """Per-image scores of every method, batch by batch, and the contact sheet's rows."""

    def __init__(
        self,
        models: dict[str, Restorer],
        oracles: dict[str, Restorer],
        baselines: tuple[str, ...],
        sheet_rows: int,
    ) -> None:
        self.models, self.oracles, self.baselines = models, oracles, baselines
        self.methods = [*models, *oracles, *baselines]
        self.first = next(iter(models), None)
        self.sheet_rows = sheet_rows
        self.rows: list[dict] = []
        self.sheet: list[list[np.ndarray]] = []

    def score(self, chunk: list) -> _Scored:
        """Every method on one batch of pairs: their rows, failures and sheet rows.
        Touches nothing shared, so batches can be scored side by side."""
        scored = _Scored()
        loaded = []
        for pair in chunk:
            try:
                loaded.append((pair, *read_pair(pair)))
            except ImageReadError as exc:
                scored.failed.append(str(exc))
        annotated = [annot for _, annot, _, _ in loaded]
        masks = [mask for _, _, _, mask in loaded]
        learned = {name: r.restore(annotated) for name, r in self.models.items()}
        learned |= {name: r.inpaint(annotated, masks) for name, r in self.oracles.items()}
        for i, (pair, annot, clean, mask) in enumerate(loaded):
            results = {name: (out[i].image, out[i].detected) for name, out in learned.items()}
            for name in self.oracles:  # the mask was given, not found: no mask scores
                results[name] = (results[name][0], None)
            for name in self.baselines:
                results[name] = BASELINES[name](annot, mask)
            for name in self.methods:
                output, predicted = results[name]
                metrics = score(output, clean, annot, mask, predicted)
                scored.rows.append({"image": pair.name, "method": name, **metrics})
            if i < self.sheet_rows:  # only the first rows of the first batches are kept
                shown = results[self.first or self.baselines[0]][0]
                scored.sheet.append([annot, shown, clean, mask])
        return scored

    def merge(self, scored: _Scored, failed: list[str]) -> None:
        """Add one scored batch, in input order."""
        for line in scored.failed:
            failed.append(line)
            log.error("%s", line)
        self.rows += scored.rows
        self.sheet += scored.sheet[: self.sheet_rows - len(self.sheet)]


@dataclass
class _Scored:
    """What scoring one batch gives."""

    rows: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    sheet: list[list[np.ndarray]] = field(default_factory=list)


def _summary(rows: list[dict]) -> dict[str, float]:
    """One method's means over images; mask metrics when it predicts a mask."""
    keys = METRICS + (MASK_METRICS if rows and "f1" in rows[0] else ())
    return {
        k: _mean([r[k] for r in rows], cap=PSNR_CAP if k.startswith("psnr") else None) for k in keys
    }


def _gallery(pairs, rows: list[dict], method: str, restorer: Restorer | None) -> list:
    """Best, median and worst images of ``method`` by in-mask PSNR, recomputed."""
    scored = sorted(
        (r["psnr_mask"], r["image"])
        for r in rows
        if r["method"] == method and math.isfinite(r["psnr_mask"])
    )
    if not scored:
        return []
    picks = {"best": scored[-1], "median": scored[len(scored) // 2], "worst": scored[0]}
    by_name = {p.name: p for p in pairs}
    items = []
    for label, (value, name) in picks.items():
        annot, _, mask = read_pair(by_name[name])
        if restorer is not None:
            result = restorer.restore([annot])[0]
            after, predicted = result.image, result.mask
        else:
            after, predicted = BASELINES[method](annot, mask)
        items.append(
            GalleryItem(f"{label} (in-mask PSNR {value:.1f} dB)", name, annot, after, predicted)
        )
    return items


def score(
    output: np.ndarray,
    clean: np.ndarray,
    annotated: np.ndarray,
    mask: np.ndarray,
    predicted: np.ndarray | None = None,
) -> dict:
    """All metrics for one output; images compared as float RGB in [0, 1]."""
    out, ref, inp = (to_float(to_rgb(x)) for x in (output, clean, annotated))
    k = 2 * OUTSIDE_MARGIN + 1
    near = cv2.dilate(mask.astype(np.uint8), np.ones((k, k), np.uint8)).astype(bool)
    result = {
        "psnr": psnr(out, ref),
        "ssim": ssim(to_float(to_grey(output)), to_float(to_grey(clean))),
        "psnr_mask": psnr(out, ref, mask),
        "change_outside": mean_abs_change(out, inp, ~near),
    }
    if predicted is not None:
        result.update(mask_scores(predicted, mask))
    return result


def _mean(values: list[float], cap: float | None = None) -> float:
    """Mean over images; NaN (nothing to measure) is skipped, +inf counts as ``cap``."""
    if cap is not None:
        values = [min(v, cap) for v in values]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _write_report(report: EvalReport, data_dir: Path, n_images: int, meta: dict) -> None:
    payload = {
        "data": str(data_dir),
        "images": n_images,
        "failed": report.failed,
        "seconds": round(report.seconds, 2),
        "metrics": report.methods,
        "notes": {
            "psnr": f"PSNR over the whole image (dB); an exact image counts as {PSNR_CAP:g}",
            "psnr_mask": "PSNR inside the true annotation mask (dB), capped the same way",
            "change_outside": f"mean |output - input| outside the true mask dilated by "
            f"{OUTSIDE_MARGIN} px, in 8-bit grey levels",
            "f1": "mask precision/recall/F1/IoU, for methods that predict a mask",
        },
        **meta,
    }
    atomic_write_text(report.out_dir / "report.json", json.dumps(payload, indent=2, allow_nan=True))
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "method", *METRICS, *MASK_METRICS])
    writer.writeheader()
    writer.writerows(report.per_image)
    atomic_write_text(report.out_dir / "per_image.csv", buf.getvalue())
