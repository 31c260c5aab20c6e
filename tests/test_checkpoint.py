"""Checkpoints: our own load, and refusal of anything else."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from annot_denoise.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint


def test_load_model_from_run(trained_run: Path) -> None:
    model, ckpt = load_model(trained_run / "best.pt")
    assert not model.training
    assert ckpt["data"]["size"] == [96, 128]
    assert ckpt["version"]


def test_missing_and_truncated(tmp_path: Path, trained_run: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    data = (trained_run / "best.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"text\.pt: not a readable"):
        load_checkpoint(tmp_path / "text.pt")


def test_foreign_checkpoint(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an annot-denoise checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_newer_format_and_unknown_arch(tmp_path: Path, trained_run: Path) -> None:
    ckpt = load_checkpoint(trained_run / "best.pt")
    torch.save({**ckpt, "format": 99}, tmp_path / "new.pt")
    with pytest.raises(CheckpointError, match="upgrade annot-denoise"):
        load_checkpoint(tmp_path / "new.pt")
    torch.save({**ckpt, "arch": {"name": "resnet", "kwargs": {}}}, tmp_path / "arch.pt")
    with pytest.raises(CheckpointError, match="architecture 'resnet' is unknown"):
        load_checkpoint(tmp_path / "arch.pt")
    bad = {**ckpt, "arch": {**ckpt["arch"], "kwargs": {**ckpt["arch"]["kwargs"], "width": 4}}}
    save_checkpoint(tmp_path / "shape.pt", bad)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(tmp_path / "shape.pt")


class _Payload:
    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_payload_is_refused_without_running(tmp_path: Path) -> None:
    target = tmp_path / "pwned.txt"
    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"arch": {"name": "unet"}, "model": _Payload(str(target))}, fh)
    torch.save({"arch": {"name": "unet"}, "model": _Payload(str(target))}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(CheckpointError, match=r"refused: it contains Python objects"):
            load_checkpoint(tmp_path / name)
    assert not target.exists()
