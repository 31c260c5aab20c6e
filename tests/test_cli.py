"""The command line through Typer's CliRunner, plus real subprocess runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from annot_denoise import __version__
from annot_denoise.cli import app
from annot_denoise.io import read_image

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_version_and_help() -> None:
    assert __version__ in run("--version").output
    result = run("--help")
    assert result.exit_code == 0
    for cmd in ("synth", "train", "eval", "clean", "demo", "drawers", "init-config", "phantoms"):
        assert cmd in result.output
    clean_help = run("clean", "--help").output
    assert "--no-progress" in clean_help and "--device" in clean_help and "--out" in clean_help


def test_drawers_lists_every_builtin() -> None:
    from annot_denoise.synth.drawers import DRAWERS

    out = run("drawers").output
    assert all(name in out for name in DRAWERS)


def test_init_config_is_valid_and_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    assert run("init-config", path).exit_code == 0
    from annot_denoise.config import load_config

    assert load_config(path).model.arch == "maskunet"
    assert run("init-config", path).exit_code == 1
    assert run("init-config", path, "--force").exit_code == 0


def test_train_config_typo_is_exit_2_with_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "cfg.yaml"
    path.write_text("train:\n  epoch: 3\n")
    result = run("train", path)
    assert result.exit_code == 2
    assert f"{path}: train.epoch: unknown key" in result.output
    result = run("train", path, "--set", "train.epochs=0")
    assert result.exit_code == 2


def test_train_passes_validated_config_to_core(tmp_path: Path, monkeypatch) -> None:
    import annot_denoise.training.loop as train_module

    seen = {}

    def fake_train(cfg, *, device, resume, progress):
        seen.update(cfg=cfg, device=device, resume=resume)
        return train_module.RunResult(run_dir=tmp_path, epochs=1, steps=1, best_val_loss=0.1)

    monkeypatch.setattr(train_module, "train", fake_train)
    result = run("train", "--set", "train.epochs=7", "--set", "data.root=x", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert seen["cfg"].train.epochs == 7 and seen["device"] == "cpu" and not seen["resume"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"train": {"epochs": 3}}))
    result = run("train", "--resume", tmp_path / "run", "--no-progress")
    assert result.exit_code == 0, result.output
    assert seen["resume"] and seen["cfg"].output.dir == tmp_path / "run"
    assert seen["cfg"].train.epochs == 3


def test_bad_device_is_a_usage_error(synth_dir: Path, tmp_path: Path) -> None:
    result = run("train", "--set", f"data.root={synth_dir}", "--device", "tpu")
    assert result.exit_code == 2 and "unknown device" in result.output


def test_clean_with_a_bad_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "fake.pt").write_bytes(b"PK\x03\x04 nope")
    result = run("clean", tmp_path / "in", "--model", tmp_path / "fake.pt", "-o", tmp_path / "o")
    assert result.exit_code == 1 and "fake.pt" in result.output and "Traceback" not in result.output


def test_clean_refuses_out_inside_input(trained_run: Path, phantom_dir: Path) -> None:
    result = run("clean", phantom_dir, "--model", trained_run / "best.pt", "-o", phantom_dir / "x")
    assert result.exit_code == 1 and "inside the input folder" in result.output


def test_synth_preview_and_errors(phantom_dir: Path, tmp_path: Path) -> None:
    result = run("synth", phantom_dir, tmp_path / "p", "--preview", "4")
    assert result.exit_code == 0 and (tmp_path / "p" / "preview.png").is_file()
    assert not (tmp_path / "p" / "clean").exists()
    result = run("synth", phantom_dir, tmp_path / "q", "--drawer", "nope")
    assert result.exit_code == 1 and "unknown drawer 'nope'" in result.output
    result = run("synth", phantom_dir, tmp_path / "q", "--colors", "white,purple")
    assert result.exit_code == 1 and "purple" in result.output


def test_synth_interface_labels_and_jpeg_options(phantom_dir: Path, tmp_path: Path) -> None:
    result = run("synth", phantom_dir, tmp_path / "q", "--scanner-ui", "maybe")
    assert result.exit_code == 1 and "maybe" in result.output and "keep" in result.output
    result = run("synth", phantom_dir, tmp_path / "q", "--jpeg-quality", "95-70")
    assert result.exit_code == 1 and "95-70" in result.output
    result = run("synth", phantom_dir, tmp_path / "q", "--labels", tmp_path / "none.txt")
    assert result.exit_code == 2 and "none.txt" in result.output
    assert not (tmp_path / "q").exists()
    (tmp_path / "labels.txt").write_text("Lt Kidney\nRt Kidney\n")
    args = ("--scanner-ui", "off", "--jpeg-quality", "70-95", "--labels", tmp_path / "labels.txt")
    result = run("synth", phantom_dir, tmp_path / "out", *args, "--drawer", "text")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "synth.json").read_text())
    assert record["scanner_ui"] == "off" and record["labels"] == ["Lt Kidney", "Rt Kidney"]
    assert list(record["jpeg_quality"]) == [70, 95]


def test_synth_exit_code_reports_bad_files(phantom_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes((phantom_dir / "phantom_0000.png").read_bytes())
    (src / "b.png").write_bytes(b"")
    result = run("synth", src, tmp_path / "out", "--no-progress")
    assert result.exit_code == 1
    assert "b.png" in result.output and "wrote 1 pairs" in result.output


@pytest.mark.slow
def test_end_to_end_through_the_cli(phantom_dir: Path, tmp_path: Path) -> None:
    """synth -> train (a few steps) -> eval -> clean, as a user would type it."""
    data, run_dir = tmp_path / "data", tmp_path / "run"
    assert run("synth", phantom_dir, data, "--copies", "2", "--no-progress").exit_code == 0
    result = run(
        "train", "--set", f"data.root={data}", "--set", "data.size=[96,128]",
        "--set", "data.patch=null", "--set", "model.width=8", "--set", "model.depth=2",
        "--set", "train.epochs=2",
        "--set", "train.workers=0", "--set", f"output.dir={run_dir}", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (run_dir / "best.pt").is_file()
    result = run(
        "eval", data, "--model", run_dir / "best.pt", "-o", tmp_path / "ev", "--tta",
        "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "identity" in result.output and "telea" in result.output
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["images"] == 20 and report["tta"] is True
    result = run("eval", data, "--model", run_dir / "best.pt", "--oracle", "-o", tmp_path / "o")
    assert result.exit_code == 2 and "mask-aware model" in result.output  # a resized one
    result = run(
        "clean", data / "annotated", "--model", run_dir / "best.pt", "-o", tmp_path / "clean",
        "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0 and "processed 20" in result.output
    result = run(
        "clean", data / "annotated", "--model", run_dir / "best.pt", "--masks", data / "masks",
        "-o", tmp_path / "given",
    )  # fmt: skip
    assert result.exit_code == 2 and "mask-aware model" in result.output  # a resized one
    assert not (tmp_path / "given").exists()
    # The shipped default takes them: synth's masks/ mirror annotated/ by name.
    result = run(
        "clean", data / "annotated", "--masks", data / "masks", "-o", tmp_path / "given",
        "--save-mask", "--no-progress",
    )  # fmt: skip
    assert result.exit_code == 0 and "processed 20" in result.output, result.output
    for mask in (data / "masks").iterdir():
        hole = read_image(tmp_path / "given" / f"{mask.name}.mask.png") > 0
        assert hole[read_image(mask) > 0].all()


def test_real_subprocess_help_and_module_entry() -> None:
    exe = Path(sys.executable).parent / "annot-denoise"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "synth" in result.stdout
    result = subprocess.run(
        [sys.executable, "-m", "annot_denoise", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and __version__ in result.stdout


def test_real_subprocess_clean_exit_code(trained_run: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "junk.png").write_text("junk")
    result = subprocess.run(
        [sys.executable, "-m", "annot_denoise", "clean", str(src), "--model",
         str(trained_run / "best.pt"), "-o", str(tmp_path / "out"), "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 1
    assert "junk.png" in result.stderr and "Traceback" not in result.stderr
