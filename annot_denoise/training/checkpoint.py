"""Checkpoints: plain dicts that carry their own architecture and config.

Saved atomically; loaded with ``torch.load(weights_only=True)`` only, so a
file carrying a pickle payload is refused without running it. What a loaded
checkpoint says about itself (architecture, input channels and size, inference
settings, history) is validated as strictly as a config, and its weights are
checked against the architecture's shapes on the ``meta`` device, before any
network is built: a crafted file cannot make us allocate what it asks for.
"""

from __future__ import annotations

import io
import logging
import pickle
import pickletools
import re
from pathlib import Path
from typing import Annotated, Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from annot_denoise import __version__
from annot_denoise.config import (
    MASK_DILATE,
    Channels,
    Depth,
    MaskDilate,
    Norm,
    Width,
    check_size,
    shown,
)
from annot_denoise.inference.postprocess import PostprocessConfig, without_removed
from annot_denoise.io import atomic_write_bytes
from annot_denoise.models import MODELS, build_model

log = logging.getLogger(__name__)

FORMAT = 1  # bump when a checkpoint could no longer be read by older code


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and why."""


class _NetArgs(BaseModel):
    """Constructor arguments of ``autoencoder`` and ``unet`` (see their signatures)."""

    # A key we do not know would reach the constructor as an unexpected argument.
    model_config = ConfigDict(extra="forbid", strict=True)
    in_channels: Channels = 3
    width: Width = 32
    depth: Depth = 4
    norm: Norm = "batch"


class _MaskNetArgs(_NetArgs):
    """Constructor arguments of ``maskunet``."""

    width: Width = 16
    depth: Depth = 3
    train_dilate: MaskDilate = 2
    smooth_steps: Annotated[int, Field(ge=0, le=64)] = 4
    detector_width: Width | None = None


ARCH_ARGS: dict[str, type[_NetArgs]] = {
    "autoencoder": _NetArgs,
    "unet": _NetArgs,
    "maskunet": _MaskNetArgs,
}


class _Section(BaseModel):
    # Keys we do not read are tolerated: a newer annot-denoise may write more.
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class _Arch(_Section):
    name: str
    kwargs: dict[str, Any] = {}


class _Data(_Section):
    channels: Channels
    size: Annotated[list[int], Field(min_length=2, max_length=2)] | None = None

    @field_validator("size")
    @classmethod
    def _size(cls, value: list[int] | None) -> list[int] | None:
        return None if value is None else check_size(value)


class _Inference(_Section):
    mask_threshold: float = Field(0.5, ge=0, le=1)
    mask_dilate: MaskDilate = MASK_DILATE
    # The post-processing steps the model runs with (None: every step, defaults).
    postprocess: dict[str, Any] | None = None

    @field_validator("postprocess")
    @classmethod
    def _steps(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            PostprocessConfig.model_validate(without_removed(value)[0])
        return value


class _Row(BaseModel):
    """One epoch of the history: the keys the report's curves read."""

    model_config = ConfigDict(extra="allow", strict=True)
    epoch: int = Field(ge=0)
    train_loss: float
    val_loss: float | None = None
    val_psnr: float | None = None
    val_psnr_mask: float | None = None


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, arbitrary_types_allowed=True)
    arch: _Arch
    data: _Data
    inference: _Inference = _Inference()
    model: dict[str, torch.Tensor]
    epoch: int = Field(0, ge=0)
    step: int = Field(0, ge=0)
    history: list[_Row] = []
    metrics: dict[str, Any] = {}
    config: dict[str, Any] = {}
    provenance: dict[str, Any] = {}


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``state`` (plus format and version stamps) atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": __version__, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load one of our checkpoints on the CPU and validate what it says about itself."""
    path = Path(path)
    ckpt = _read(path)
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "model" not in ckpt:
        raise CheckpointError(
            f"{path}: not an annot-denoise checkpoint (no 'arch'/'model' entries)"
        )
    fmt = ckpt.get("format")
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(
            f"{path}: written by annot-denoise {shown(ckpt.get('version', '?'))} in checkpoint "
            f"format {shown(fmt)}; this is {__version__} (format {FORMAT}): upgrade annot-denoise"
        )
    name = ckpt["arch"].get("name") if isinstance(ckpt["arch"], dict) else None
    if not isinstance(name, str) or name not in MODELS:
        raise CheckpointError(
            f"{path}: architecture {shown(name)} is unknown to annot-denoise {__version__} "
            f"(known: {sorted(MODELS)})"
        )
    _validate(ckpt, path)
    _check_weights(ckpt, path)
    return ckpt


def _read(path: Path) -> Any:
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file (best.pt, say)")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses arbitrary objects before building them; it refuses
        # plain junk the same way, so say which of the two this is.
        named = re.findall(r"GLOBAL (\S+) was not an allowed", str(exc)) or _pickled_globals(path)
        if named:
            raise CheckpointError(
                f"{path}: refused: it contains Python objects other than weights, which "
                f"could run code when loaded ({shown(named[0])})"
            ) from None
        raise CheckpointError(
            f"{path}: not a readable checkpoint (not a file torch.save wrote, or damaged)"
        ) from None
    except Exception as exc:  # a damaged file can fail anywhere inside the unpickler
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated? {reason[:160]})"
        ) from None


def _pickled_globals(path: Path) -> list[str]:
    """What a plain pickle would import, read from its opcodes (nothing is run)."""
    with open(path, "rb") as fh:
        data = fh.read(16 << 20)
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(data):
            if isinstance(arg, str):
                strings.append(arg)
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(".".join(strings[-2:]))
    except Exception:  # not a pickle past this point: what came before still counts
        pass
    return names


def _validate(ckpt: dict[str, Any], path: Path) -> None:
    """The entries we read, each checked for type and range; the first problem is named."""
    try:
        meta = _Metadata.model_validate(ckpt)
    except ValidationError as exc:
        raise CheckpointError(_problem(exc, path)) from None
    try:
        args = ARCH_ARGS[meta.arch.name].model_validate(meta.arch.kwargs)
    except ValidationError as exc:
        raise CheckpointError(_problem(exc, path, "arch.kwargs")) from None
    if args.in_channels != meta.data.channels:
        raise CheckpointError(
            f"{path}: arch.kwargs.in_channels is {args.in_channels} but data.channels is "
            f"{meta.data.channels}; the network could not read its own input"
        )
    stored = meta.inference.postprocess
    if stored is not None:
        ckpt["inference"]["postprocess"], gone = without_removed(stored)
        if gone:
            log.warning(
                "%s: post-processing step(s) %s deleted since it was saved: skipped", path, gone
            )
    rows = meta.history
    if rows and len({row.val_loss is None for row in rows}) > 1:
        raise CheckpointError(f"{path}: history: val_loss is missing from some epochs only")


def _problem(exc: ValidationError, path: Path, prefix: str = "") -> str:
    """The first validation problem as one line: file, key, what is wrong."""
    errors = exc.errors()
    err = errors[0]
    key = ".".join([prefix] * bool(prefix) + [str(p) for p in err["loc"]]) or "<top level>"
    msg = _MESSAGES.get(err["type"], err["msg"])
    if err["type"] == "value_error":
        msg = str(err["ctx"]["error"])
    got = "" if isinstance(err.get("input"), dict) else f" (got {shown(err.get('input'))})"
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return f"{path}: {key}: {msg}{got}{more}"


# pydantic's wording where it would name our private classes.
_MESSAGES = {
    "extra_forbidden": "unknown key",
    "missing": "missing",
    "model_type": "expected a mapping",
    "dict_type": "expected a mapping",
}


def _check_weights(ckpt: dict[str, Any], path: Path) -> None:
    """The weights have the names and shapes the architecture expects. The network is
    built on the ``meta`` device: shapes without storage, so nothing is allocated."""
    arch = ckpt["arch"]
    with torch.device("meta"):
        expected = build_model(arch["name"], **arch.get("kwargs", {})).state_dict()
    weights = ckpt["model"]
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    wrong = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing, e.g. {shown(missing[0])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected, e.g. {shown(unexpected[0])}")
    if wrong:
        k = wrong[0]
        problems.append(
            f"{len(wrong)} of another shape, e.g. {shown(k)} is {list(weights[k].shape)}, "
            f"expected {list(expected[k].shape)}"
        )
    if problems:
        raise CheckpointError(
            f"{path}: weights do not fit {arch['name']!r} with {shown(arch.get('kwargs', {}))} "
            f"({'; '.join(problems)})"
        )


def model_from_checkpoint(ckpt: dict[str, Any], path: Path | str = "<checkpoint>") -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    arch = ckpt["arch"]
    model = build_model(arch["name"], **arch.get("kwargs", {}))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit {arch['name']!r} ({first})") from None
    return model.eval()


def load_model(path: Path | str, device: torch.device | str = "cpu") -> tuple[nn.Module, dict]:
    """Checkpoint file -> (model on ``device`` in eval mode, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    return model_from_checkpoint(ckpt, path).to(device), ckpt


# What a model needs to run; everything else (optimiser, scheduler, RNG) is training state.
_MODEL_KEYS = ("arch", "data", "inference", "config", "metrics", "history", "epoch", "step")


def export_model(
    src: Path | str,
    dst: Path | str,
    *,
    half: bool = True,
    provenance: dict | None = None,
    mask_threshold: float | None = None,
) -> dict[str, Any]:
    """Write a stripped copy of a training checkpoint for sharing or shipping.

    Keeps what inference needs (architecture, input channels and size, mask
    threshold and dilation, training config, metrics) and drops the optimiser
    and RNG states; ``half`` stores floating-point weights as fp16 (they are
    loaded back into fp32 networks, so inference is unchanged but for rounding).
    ``mask_threshold`` replaces the threshold training chose on its validation
    crops (one chosen by ``eval`` on whole validation scans, say); the provenance
    records both.
    """
    dst = Path(dst)
    check_output_file(dst)
    ckpt = load_checkpoint(src)
    if mask_threshold is not None:
        if not 0 <= mask_threshold <= 1:
            raise CheckpointError(f"mask threshold {mask_threshold}: must be between 0 and 1")
        inference = dict(ckpt.get("inference") or {})
        provenance = {
            **(provenance or {}),
            "mask_threshold": {"trained": inference.get("mask_threshold"), "set": mask_threshold},
        }
        ckpt["inference"] = {**inference, "mask_threshold": float(mask_threshold)}
    weights = {
        k: v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()
        for k, v in ckpt["model"].items()
    }
    out = {k: ckpt[k] for k in _MODEL_KEYS if k in ckpt}
    out.update(model=weights, provenance={"source": Path(src).name, **(provenance or {})})
    try:
        save_checkpoint(dst, out)
    except OSError as exc:
        raise CheckpointError(f"{dst}: cannot write the model ({exc.strerror or exc})") from None
    return out


def check_output_file(path: Path) -> None:
    """Raise :class:`CheckpointError` unless a file can be written at ``path``: it is no
    folder, and its nearest existing ancestor is a folder, not a file."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder; give a file name, e.g. {path / 'model.pt'}")
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise CheckpointError(f"{path}: cannot be written: {parent} is not a folder")
            return
