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
from annot_denoise.inference import DEFAULT_STEPS, STEPS, PostprocessConfig, Restorer, with_steps
from annot_denoise.inference.postprocess import STAGES
from annot_denoise.io import write_image
from annot_denoise.phantom import make_phantom
from annot_denoise.synth.pipeline import annotate
from annot_denoise.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_the_registry_and_its_config_agree() -> None:
    cfg = PostprocessConfig()
    assert cfg.steps == DEFAULT_STEPS == tuple(STEPS)
    for name, step in STEPS.items():
        assert step.hooks and set(step.hooks) <= set(STAGES), name
        assert isinstance(cfg.params(name), step.config), name
        for hook in step.hooks.values():
            assert hook.__doc__, f"{name}: a step says what it does (docs/postprocess.md)"


@pytest.mark.parametrize(
    ("steps", "reason"),
    [
        (("no_such_step",), "unknown step"),
        (("grey_scan", "scan_edges"), "order"),
        (("grey_scan", "grey_scan"), "twice"),
    ],
)
def test_a_step_list_is_validated(steps, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        PostprocessConfig(steps=steps)


def test_step_constants_are_strict() -> None:
    with pytest.raises(ValidationError):
        PostprocessConfig.model_validate({"telea_blend": {"share": 2.0}})
    with pytest.raises(ValidationError):
        PostprocessConfig.model_validate({"telea_blend": {"sahre": 0.5}})


def test_with_steps_keeps_the_models_constants() -> None:
    base = PostprocessConfig.model_validate({"telea_blend": {"share": 0.4}})
    assert with_steps(base, None) is base and with_steps(base, "default") is base
    assert with_steps(base, "none").steps == ()
    picked = with_steps(base, "telea_blend, grey_scan")
    assert picked.steps == ("telea_blend", "grey_scan") and picked.telea_blend.share == 0.4


def _scan() -> tuple[np.ndarray, np.ndarray]:
    scan = make_phantom(120, 160, np.random.default_rng(0), color=True)
    _, annotated, mask, _ = annotate(scan, "mixed", np.random.default_rng(1))
    return annotated, mask


def test_no_steps_is_the_networks_repair_with_the_input_copied_back() -> None:
    image, _ = _scan()
    image[2:12, 2:40] = 255  # a label on the black corner: the steps fill it black
    none = PostprocessConfig(steps=())
    r = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"), postprocess=none)
    result = r.restore([image])[0]
    # The stand-in marks the bright pixels and paints the mean of the rest of the
    # crop; with no steps that is all that happens, and only inside its hole.
    assert np.array_equal(result.image[~result.mask], image[~result.mask])
    assert np.array_equal(result.detected, image[..., 0] > 0.9 * 255)
    full = Restorer(BrightMarksInTwoStages(), channels=3, device=torch.device("cpu"))
    assert not np.array_equal(full.restore([image])[0].image, result.image)


@pytest.mark.parametrize("name", DEFAULT_STEPS)
def test_every_step_can_be_switched_off_alone(name: str) -> None:
    image, mask = _scan()
    steps = tuple(s for s in DEFAULT_STEPS if s != name)
    r = Restorer(
        BrightMarksInTwoStages(),
        channels=3,
        device=torch.device("cpu"),
        postprocess=PostprocessConfig(steps=steps),
    )
    for result in (r.restore([image])[0], r.inpaint([image], [mask])[0]):
        assert result.image.shape == image.shape
        assert np.array_equal(result.image[~result.mask], image[~result.mask])


def test_a_checkpoint_carries_its_steps_and_a_bad_list_is_refused(
    tmp_path: Path, mask_run: Path
) -> None:
    ckpt = load_checkpoint(mask_run / "best.pt")
    assert PostprocessConfig.model_validate(ckpt["inference"]["postprocess"]) == PostprocessConfig()
    ckpt["inference"]["postprocess"] = {"steps": ["grey_scan"]}
    save_checkpoint(tmp_path / "some.pt", ckpt)
    from annot_denoise.training.checkpoint import model_from_checkpoint

    loaded = load_checkpoint(tmp_path / "some.pt")
    r = Restorer.from_checkpoint(model_from_checkpoint(loaded), loaded, torch.device("cpu"))
    assert r.postprocess.steps == ("grey_scan",)
    ckpt["inference"]["postprocess"] = {"steps": ["grey_scan", "scan_edges"]}
    save_checkpoint(tmp_path / "bad.pt", ckpt)
    with pytest.raises(CheckpointError, match="postprocess"):
        load_checkpoint(tmp_path / "bad.pt")


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
            *("--postprocess", "telea_blend,grey_scan", "--no-progress"),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["postprocess"] == ["telea_blend", "grey_scan"]
