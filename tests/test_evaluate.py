"""Evaluation: the model and the baselines on the same images, report files."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from annot_denoise.config import EvalConfig
from annot_denoise.evaluation.baselines import identity, telea
from annot_denoise.evaluation.evaluate import evaluate, score
from annot_denoise.inference import Restorer
from annot_denoise.io import read_image
from annot_denoise.training.checkpoint import load_model


def _restorer(run: Path) -> Restorer:
    import torch

    model, ckpt = load_model(run / "best.pt")
    return Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))


def test_report_files(trained_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    cfg = EvalConfig(data_dir=synth_dir, out=tmp_path / "ev")
    report = evaluate(cfg, {"model": _restorer(trained_run)}, meta={"model_path": "x"})
    assert report.ok
    assert set(report.methods) == {"model", "identity", "telea", "classical"}
    data = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert data["images"] == 20 and data["model_path"] == "x"
    assert data["metrics"]["identity"]["change_outside"] == 0
    rows = list(csv.DictReader((tmp_path / "ev" / "per_image.csv").open()))
    assert len(rows) == 80
    assert {r["method"] for r in rows} == {"model", "identity", "telea", "classical"}
    assert rows[0]["f1"] == ""  # the U-Net predicts no mask
    assert "f1" in data["metrics"]["classical"]
    sheet = read_image(tmp_path / "ev" / "contact_sheet.png")
    assert sheet.ndim == 3 and sheet.shape[1] > 4 * 100


def test_baselines_order_inside_the_mask(
    trained_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    report = evaluate(
        EvalConfig(data_dir=synth_dir, out=tmp_path / "ev"), {"model": _restorer(trained_run)}
    )
    m = report.methods
    # Telea is told where the marks are: it must beat doing nothing inside them.
    assert m["telea"]["psnr_mask"] > m["identity"]["psnr_mask"] + 5
    assert m["telea"]["change_outside"] == 0


def test_score_definitions() -> None:
    clean = np.full((20, 20), 100, np.uint8)
    annot = clean.copy()
    annot[5, :] = 255
    mask = annot != clean
    s = score(annot, clean, annot, mask)
    assert s["change_outside"] == 0 and s["psnr_mask"] < 10
    assert math.isinf(score(clean, clean, annot, mask)["psnr_mask"])
    healed, _ = telea(annot, mask)
    assert score(healed, clean, annot, mask)["psnr_mask"] > 40
    assert np.array_equal(identity(annot, mask)[0], annot)
    # Collateral damage is measured outside the mask grown by 3 px.
    touched = annot.copy()
    touched[8, 0] = 0  # 3 px from the mark: not counted
    touched[0, 0] = 0  # 5 px away: counted
    s = score(touched, clean, annot, mask)
    assert s["change_outside"] == pytest.approx(100 / (20 * 20 - 20 * 7), rel=1e-6)


def test_unreadable_pair_is_reported(trained_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "ds"
    for sub in ("clean", "annotated", "masks"):
        shutil.copytree(synth_dir / sub, root / sub)
    (root / "annotated" / "phantom_0000_c00.png").write_bytes(b"garbage")
    report = evaluate(
        EvalConfig(data_dir=root, out=tmp_path / "ev"), {"model": _restorer(trained_run)}
    )
    assert not report.ok
    assert any("phantom_0000_c00.png" in f for f in report.failed)
    assert len({r["image"] for r in report.per_image}) == 19


def test_exact_images_count_in_the_means_at_the_cap() -> None:
    from annot_denoise.evaluation.evaluate import _mean
    from annot_denoise.evaluation.metrics import PSNR_CAP

    # Dropping the exact image would score 40 dB, as if it had not been cleaned.
    assert _mean([40.0, math.inf], cap=PSNR_CAP) == (40.0 + PSNR_CAP) / 2
    assert _mean([40.0, math.nan], cap=PSNR_CAP) == 40.0  # nothing to measure: skipped
    assert math.isnan(_mean([math.nan]))


def test_oracle_rows_score_the_inpainter_given_the_true_mask(
    mask_run: Path, synth_dir: Path, tmp_path: Path
) -> None:
    cfg = EvalConfig(data_dir=synth_dir, out=tmp_path / "ev", oracle=True)
    report = evaluate(cfg, {"m": _restorer(mask_run)})
    m = report.methods
    assert set(m) == {"m", "m (true mask)", "identity", "telea", "classical"}
    assert "f1" in m["m"] and "f1" not in m["m (true mask)"]  # a given mask is not scored
    # Told where the marks are, the inpainter beats doing nothing inside them.
    assert m["m (true mask)"]["psnr_mask"] > m["identity"]["psnr_mask"]


def test_batches_scored_side_by_side_keep_order_and_failures(
    synth_dir: Path, tmp_path: Path
) -> None:
    """Streams change when a batch is scored, never what is written or in which order."""
    import shutil

    import torch
    from standins import BrightMarksInTwoStages

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    names = sorted(p.name for p in (data / "annotated").iterdir())
    (data / "annotated" / names[3]).write_bytes(b"not an image")  # a failure mid-batch
    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))
    outputs = {}
    for streams in (1, 3):
        out = tmp_path / f"ev{streams}"
        cfg = EvalConfig(data_dir=data, out=out, batch_size=3, streams=streams, sheet_rows=3)
        report = evaluate(cfg, {"model": r})
        assert len(report.failed) == 1 and names[3] in report.failed[0]
        record = json.loads((out / "report.json").read_text())
        assert (record["streams"], record["batch_size"]) == (streams, 3)
        outputs[streams] = (
            (out / "per_image.csv").read_text(),
            read_image(out / "contact_sheet.png"),
        )
    rows = list(csv.DictReader((tmp_path / "ev3" / "per_image.csv").open()))
    assert [r["image"] for r in rows[::4]] == [n for n in names if n != names[3]]
    assert outputs[1][0] == outputs[3][0]
    assert np.array_equal(outputs[1][1], outputs[3][1])
