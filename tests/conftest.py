"""Shared fixtures: every test makes its own images; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def bench():
    """A loader of bench/ scripts as modules: ``bench("real")`` is bench/real.py."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parent.parent / "bench" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="cpu", help="device for model tests (cpu, cuda, ...)")


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten small grey phantom scans (96x128)."""
    from annot_denoise.phantom import write_phantoms

    out = tmp_path_factory.mktemp("phantoms")
    write_phantoms(out, 10, seed=3, size=(96, 128))
    return out


@pytest.fixture(scope="session")
def synth_dir(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synth-style dataset (clean/ annotated/ masks/ manifest.jsonl) of 20 pairs."""
    from annot_denoise.synth.pipeline import synth

    out = tmp_path_factory.mktemp("synth")
    report = synth(phantom_dir, out, copies=2, seed=0)
    assert report.ok
    return out


@pytest.fixture(scope="session")
def trained_run(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory, device: str) -> Path:
    """A run folder from a few training steps of a tiny U-Net on resized pairs."""
    from annot_denoise.config import validate_config
    from annot_denoise.training.loop import train

    run = tmp_path_factory.mktemp("run") / "run"
    cfg = validate_config(
        {
            "data": {"root": str(synth_dir), "size": [96, 128], "patch": None},
            "model": {"arch": "unet", "width": 8, "depth": 2},
            "train": {"epochs": 2, "batch_size": 4, "workers": 0, "samples": 2},
            "output": {"dir": str(run)},
        }
    )
    train(cfg, device=device)
    return run


def textured(height: int, width: int, channels: int = 1, dtype=np.uint8, seed: int = 0):
    """A noisy test image of the given layout and dtype."""
    rng = np.random.default_rng(seed)
    top = 65535 if dtype == np.uint16 else 255
    shape = (height, width) if channels == 1 else (height, width, channels)
    return rng.integers(0, top + 1, size=shape, dtype=np.int64).astype(dtype)


@pytest.fixture(scope="session")
def mask_run(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory, device: str) -> Path:
    """A maskunet trained for a few steps on the fly, on native-scale patches."""
    from annot_denoise.config import validate_config
    from annot_denoise.training.loop import train

    run = tmp_path_factory.mktemp("maskrun") / "run"
    cfg = validate_config(
        {
            "data": {
                "on_the_fly": True,
                "clean_dir": str(phantom_dir),
                "size": None,
                "patch": 64,
                "repeats": 2,
                "val_split": 0.2,
            },
            "model": {"arch": "maskunet", "width": 8, "depth": 2},
            "optim": {"warmup_steps": 2},
            "train": {"epochs": 2, "batch_size": 4, "workers": 0, "samples": 2},
            "output": {"dir": str(run)},
        }
    )
    train(cfg, device=device)
    return run
