"""Checkpoints: plain dicts that carry their own architecture and config.

Saved atomically; loaded with ``torch.load(weights_only=True)`` only, so a
file carrying a pickle payload is refused without running it.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from annot_denoise import __version__
from annot_denoise.io import atomic_write_bytes
from annot_denoise.models import MODELS, build_model

FORMAT = 1  # bump when a checkpoint could no longer be read by older code


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and why."""


def save_checkpoint(path: Path | str, state: dict[str, Any]) -> None:
    """Write ``state`` (plus format and version stamps) atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "version": __version__, **state}, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    """Load and sanity-check one of our checkpoints on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only refuses arbitrary objects before building them.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: refused: it contains Python objects other than weights, which could run "
            f"code when loaded ({first[:120]})"
        ) from None
    except Exception as exc:  # a damaged file can fail anywhere inside the unpickler
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated? {reason[:160]})"
        ) from None
    if not isinstance(ckpt, dict) or "arch" not in ckpt or "model" not in ckpt:
        raise CheckpointError(
            f"{path}: not an annot-denoise checkpoint (no 'arch'/'model' entries)"
        )
    fmt = ckpt.get("format")
    if not isinstance(fmt, int) or fmt > FORMAT:
        raise CheckpointError(
            f"{path}: written by annot-denoise {ckpt.get('version', '?')} in checkpoint format "
            f"{fmt}; this is {__version__} (format {FORMAT}): upgrade annot-denoise"
        )
    name = ckpt["arch"].get("name") if isinstance(ckpt["arch"], dict) else None
    if name not in MODELS:
        raise CheckpointError(
            f"{path}: architecture {name!r} is unknown to annot-denoise {__version__} "
            f"(known: {sorted(MODELS)})"
        )
    return ckpt


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
    src: Path | str, dst: Path | str, *, half: bool = True, provenance: dict | None = None
) -> dict[str, Any]:
    """Write a stripped copy of a training checkpoint for sharing or shipping.

    Keeps what inference needs (architecture, input channels and size, mask
    threshold and dilation, training config, metrics) and drops the optimiser
    and RNG states; ``half`` stores floating-point weights as fp16 (they are
    loaded back into fp32 networks, so inference is unchanged but for rounding).
    """
    ckpt = load_checkpoint(src)
    weights = {
        k: v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu()
        for k, v in ckpt["model"].items()
    }
    out = {k: ckpt[k] for k in _MODEL_KEYS if k in ckpt}
    out.update(model=weights, provenance={"source": Path(src).name, **(provenance or {})})
    save_checkpoint(dst, out)
    return out
