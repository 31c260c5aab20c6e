"""Models that ship inside the package, by name.

``--model`` accepts a name from :data:`PRETRAINED` or a checkpoint path; without
it, ``clean`` and ``eval`` use ``default``. Every shipped model was trained by
this project's own code; its recipe and numbers are in docs/default-model.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

from annot_denoise.training.checkpoint import CheckpointError, load_checkpoint

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parent / "weights"
PRETRAINED: dict[str, Path] = {"default": WEIGHTS / "default.pt"}
# Names that shipped once: asking for one says why it went instead of "not a file".
RETIRED: dict[str, str] = {
    "fast": "it learned from phantoms without a scanner interface and erases depth "
    "scales and settings text on real screens; use 'default' (docs/default-model.md)",
}


def resolve_model(spec: str | Path | None) -> Path:
    """A shipped model's name, a checkpoint path, or None for ``default``."""
    if spec is None:
        log.info("no --model given: using the shipped 'default' model (annot-denoise models)")
        spec = "default"
    name = str(spec)
    if name in RETIRED and not Path(name).exists():
        raise CheckpointError(f"the shipped model {name!r} was retired: {RETIRED[name]}")
    if name in PRETRAINED:
        path = PRETRAINED[name]
        if not path.is_file():
            raise CheckpointError(f"the shipped model {name!r} is missing from {path}")
        return path
    path = Path(spec)
    if not path.exists() and "/" not in name and not name.endswith(".pt"):
        raise CheckpointError(
            f"{name!r} is neither a shipped model {sorted(PRETRAINED)} nor a file"
        )
    return path


def describe_models() -> list[dict]:
    """Name, architecture, provenance and metrics of every shipped model."""
    rows = []
    for name, path in PRETRAINED.items():
        ckpt = load_checkpoint(path)
        rows.append(
            {
                "name": name,
                "path": str(path),
                "arch": ckpt["arch"]["name"],
                "arch_args": ckpt["arch"].get("kwargs", {}),
                "parameters": sum(v.numel() for v in ckpt["model"].values()),
                "inference": ckpt.get("inference", {}),
                "provenance": ckpt.get("provenance", {}),
                "metrics": ckpt.get("metrics", {}),
                "version": ckpt.get("version"),
            }
        )
    return rows
