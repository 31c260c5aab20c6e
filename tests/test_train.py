"""Training: outputs, resume, and the errors a user can hit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from annot_denoise.checkpoint import load_checkpoint
from annot_denoise.config import validate_config
from annot_denoise.rundir import RunFolderError
from annot_denoise.train import TrainingError, train


def _cfg(data: Path, out: Path, **train_kw):
    return validate_config(
        {
            "data": {"root": str(data), "size": [48, 64], "patch": None},
            "model": {"arch": "unet", "width": 8, "depth": 2},
            "optim": {"warmup_steps": 2},
            "train": {"epochs": 2, "batch_size": 4, "workers": 0, "samples": 2, **train_kw},
            "output": {"dir": str(out)},
        }
    )


def test_run_folder_contents(trained_run: Path) -> None:
    for name in ("config.yaml", "best.pt", "last.pt", "metrics.jsonl"):
        assert (trained_run / name).is_file(), name
    rows = [json.loads(x) for x in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("train_loss", "val_loss", "val_psnr", "lr", "seconds", "samples_per_s"):
        assert key in rows[0]
    assert sorted(p.name for p in (trained_run / "samples").iterdir()) == [
        "epoch_001.png",
        "epoch_002.png",
    ]
    assert any((trained_run / "tensorboard").iterdir())
    ckpt = load_checkpoint(trained_run / "last.pt")
    assert ckpt["epoch"] == 1 and ckpt["arch"]["name"] == "unet"
    assert ckpt["config"]["model"]["width"] == 8


def test_training_reduces_the_loss(synth_dir: Path, tmp_path: Path, device: str) -> None:
    result = train(_cfg(synth_dir, tmp_path / "r", epochs=6), device=device)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert result.steps == 6 * 4


def test_resume_equals_uninterrupted(synth_dir: Path, tmp_path: Path, monkeypatch) -> None:
    import annot_denoise.train as train_module

    real_validate, calls = train_module.validate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # killed during epoch 2, after epoch 1's checkpoint
            raise KeyboardInterrupt
        return real_validate(*args, **kwargs)

    torch.use_deterministic_algorithms(True)
    try:
        train(_cfg(synth_dir, tmp_path / "full", epochs=3), device="cpu")
        monkeypatch.setattr(train_module, "validate", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(_cfg(synth_dir, tmp_path / "part", epochs=3), device="cpu")
        monkeypatch.setattr(train_module, "validate", real_validate)
        assert load_checkpoint(tmp_path / "part" / "last.pt")["epoch"] == 0
        result = train(_cfg(synth_dir, tmp_path / "part", epochs=3), device="cpu", resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert result.epochs == 3
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3]


def test_existing_run_is_not_overwritten(trained_run: Path, synth_dir: Path) -> None:
    before = (trained_run / "last.pt").read_bytes()
    with pytest.raises(RunFolderError, match="already holds a run"):
        train(_cfg(synth_dir, trained_run), device="cpu")
    assert (trained_run / "last.pt").read_bytes() == before


def test_resume_without_checkpoint(tmp_path: Path, synth_dir: Path) -> None:
    with pytest.raises(RunFolderError, match="nothing to resume"):
        train(_cfg(synth_dir, tmp_path / "empty"), device="cpu", resume=True)


def test_max_steps_and_autoencoder_sgd(synth_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth_dir, tmp_path / "ae", epochs=5, max_steps=3)
    cfg.model.arch = "autoencoder"
    cfg.optim.name = "sgd"
    result = train(cfg, device="cpu")
    assert result.steps == 3
    assert load_checkpoint(tmp_path / "ae" / "best.pt")["arch"]["name"] == "autoencoder"


def test_nan_loss_stops_with_a_clear_message(synth_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg(synth_dir, tmp_path / "nan", epochs=2)
    cfg.optim.lr = 1e30
    cfg.optim.grad_clip = 0
    with pytest.raises(TrainingError, match=r"became NaN or infinite at step \d+"):
        train(cfg, device="cpu")


def test_maskunet_on_the_fly_run(mask_run: Path) -> None:
    ckpt = load_checkpoint(mask_run / "best.pt")
    assert ckpt["arch"]["name"] == "maskunet"
    assert ckpt["data"]["size"] is None
    assert 0 < ckpt["inference"]["mask_threshold"] < 1
    assert ckpt["inference"]["mask_dilate"] == 1  # model.mask_dilate's default
    rows = [json.loads(x) for x in (mask_run / "metrics.jsonl").read_text().splitlines()]
    assert 0 <= rows[-1]["val_mask_f1"] <= 1


def test_on_the_fly_needs_clean_dir() -> None:
    from annot_denoise.config import ConfigError

    with pytest.raises(ConfigError, match="clean_dir"):
        validate_config({"data": {"on_the_fly": True}})


def test_worker_count_does_not_change_the_result(phantom_dir: Path, tmp_path: Path) -> None:
    """Per-sample seeds travel with the index, so 0 or 2 DataLoader workers (alive
    across epochs) draw the same annotations and train the same weights."""

    def run(workers: int) -> dict:
        cfg = validate_config(
            {
                "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                         "patch": 48, "repeats": 2, "val_split": 0.2},
                "model": {"arch": "maskunet", "width": 4, "depth": 1},
                "train": {"epochs": 2, "batch_size": 4, "workers": workers, "samples": 0},
                "output": {"dir": str(tmp_path / f"w{workers}"), "tensorboard": False},
            }
        )  # fmt: skip
        train(cfg, device="cpu")
        return load_checkpoint(tmp_path / f"w{workers}" / "last.pt")["model"]

    torch.use_deterministic_algorithms(True)
    try:
        a, b = run(0), run(2)
    finally:
        torch.use_deterministic_algorithms(False)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_fine_tune_from_the_default_model(phantom_dir: Path, tmp_path: Path) -> None:
    from annot_denoise.pretrained import PRETRAINED

    def cfg(width: int):
        return validate_config(
            {
                "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                         "patch": 48, "repeats": 1, "val_split": 0.2},
                "model": {"arch": "maskunet", "width": width, "depth": 3, "init": "default"},
                "train": {"epochs": 1, "batch_size": 4, "workers": 0, "samples": 0},
                "output": {"dir": str(tmp_path / f"ft{width}"), "tensorboard": False},
            }
        )  # fmt: skip

    with pytest.raises(TrainingError, match="differs from the config"):
        train(cfg(8), device="cpu")
    cfg16 = cfg(16)
    cfg16.train.max_steps = 1
    cfg16.optim.lr = 1e-12  # one step that changes nothing: the weights are the default's
    train(cfg16, device="cpu")
    tuned = load_checkpoint(tmp_path / "ft16" / "last.pt")["model"]
    shipped = load_checkpoint(PRETRAINED["default"])["model"]
    key = "mask_head.weight"
    assert torch.allclose(tuned[key], shipped[key].float(), atol=1e-3)


def test_new_narrow_detector_in_front_of_the_frozen_default_inpainter(
    phantom_dir: Path, tmp_path: Path
) -> None:
    from annot_denoise.checkpoint import load_model
    from annot_denoise.pretrained import PRETRAINED

    cfg = validate_config(
        {
            "data": {"on_the_fly": True, "clean_dir": str(phantom_dir), "size": None,
                     "patch": 48, "repeats": 1, "val_split": 0.2},
            "model": {"arch": "maskunet", "width": 16, "depth": 3, "detector_width": 8,
                      "init": "default", "freeze": ["inpainter"]},
            "train": {"epochs": 1, "max_steps": 2, "batch_size": 4, "workers": 0, "samples": 0},
            "output": {"dir": str(tmp_path / "fast"), "tensorboard": False},
        }
    )  # fmt: skip
    train(cfg, device="cpu")
    ckpt = load_checkpoint(tmp_path / "fast" / "last.pt")
    tuned, shipped = ckpt["model"], load_checkpoint(PRETRAINED["default"])["model"]
    assert ckpt["arch"]["kwargs"]["detector_width"] == 8
    assert tuned["detector.stem.0.weight"].shape[0] == 8
    inpainter = [k for k in shipped if not k.startswith(("detector.", "mask_head."))]
    # Weights and batch-norm statistics alike: two steps at lr 2e-3 left them as shipped.
    assert inpainter and all(torch.equal(tuned[k], shipped[k].float()) for k in inpainter)
    model, _ = load_model(tmp_path / "fast" / "best.pt")
    assert model.detector.stem[0].out_channels == 8  # it loads back as trained


def test_narrow_detector_and_freeze_are_checked() -> None:
    from annot_denoise.config import ConfigError

    base = {"data": {"root": "x", "size": [64, 64]}}
    with pytest.raises(ConfigError, match="maskunet only"):
        validate_config({**base, "model": {"arch": "unet", "detector_width": 8}})
    with pytest.raises(ConfigError, match="nothing would be trained"):
        validate_config({**base, "model": {"freeze": ["detector", "inpainter"]}})
