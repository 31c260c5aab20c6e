"""report.html: content, and how it renders in a real (headless) browser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from browser import browser, images_decoded, load

from annot_denoise.evaluation.report import GalleryItem, curves_png, write_report


def _sample_report(path: Path) -> Path:
    rng = np.random.default_rng(0)
    image = (rng.random((60, 80)) * 255).astype(np.uint8)
    after = image.copy()
    after[10:12] = 0
    mask = np.zeros((60, 80), bool)
    mask[10:12] = True
    rows = [
        {
            "epoch": e,
            "train_loss": 1 / e,
            "val_loss": 1.2 / e,
            "val_psnr": 30 + e,
            "val_psnr_mask": 20 + e,
        }
        for e in range(1, 6)
    ]
    return write_report(
        path,
        title="test <report>",
        methods={"model": {"psnr": 40.0, "ssim": 0.99, "psnr_mask": 25.0, "change_outside": 0.0,
                           "f1": 0.93}, "identity": {"psnr": 30.0, "ssim": 0.98,
                           "psnr_mask": 9.0, "change_outside": 0.0}},
        gallery=[GalleryItem("best", "a.png", image, after, mask),
                 GalleryItem("worst", "b.png", np.stack([image] * 3, 2), after, None)],
        curves={"model": rows},
        notes=["two images"],
    )  # fmt: skip


def test_report_is_self_contained(tmp_path: Path) -> None:
    page = _sample_report(tmp_path / "report.html").read_text()
    assert "test &lt;report&gt;" in page  # titles are escaped
    assert page.count("<img") == 1 + 2 * 4  # curves + two gallery rows of four
    assert "src='data:image/png;base64," in page and "http" not in page
    assert "mask F1" in page and "0.9300" in page
    assert curves_png({"model": []})[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_writes_report_html(trained_run: Path, synth_dir: Path, tmp_path: Path) -> None:
    import torch

    from annot_denoise.config import EvalConfig
    from annot_denoise.evaluation.evaluate import evaluate
    from annot_denoise.inference import Restorer
    from annot_denoise.training.checkpoint import load_model

    model, ckpt = load_model(trained_run / "best.pt")
    restorer = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    evaluate(
        EvalConfig(data_dir=synth_dir, out=tmp_path),
        {"model": restorer},
        curves={"model": ckpt["history"]},
    )
    page = (tmp_path / "report.html").read_text()
    assert page.count("<img") == 1 + 3 * 4  # curves + best/median/worst rows
    assert "best (in-mask PSNR" in page and "worst (in-mask PSNR" in page


@pytest.mark.skipif(browser() is None, reason="no Chromium/Chrome (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    """Load the page the way a user does and check that every image decodes."""
    path = _sample_report(tmp_path / "report.html")
    result = load(path, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    decoded = images_decoded(result.stdout)
    assert decoded, "the page's load handler did not run"
    ok, total = decoded
    assert total == 9 and ok == total
    assert "Uncaught" not in result.stderr
