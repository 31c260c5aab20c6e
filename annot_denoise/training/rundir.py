"""The run folder: what training writes and how a run is resumed.

``config.yaml``, ``last.pt``/``best.pt``, ``metrics.jsonl``, ``tensorboard/``,
``samples/`` and ``curves.png``. Only rank 0 of a distributed run writes here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision.utils import make_grid

from annot_denoise.config import TrainConfig, dump_config, shown
from annot_denoise.io import (
    atomic_write_bytes,
    atomic_write_text,
    folder_problem,
    from_float,
    write_image,
)
from annot_denoise.runtime import set_rng_state
from annot_denoise.training.checkpoint import load_checkpoint


class RunFolderError(Exception):
    """A run folder that cannot be used as asked: it exists, holds nothing to resume,
    or would be resumed with another network or optimiser."""


def prepare(run_dir: Path, resume: bool) -> dict | None:
    """The checkpoint to resume from, or None for a fresh run; never overwrites a run.

    Nothing is created here: the folder appears with the run's config
    (:func:`write_config`), once the data and the model have been checked.
    """
    _check_folder(run_dir)
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise RunFolderError(f"{run_dir}: nothing to resume (no last.pt)")
        ckpt = load_checkpoint(last)
        missing = [k for k in TRAINING_STATE if k not in ckpt]
        if missing:
            raise RunFolderError(
                f"{last}: cannot be resumed: it has no {', '.join(missing)} "
                "(an exported model? train a new run with model.init set to it)"
            )
        return ckpt
    if last.exists() or (run_dir / "metrics.jsonl").exists():
        raise RunFolderError(
            f"{run_dir}: already holds a run; pass --resume {run_dir} to continue it, "
            f"or choose another folder with --set output.dir=..."
        )
    return None


# What training writes beside the model, and resuming reads back.
TRAINING_STATE = ("optimizer", "scheduler", "scaler", "rng", "best_val_loss")


def _check_folder(run_dir: Path) -> None:
    """A run folder can be (or already is) at ``run_dir``."""
    if why := folder_problem(run_dir):
        raise RunFolderError(
            f"{run_dir}: output.dir {why}; choose another with --set output.dir=..."
        )


# Config keys that shape the network's weights, by the architecture argument they set.
_ARCH_KEYS = {
    "in_channels": "data.channels",
    "width": "model.width",
    "depth": "model.depth",
    "norm": "model.norm",
    "detector_width": "model.detector_width",
}
# ... those that shape the optimiser's state, and the loss whose validation values
# best.pt is chosen by (a log content term is negative: no saved best compares).
_STATE_KEYS = ("model.freeze", "optim.name", "loss.content_metric")


def check_resumable(ckpt: dict, arch: dict, cfg: TrainConfig, last: Path) -> None:
    """A resumed run keeps the network and optimiser it was trained with."""
    was, now = ckpt["arch"], arch
    changes = []
    if was["name"] != now["name"]:
        changes.append(("model.arch", was["name"], now["name"]))
    theirs, ours = was.get("kwargs", {}), now["kwargs"]
    for name in sorted(set(theirs) | set(ours)):
        if theirs.get(name) != ours.get(name):
            changes.append((_ARCH_KEYS.get(name, name), theirs.get(name), ours.get(name)))
    saved, current = ckpt.get("config", {}), cfg.model_dump(mode="json")
    defaults = TrainConfig().model_dump(mode="json")  # what runs that predate a key used
    for key in _STATE_KEYS:
        section, name = key.split(".")
        part = saved.get(section)
        before = part.get(name, defaults[section][name]) if isinstance(part, dict) else None
        if isinstance(part, dict) and before != current[section][name]:
            changes.append((key, before, current[section][name]))
    if changes:
        said = "; ".join(f"{k}={shown(a)}, cannot continue with {shown(b)}" for k, a, b in changes)
        raise RunFolderError(
            f"{last}: the run was trained with {said} (keep the run's settings, or start "
            "a new run in another output.dir)"
        )


def restore_state(
    ckpt: dict,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    last: Path,
) -> tuple[int, int, float]:
    """Load the training state of ``last.pt``; (first epoch to run, step, best val loss)."""
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        return ckpt["epoch"] + 1, ckpt["step"], float(ckpt["best_val_loss"])
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        # Written by us it always fits: this one was damaged or made by hand.
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise RunFolderError(
            f"{last}: its training state does not fit this run ({type(exc).__name__}: {reason})"
        ) from None


def adopt_learning_rate(
    optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, lr: float
) -> float | None:
    """A resumed run at the config's peak learning rate (``--set optim.lr``) rather
    than the one its optimiser state was saved with; the old rate if it changed."""
    old = scheduler.base_lrs[0]
    if math.isclose(old, lr, rel_tol=1e-9):
        return None
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    for group, factor in zip(optimizer.param_groups, scheduler.lr_lambdas, strict=True):
        group["initial_lr"] = lr
        group["lr"] = lr * factor(scheduler.last_epoch)
    return old


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """The validated config with absolute paths, so that --resume works from anywhere."""
    saved = cfg.model_copy(deep=True)
    saved.output.dir = run_dir.resolve()
    for key in ("root", "clean_dir"):
        if getattr(saved.data, key) is not None:
            setattr(saved.data, key, getattr(saved.data, key).resolve())
    try:
        atomic_write_text(run_dir / "config.yaml", dump_config(saved))
    except OSError as exc:
        raise RunFolderError(
            f"{run_dir / 'config.yaml'}: cannot write the run folder ({exc.strerror or exc})"
        ) from None


def restore_metrics(run_dir: Path, ckpt: dict) -> None:
    """metrics.jsonl as of the checkpoint we resume from, whatever a kill interrupted:
    its rows come from the checkpoint's own history when it has one."""
    if "history" not in ckpt:  # checkpoints from before the history was saved
        truncate_metrics(run_dir, ckpt["epoch"])
        return
    rows = "".join(json.dumps(row) + "\n" for row in ckpt["history"])
    atomic_write_text(run_dir / "metrics.jsonl", rows)


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop rows written after the checkpoint we resume from (a kill between the two writes)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    rows = [r for r in path.read_text(encoding="utf-8").splitlines() if r.strip()]
    kept = [r for r in rows if json.loads(r).get("epoch", 0) <= last_epoch + 1]
    atomic_write_text(path, "".join(r + "\n" for r in kept))


def append_metrics(run_dir: Path, row: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def log_epoch(writer, row: dict, samples: list | None, run_dir: Path, epoch: int) -> None:
    """samples/epoch_NNN.png and the epoch's TensorBoard scalars and images."""
    if samples:
        # One PNG per epoch: rows of annotated | output | clean.
        grid = make_grid(samples, nrow=1, padding=2)
        image = from_float(grid.permute(1, 2, 0).numpy(), np.uint8)
        write_image(run_dir / "samples" / f"epoch_{epoch + 1:03d}.png", image)
        if writer is not None:
            writer.add_image("val/annotated|output|clean", grid, epoch + 1)
    if writer is None:
        return
    for key in ("train_loss", "val_loss"):
        if key in row:
            writer.add_scalar(f"loss/{key.removesuffix('_loss')}", row[key], epoch + 1)
    for key in ("val_psnr", "val_psnr_mask"):
        if key in row and math.isfinite(row[key]):
            writer.add_scalar(f"psnr/{key.removeprefix('val_')}", row[key], epoch + 1)
    if "val_mask_f1" in row:
        writer.add_scalar("mask/f1", row["val_mask_f1"], epoch + 1)
    writer.add_scalar("lr", row["lr"], epoch + 1)
    writer.add_scalar("samples_per_s", row["samples_per_s"], epoch + 1)
    writer.flush()


def write_curves(run_dir: Path, history: list[dict]) -> None:
    if history:
        from annot_denoise.evaluation.report import curves_png

        atomic_write_bytes(run_dir / "curves.png", curves_png({"train": history}))


def sample_row(x: torch.Tensor, pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One validation triplet, side by side, on the CPU."""
    return torch.cat([x, pred, y], dim=2).float().cpu()
