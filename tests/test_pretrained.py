"""The shipped default model and model export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from annot_denoise.cli import app
from annot_denoise.inference import Restorer
from annot_denoise.phantom import make_phantom
from annot_denoise.pretrained import PRETRAINED, describe_models, resolve_model
from annot_denoise.synth.pipeline import annotate
from annot_denoise.training.checkpoint import (
    CheckpointError,
    export_model,
    load_checkpoint,
    load_model,
)


def test_shipped_model_has_what_it_needs() -> None:
    path = PRETRAINED["default"]
    assert path.is_file() and path.stat().st_size < 5e6
    ckpt = load_checkpoint(path)
    assert ckpt["arch"]["name"] == "maskunet"
    assert ckpt["data"]["size"] is None and ckpt["data"]["channels"] == 3
    assert {"mask_threshold", "mask_dilate"} <= set(ckpt["inference"])
    assert "optimizer" not in ckpt and ckpt["provenance"]["steps"] > 0
    assert ckpt["config"]["model"]["arch"] == "maskunet"


def test_resolve_model() -> None:
    assert resolve_model(None) == PRETRAINED["default"]
    assert resolve_model("default") == PRETRAINED["default"]
    assert resolve_model("some/run/best.pt") == Path("some/run/best.pt")
    with pytest.raises(CheckpointError, match="neither a shipped model"):
        resolve_model("nonsense")


def test_a_retired_model_says_why(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(CheckpointError, match=r"'fast' was retired: .*use 'default'"):
        resolve_model("fast")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fast").write_bytes(b"")  # a file of that name is the user's own
    assert resolve_model("fast") == Path("fast")


def test_shipped_model_removes_marks_from_a_colour_scan() -> None:
    """Zero-shot on a 1000x700 colour scan: the marks go, the rest stays bit for bit."""
    model, ckpt = load_model(PRETRAINED["default"])
    restorer = Restorer.from_checkpoint(model, ckpt, torch.device("cpu"))
    clean = make_phantom(700, 1000, np.random.default_rng(11), color=True)
    _, annotated, mask, _ = annotate(clean, "calipers", np.random.default_rng(3), colors=["yellow"])
    out = restorer.restore([annotated])[0]
    assert np.array_equal(out.image[~out.mask], annotated[~out.mask])
    err_before = np.abs(annotated[mask].astype(int) - clean[mask]).mean()
    err_after = np.abs(out.image[mask].astype(int) - clean[mask]).mean()
    assert err_after < err_before / 4
    assert out.detected[mask].mean() > 0.7  # most of the marks are found


def test_describe_and_cli_models() -> None:
    rows = describe_models()
    assert [r["name"] for r in rows] == ["default"] and rows[0]["parameters"] > 1e5
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0 and "default" in result.output and "maskunet" in result.output


def test_clean_without_model_uses_default(tmp_path: Path) -> None:
    from annot_denoise.io import write_image

    write_image(tmp_path / "in" / "a.png", make_phantom(96, 128, np.random.default_rng(0)))
    result = CliRunner().invoke(app, ["clean", str(tmp_path / "in"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert "shipped 'default' model" in result.output
    assert (tmp_path / "o" / "a.png").is_file()
    record = json.loads((tmp_path / "o" / "clean_run.json").read_text())
    shipped = torch.load(PRETRAINED["default"], weights_only=True, map_location="cpu")
    assert record["tta"] is False
    assert record["mask_threshold"] == shipped["inference"]["mask_threshold"]


def test_clean_tta_is_recorded_and_writes_only_inside_its_mask(tmp_path: Path) -> None:
    from annot_denoise.io import read_image, write_image
    from annot_denoise.synth.pipeline import annotate

    scan = make_phantom(96, 128, np.random.default_rng(0))
    _, marked, mask, _ = annotate(scan, "calipers", np.random.default_rng(1))
    write_image(tmp_path / "in" / "a.png", marked)
    for flag in ([], ["--tta"]):
        out = tmp_path / ("tta" if flag else "plain")
        args = ["clean", str(tmp_path / "in"), "-o", str(out), "--save-mask", *flag]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert json.loads((out / "clean_run.json").read_text())["tta"] is bool(flag)
    plain, tta = read_image(tmp_path / "plain" / "a.png"), read_image(tmp_path / "tta" / "a.png")
    assert not np.array_equal(plain, tta)
    written = read_image(tmp_path / "tta" / "a.png.mask.png") > 0
    assert written[mask].mean() > 0.5  # most of the calipers are found (how much: the weights')
    assert np.array_equal(tta[~written], marked[~written])


def test_export_strips_training_state(mask_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pt"
    export_model(mask_run / "best.pt", out)
    assert out.stat().st_size < (mask_run / "best.pt").stat().st_size
    ckpt = load_checkpoint(out)
    assert "optimizer" not in ckpt and "rng" not in ckpt
    assert all(v.dtype != torch.float32 for v in ckpt["model"].values())
    full, _ = load_model(mask_run / "best.pt")
    half, _ = load_model(out)
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        a, b = full(x)["output"], half(x)["output"]
    assert torch.allclose(a, b, atol=2e-2)
    result = CliRunner().invoke(app, ["export", str(mask_run / "best.pt"), str(tmp_path / "m2.pt")])
    assert result.exit_code == 0 and (tmp_path / "m2.pt").is_file()
