"""Evaluation against ground truth: the model and the baselines, same images, same run.

For every pair in a synth-style folder we clean the annotated scan with the
model and with each baseline, then measure against the clean original at the
file's native resolution: PSNR and SSIM over the whole image, PSNR inside the
annotation mask, and the mean absolute change outside it (collateral damage).
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from annot_denoise.baselines import BASELINES
from annot_denoise.data import annotation_mask, check_pairs, find_pairs
from annot_denoise.inference import Restorer
from annot_denoise.io import (
    ImageReadError,
    atomic_write_bytes,
    atomic_write_text,
    read_image,
    to_float,
    to_grey,
    to_rgb,
    write_image,
)
from annot_denoise.metrics import mean_abs_change, psnr, ssim
from annot_denoise.progress import Progress
from annot_denoise.sheet import contact_sheet

log = logging.getLogger(__name__)

METRICS = ("psnr", "ssim", "psnr_mask", "change_outside")


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


def evaluate(
    data_dir: Path,
    restorer: Restorer,
    out_dir: Path,
    *,
    model_name: str = "model",
    batch_size: int = 4,
    sheet_rows: int = 6,
    progress: Progress | None = None,
    meta: dict | None = None,
) -> EvalReport:
    """Score ``restorer`` and the baselines on ``data_dir``; write the report files."""
    progress = progress or Progress()
    started = time.perf_counter()
    pairs, failed = check_pairs(find_pairs(data_dir))
    for line in failed:
        log.error("%s", line)
    methods = [model_name, *BASELINES]
    rows: list[dict] = []
    sheet: list[list[np.ndarray]] = []
    with progress.task("evaluating", total=len(pairs)) as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            loaded = []
            for pair in chunk:
                try:
                    loaded.append((pair, *_load(pair)))
                except ImageReadError as exc:
                    failed.append(str(exc))
                    log.error("%s", exc)
            outputs = restorer.restore([annot for _, annot, _, _ in loaded])
            for (pair, annot, clean, mask), model_out in zip(loaded, outputs):
                results = {model_name: model_out}
                for name, fn in BASELINES.items():
                    results[name] = fn(annot, mask)
                for name in methods:
                    rows.append(
                        {
                            "image": pair.name,
                            "method": name,
                            **score(results[name], clean, annot, mask),
                        }
                    )
                if len(sheet) < sheet_rows:
                    sheet.append([annot, model_out, clean, mask])
            bar.advance(len(chunk))
    summary = {
        name: {m: _mean([r[m] for r in rows if r["method"] == name]) for m in METRICS}
        for name in methods
    }
    out_dir = Path(out_dir)
    report = EvalReport(out_dir, summary, rows, failed, time.perf_counter() - started)
    _write_report(report, data_dir, len({r["image"] for r in rows}), meta or {})
    if sheet:
        grid = contact_sheet(sheet, labels=["annotated", model_name, "truth", "mask"])
        write_image(out_dir / "contact_sheet.png", grid)
    return report


def score(output: np.ndarray, clean: np.ndarray, annotated: np.ndarray, mask: np.ndarray) -> dict:
    """All metrics for one output; images compared as float RGB in [0, 1]."""
    out, ref, inp = (to_float(to_rgb(x)) for x in (output, clean, annotated))
    return {
        "psnr": psnr(out, ref),
        "ssim": ssim(to_float(to_grey(output)), to_float(to_grey(clean))),
        "psnr_mask": psnr(out, ref, mask),
        "change_outside": mean_abs_change(out, inp, ~mask),
    }


def _load(pair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    annot, clean = read_image(pair.annotated), read_image(pair.clean)
    if annot.shape != clean.shape:
        raise ImageReadError(
            pair.annotated, f"shape {annot.shape} differs from clean {clean.shape}"
        )
    mask = to_grey(read_image(pair.mask)) > 0 if pair.mask else annotation_mask(annot, clean)
    return annot, clean, mask


def _mean(values: list[float]) -> float:
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
            "psnr_mask": "PSNR inside the true annotation mask (dB)",
            "change_outside": "mean |output - input| outside the mask, 8-bit grey levels",
        },
        **meta,
    }
    atomic_write_text(report.out_dir / "report.json", json.dumps(payload, indent=2, allow_nan=True))
    buf = _io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["image", "method", *METRICS])
    writer.writeheader()
    writer.writerows(report.per_image)
    atomic_write_bytes(report.out_dir / "per_image.csv", buf.getvalue().encode("utf-8"))
