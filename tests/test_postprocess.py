"""Post-processing steps: the config that lists them, switching them off, and where
the choice is stored and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from standins import BrightMarksInTwoStages
from typer.testing import CliRunner

from annot_denoise.cli import app
from annot_denoise.inference import DEFAULT_STEPS, PostprocessConfig, Restorer
from annot_denoise.io import write_image
from annot_denoise.phantom import make_phantom
from annot_denoise.synth.pipeline import annotate
from annot_denoise.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        (("no_such_step",), "unknown step"),
        (("telea_blend",), "deleted on .* by the ablation"),
    ],
)
def test_a_step_list_is_validated(steps, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        PostprocessConfig(steps=steps)


def _scan() -> tuple[np.ndarray, np.ndarray]:
    scan = make_phantom(120, 160, np.random.default_rng(0), color=True)
    _, annotated, mask, _ = annotate(scan, "mixed", np.random.default_rng(1))
    return annotated, mask


def test_no_steps_is_the_networks_repair_with_the_input_copied_back() -> None:
    image, _ = _scan()
    image[2:12, 2:40] = 255  # a label on the black corner
    none = PostprocessConfig(steps=())
    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"), postprocess=none)
    result = r.restore([image])[0]
    # The stand-in marks the bright pixels and paints the mean of the rest of the
    # crop; with no steps that is all that happens, and only inside its hole.
    assert np.array_equal(result.image[~result.mask], image[~result.mask])
    assert np.array_equal(result.detected, image[..., 0] > 0.9 * 255)


def test_clean_and_eval_take_and_record_the_steps(tmp_path: Path, mask_run: Path) -> None:
    image, mask = _scan()
    write_image(tmp_path / "in" / "a.png", image)
    model = str(mask_run / "best.pt")
    args = ["clean", str(tmp_path / "in"), "--model", model, "--no-progress"]
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "out"), "--postprocess", "none"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "clean_run.json").read_text())
    assert record["postprocess"] == []
    result = CliRunner().invoke(app, [*args, "-o", str(tmp_path / "o2"), "--postprocess", "bogus"])
    assert result.exit_code == 2 and "unknown step" in result.output, result.output
    for sub, data in (("clean", image), ("annotated", image), ("masks", mask * 255)):
        write_image(tmp_path / "pairs" / sub / "a.png", data.astype(np.uint8))
    result = CliRunner().invoke(
        app,
        [
            *("eval", str(tmp_path / "pairs"), "--model", model, "-o", str(tmp_path / "ev")),
            *("--postprocess", "default", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["postprocess"] == list(DEFAULT_STEPS)


def test_a_model_saved_with_since_deleted_steps_loads_without_them(
    tmp_path: Path, mask_run: Path, caplog
) -> None:
    """A model fine-tuned before the ablation deleted steps lists them (and their
    constants): it still loads, runs the steps that remain, and says what it skips."""
    ckpt = load_checkpoint(mask_run / "best.pt")
    ckpt["inference"]["postprocess"] = {
        "steps": ["scan_edges", "flat_background", "telea_blend", "grey_scan"],
        "grey_scan": {"tolerance": 3},
        "telea_blend": {"share": 0.4},
    }
    save_checkpoint(tmp_path / "old.pt", ckpt)
    with caplog.at_level("WARNING"):
        loaded = load_checkpoint(tmp_path / "old.pt")
    assert "flat_background" in caplog.text and "telea_blend" in caplog.text
    config = PostprocessConfig.model_validate(loaded["inference"]["postprocess"])
    assert config.steps == ()  # every step it lists has been deleted since
    # A name that never was a step is still refused when the model is loaded.
    ckpt["inference"]["postprocess"] = {"steps": ["no_such_step"]}
    save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(CheckpointError, match="postprocess"):
        load_checkpoint(tmp_path / "bad.pt")
    # Asked for by name, a deleted step is an error that says so.
    result = CliRunner().invoke(
        app,
        [
            *("clean", str(tmp_path), "--model", str(tmp_path / "old.pt"), "--no-progress"),
            *("-o", str(tmp_path / "out"), "--postprocess", "grey_scan"),
        ],
    )
    assert result.exit_code == 2 and "deleted" in result.output, result.output
