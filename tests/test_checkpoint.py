"""Checkpoints: our own load, and refusal of anything else."""

from __future__ import annotations

import inspect
import math
import pickle
from pathlib import Path

import pytest
import torch

from annot_denoise.models import MODELS
from annot_denoise.pretrained import PRETRAINED
from annot_denoise.training.checkpoint import (
    ARCH_ARGS,
    CheckpointError,
    export_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)


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


# --------------------------------------------------------------------------- metadata


def _crafted(tmp_path: Path, source: Path, change, name: str = "crafted.pt") -> Path:
    """A copy of ``source`` with ``change`` applied to its dict (what an attacker can do)."""
    ckpt = torch.load(source, map_location="cpu", weights_only=True)
    change(ckpt)
    torch.save(ckpt, tmp_path / name)
    return tmp_path / name


def _kwargs(**kw):
    return lambda c: c["arch"]["kwargs"].update(kw)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (_kwargs(width=10**9), "arch.kwargs.width"),
        (_kwargs(width=2), "arch.kwargs.width"),
        (_kwargs(depth=0), "arch.kwargs.depth"),
        (_kwargs(width="8"), "arch.kwargs.width"),
        (_kwargs(width=8.0), "arch.kwargs.width"),
        (_kwargs(width=True), "arch.kwargs.width"),
        (_kwargs(norm="layer"), "arch.kwargs.norm"),
        (_kwargs(evil=1), "arch.kwargs.evil"),
        (_kwargs(detector_width=8), "arch.kwargs.detector_width"),  # maskunet only
        (lambda c: c["arch"].update(kwargs=[1, 2]), "arch.kwargs"),
        (lambda c: c["data"].update(channels=2), "data.channels"),
        (lambda c: c["data"].update(channels="3"), "data.channels"),
        (lambda c: c["data"].update(size=[8, 8]), "data.size"),
        (lambda c: c["data"].update(size=[10**6, 10**6]), "data.size"),
        (lambda c: c["data"].update(size=[96]), "data.size"),
        (lambda c: c["data"].update(size="96x128"), "data.size"),
        (lambda c: c.pop("data"), "data"),
        (lambda c: c.update(data=None), "data"),
        (
            lambda c: c.update(inference={"mask_threshold": math.nan}),
            "inference.mask_threshold",
        ),
        (lambda c: c.update(inference={"mask_threshold": 1.5}), "inference.mask_threshold"),
        (lambda c: c.update(inference={"mask_threshold": "high"}), "inference.mask_threshold"),
        (lambda c: c.update(inference={"mask_dilate": 10**6}), "inference.mask_dilate"),
        (lambda c: c.update(inference={"mask_dilate": 1.5}), "inference.mask_dilate"),
        (lambda c: c.update(inference=None), "inference"),
        (lambda c: c.update(history=[{"loss": 1.0}]), "history.0.epoch"),
        (lambda c: c.update(history="all good"), "history"),
        (lambda c: c.update(epoch=-1), "epoch"),
        (lambda c: c.update(config=[]), "config"),
        (lambda c: c["model"].update({"head.weight": [0.0]}), "model.head.weight"),
    ],
)
def test_metadata_is_validated_before_anything_is_built(
    tmp_path: Path, trained_run: Path, change, key: str
) -> None:
    path = _crafted(tmp_path, trained_run / "best.pt", change)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert len(message.splitlines()) == 1 and len(message) < 400


def test_a_huge_width_is_refused_at_once(tmp_path: Path, trained_run: Path) -> None:
    import time

    path = _crafted(tmp_path, trained_run / "best.pt", _kwargs(width=10**9, depth=7))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"arch\.kwargs\.width"):
        load_model(path)
    assert time.perf_counter() - start < 0.5


def test_weights_are_checked_against_the_architecture_without_building_it(
    tmp_path: Path, trained_run: Path
) -> None:
    """Bounds a config allows (width 512, depth 7) still describe a network of billions
    of weights: the shapes are compared on the meta device, nothing is allocated."""
    import time

    path = _crafted(tmp_path, trained_run / "best.pt", _kwargs(width=512, depth=7))
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"weights do not fit 'unet'.*expected \[512, "):
        load_checkpoint(path)
    assert time.perf_counter() - start < 1.0
    path = _crafted(tmp_path, trained_run / "best.pt", lambda c: c["model"].pop("head.bias"))
    with pytest.raises(CheckpointError, match=r"1 missing, e\.g\. 'head\.bias'"):
        load_checkpoint(path)


def test_channels_must_agree(tmp_path: Path, trained_run: Path) -> None:
    path = _crafted(tmp_path, trained_run / "best.pt", lambda c: c["data"].update(channels=1))
    with pytest.raises(CheckpointError, match=r"in_channels is 3 but data\.channels is 1"):
        load_checkpoint(path)


def test_unknown_keys_outside_the_arguments_are_tolerated(
    tmp_path: Path, trained_run: Path
) -> None:
    def newer(c: dict) -> None:
        c.update(future={"anything": [1, 2]})
        c["data"]["colour_space"] = "srgb"
        c["inference"]["future_setting"] = ["telea_blend"]

    model, ckpt = load_model(_crafted(tmp_path, trained_run / "best.pt", newer))
    assert ckpt["future"] == {"anything": [1, 2]} and not model.training


@pytest.mark.parametrize("name", sorted(PRETRAINED))
def test_shipped_models_pass_validation(name: str) -> None:
    model, ckpt = load_model(PRETRAINED[name])
    assert ckpt["arch"]["name"] == "maskunet" and not model.training


@pytest.mark.parametrize("name", sorted(MODELS))
def test_argument_schema_matches_the_constructor(name: str) -> None:
    """Every architecture's validated arguments are exactly its constructor's."""
    params = inspect.signature(MODELS[name]).parameters
    assert set(ARCH_ARGS[name].model_fields) == set(params)
    for arg, field in ARCH_ARGS[name].model_fields.items():
        assert field.default == params[arg].default, arg


def test_a_folder_is_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="is a folder, not a checkpoint file"):
        load_checkpoint(tmp_path)


# --------------------------------------------------------------------------- export


def test_export_refuses_a_folder_or_a_path_under_a_file(tmp_path: Path, trained_run: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    for dst, reason in [
        (tmp_path / "folder", "is a folder"),
        (tmp_path / "file" / "model.pt", "is not a folder"),
        (tmp_path / "file" / "deeper" / "model.pt", "is not a folder"),
    ]:
        with pytest.raises(CheckpointError, match=reason) as info:
            export_model(trained_run / "best.pt", dst)
        assert str(info.value).startswith(f"{dst}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]
    assert not any((tmp_path / "folder").iterdir())


def test_export_can_store_a_threshold_chosen_elsewhere(tmp_path: Path, trained_run: Path) -> None:
    trained = load_checkpoint(trained_run / "best.pt")["inference"]["mask_threshold"]
    wanted = 0.9 if trained != 0.9 else 0.7
    export_model(trained_run / "best.pt", tmp_path / "model.pt", mask_threshold=wanted)
    exported = load_checkpoint(tmp_path / "model.pt")
    assert exported["inference"]["mask_threshold"] == wanted
    assert exported["provenance"]["mask_threshold"] == {"trained": trained, "set": wanted}
    with pytest.raises(CheckpointError, match="between 0 and 1"):
        export_model(trained_run / "best.pt", tmp_path / "other.pt", mask_threshold=1.5)
    assert not (tmp_path / "other.pt").exists()


def test_export_of_something_else_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a readable checkpoint"):
        export_model(tmp_path / "notes.txt", tmp_path / "out" / "model.pt")
    assert not (tmp_path / "out").exists()
