"""Training: one readable loop that maps annotated scans to clean ones.

``train(cfg)`` wires data, model and optimiser together and runs epochs of
``train_one_epoch`` and ``validate``. Everything a run produces lands in
``output.dir``: the resolved config, ``last.pt``/``best.pt``, ``metrics.jsonl``,
TensorBoard events and ``samples/``. ``resume=True`` continues from ``last.pt``.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, RandomSampler
from torchvision.utils import make_grid

from annot_denoise.checkpoint import load_checkpoint, save_checkpoint
from annot_denoise.config import TrainConfig, dump_config
from annot_denoise.data import EpochSampler, build_datasets
from annot_denoise.io import atomic_write_bytes, atomic_write_text, from_float, write_image
from annot_denoise.losses import restoration_loss
from annot_denoise.models import build_model, model_outputs
from annot_denoise.progress import Progress
from annot_denoise.runtime import (
    amp_dtype,
    autocast,
    resolve_device,
    rng_state,
    seed_everything,
    set_rng_state,
)

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """Training cannot go on (diverged, nothing to train on, run folder clash)."""


@dataclass
class RunResult:
    run_dir: Path
    epochs: int
    steps: int
    best_val_loss: float
    last: dict = field(default_factory=dict)  # the final metrics.jsonl row
    skipped: list[str] = field(default_factory=list)  # one error line per unusable pair
    seconds: float = 0.0


def train(
    cfg: TrainConfig,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Train the configured model; see the module docstring for what is written."""
    progress = progress or Progress()
    dev = resolve_device(device)
    run_dir = Path(cfg.output.dir)
    ckpt = _prepare_run_dir(run_dir, resume)
    seed_everything(cfg.train.seed)

    train_ds, val_ds, skipped = build_datasets(cfg)
    for line in skipped:
        log.error("skipping: %s", line)
    log.info(
        "%d training samples, %d validation samples, device %s", len(train_ds), len(val_ds), dev
    )
    shuffle = torch.Generator()
    sampler = EpochSampler(RandomSampler(train_ds, generator=shuffle), len(train_ds))
    loader = DataLoader(
        train_ds,
        batch_size=cfg.train.batch_size,
        sampler=sampler,
        drop_last=len(train_ds) > cfg.train.batch_size,
        num_workers=cfg.train.workers,
        pin_memory=dev.type == "cuda",
        # Workers live across epochs: the epoch travels inside each index.
        persistent_workers=cfg.train.workers > 0,
        prefetch_factor=4 if cfg.train.workers > 0 else None,
    )
    val_loader = DataLoader(val_ds, batch_size=cfg.train.batch_size, num_workers=0)

    arch = {
        "name": cfg.model.arch,
        "kwargs": {
            "in_channels": cfg.data.channels,
            "width": cfg.model.width,
            "depth": cfg.model.depth,
            "norm": cfg.model.norm,
        },
    }
    model = build_model(arch["name"], **arch["kwargs"])
    if cfg.model.init and ckpt is None:
        _load_initial_weights(model, arch, cfg.model.init)
    model = model.to(dev, memory_format=torch.channels_last)
    optimizer = _make_optimizer(model, cfg)
    # A one-element list so a wall-time budget can shorten the schedule after epoch 1.
    cap = cfg.train.max_steps or cfg.train.epochs * len(loader)
    horizon = [cap]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, horizon))
    dtype = amp_dtype(dev, cfg.train.amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    start_epoch, step, best, history = 0, 0, math.inf, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start_epoch, step, best = ckpt["epoch"] + 1, ckpt["step"], ckpt["best_val_loss"]
        _truncate_metrics(run_dir / "metrics.jsonl", ckpt["epoch"])
        history = list(ckpt.get("history", []))
        log.info("resuming %s after epoch %d (step %d)", run_dir, ckpt["epoch"] + 1, step)
    # Absolute paths, so that --resume works from any folder.
    saved = cfg.model_copy(deep=True)
    saved.output.dir = run_dir.resolve()
    for key in ("root", "clean_dir"):
        if getattr(saved.data, key) is not None:
            setattr(saved.data, key, getattr(saved.data, key).resolve())
    atomic_write_text(run_dir / "config.yaml", dump_config(saved))
    writer = _tensorboard(run_dir, cfg.output.tensorboard)

    started, row, epoch, ckpt_step = time.perf_counter(), {}, start_epoch - 1, step
    deadline = started + 60 * cfg.train.max_minutes if cfg.train.max_minutes else None
    for epoch in range(start_epoch, cfg.train.epochs):
        if step >= horizon[0]:
            break
        # Re-seeding per epoch makes a resumed run shuffle exactly like an uninterrupted one.
        shuffle.manual_seed(cfg.train.seed * 100_003 + epoch)
        sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        with progress.task(f"epoch {epoch + 1}/{cfg.train.epochs}", total=len(loader)) as bar:
            train_loss, samples, step = train_one_epoch(
                model,
                loader,
                optimizer,
                scheduler,
                scaler,
                cfg,
                dev,
                dtype,
                step,
                horizon[0],
                bar=bar,
                writer=writer,
                deadline=deadline,
            )
        seconds = time.perf_counter() - t0
        if cfg.train.max_minutes:
            # Fit the rest of the schedule to the wall-time budget, at the speed
            # measured so far; the run ends at the first epoch end past the budget.
            elapsed = time.perf_counter() - started
            per_step = elapsed / max(step - ckpt_step, 1)
            remaining = cfg.train.max_minutes * 60 - elapsed
            fit = step + int(remaining / per_step) if remaining > 0 else step
            horizon[0] = max(step, min(cap, fit))
        val = validate(model, val_loader, cfg, dev, dtype) if len(val_ds) else {}
        val_loss = val.get("val_loss", train_loss)
        row = {
            "epoch": epoch + 1,
            "step": step,
            "train_loss": train_loss,
            **{k: v for k, v in val.items() if k not in ("samples", "mask_threshold")},
            "lr": scheduler.get_last_lr()[0],
            "seconds": round(seconds, 3),
            "samples_per_s": round(samples / max(seconds, 1e-9), 2),
        }
        improved = val_loss < best
        best = min(best, val_loss)
        state = {
            "arch": arch,
            "data": {
                "channels": cfg.data.channels,
                "size": list(cfg.data.size) if cfg.data.size else None,
            },
            "inference": {
                "mask_threshold": val.get("mask_threshold", 0.5),
                "mask_dilate": cfg.model.mask_dilate,
            },
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "epoch": epoch,
            "step": step,
            "rng": rng_state(),
            "best_val_loss": best,
            "metrics": row,
            "history": [*history, row],
            "config": cfg.model_dump(mode="json"),
        }
        save_checkpoint(run_dir / "last.pt", state)
        if improved:
            save_checkpoint(run_dir / "best.pt", state)
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        history.append(row)
        _log_epoch(writer, row, val.get("samples"), run_dir, epoch)
        log.info(
            "epoch %d: train loss %.5f, val loss %.5f, val PSNR %.2f dB",
            epoch + 1,
            train_loss,
            val_loss,
            val.get("val_psnr", float("nan")),
        )
    if writer is not None:
        writer.close()
    if history:
        from annot_denoise.report import curves_png

        atomic_write_bytes(run_dir / "curves.png", curves_png({"train": history}))
    return RunResult(
        run_dir=run_dir,
        epochs=epoch + 1,
        steps=step,
        best_val_loss=best,
        last=row,
        skipped=skipped,
        seconds=time.perf_counter() - started,
    )


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    cfg: TrainConfig,
    device: torch.device,
    dtype: torch.dtype | None,
    step: int,
    total_steps: int,
    *,
    bar=None,
    writer=None,
    deadline: float | None = None,
) -> tuple[float, int, int]:
    """One pass over ``loader`` (ended early at ``total_steps`` or the ``deadline``,
    a ``time.perf_counter()`` value); returns (mean loss, samples seen, global step)."""
    model.train()
    total, seen, t0 = torch.zeros((), device=device), 0, time.perf_counter()
    for batch in loader:
        if step >= total_steps or (deadline is not None and time.perf_counter() > deadline):
            break
        x, y, m = _to_device(batch, device)
        # Mask-aware models get the true mask for teacher forcing of their inpainter.
        teacher = {"true_mask": m} if getattr(unwrap(model), "predicts_mask", False) else {}
        with autocast(device, dtype):
            parts = model_outputs(model(x, **teacher))
        loss = objective(parts, y, m, cfg)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"loss became {loss.item()} at step {step + 1}; stopped. The last good weights are "
                f"in {cfg.output.dir}/last.pt (lower optim.lr or check the data)"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.optim.grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        step += 1
        loss = loss.detach()
        total += loss * x.shape[0]
        seen += x.shape[0]
        if bar is not None:
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.advance(1, loss=float(loss), samples_per_s=round(rate, 1))
        if writer is not None and step % 10 == 0:
            writer.add_scalar("loss/train_step", float(loss), step)
    return float(total) / max(seen, 1), seen, step


def objective(parts: dict, target: torch.Tensor, mask: torch.Tensor, cfg: TrainConfig):
    """The configured loss for one batch of model outputs."""
    return restoration_loss(
        parts["output"],
        target,
        mask,
        alpha=cfg.loss.alpha,
        beta=cfg.loss.beta,
        ssim_weight=cfg.loss.ssim_weight,
        mask_logits=parts.get("mask_logits"),
        content=parts.get("content"),
        mask_weight=cfg.loss.mask_weight,
        content_weight=cfg.loss.content_weight,
    )


THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@torch.no_grad()
def validate(
    model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device, dtype
) -> dict:
    """Validation loss, PSNR (image and inside the mask), mask F1, sample triplets.

    For mask-aware models the mask threshold with the best F1 over the whole
    validation set is reported; training stores it in the checkpoint as the
    default for ``clean``.
    """
    model.eval()
    losses, psnrs, mask_psnrs, samples = [], [], [], []
    counts = torch.zeros(len(THRESHOLDS), 3)  # tp, fp, fn per threshold
    for batch in loader:
        x, y, m = _to_device(batch, device)
        with autocast(device, dtype):
            parts = model_outputs(model(x))
        losses.append(float(objective(parts, y, m, cfg)) * x.shape[0])
        pred = parts["output"].float().clamp(0, 1)
        err = (pred - y).square().mean(dim=1)  # B x H x W
        psnrs += (-10 * torch.log10(err.flatten(1).mean(1).clamp_min(1e-10))).tolist()
        inside = m[:, 0] > 0
        for e, k in zip(err, inside):
            if k.any():
                mask_psnrs.append(float(-10 * torch.log10(e[k].mean().clamp_min(1e-10))))
        if "mask_logits" in parts:
            prob = torch.sigmoid(parts["mask_logits"].float())[:, 0]
            for t, threshold in enumerate(THRESHOLDS):
                hit = prob > threshold
                counts[t] += (
                    torch.stack(
                        [(hit & inside).sum(), (hit & ~inside).sum(), (~hit & inside).sum()]
                    )
                    .cpu()
                    .float()
                )
        if len(samples) < cfg.train.samples:
            for i in range(min(x.shape[0], cfg.train.samples - len(samples))):
                samples.append(torch.cat([x[i], pred[i], y[i]], dim=2).float().cpu())
    n = len(loader.dataset)
    result = {
        "val_loss": sum(losses) / n,
        "val_psnr": float(np.mean(psnrs)),
        "val_psnr_mask": float(np.mean(mask_psnrs)) if mask_psnrs else float("nan"),
        "samples": samples,
    }
    if counts.sum() > 0:
        f1 = 2 * counts[:, 0] / (2 * counts[:, 0] + counts[:, 1] + counts[:, 2]).clamp_min(1)
        best = int(f1.argmax())
        result["val_mask_f1"] = float(f1[best])
        result["mask_threshold"] = THRESHOLDS[best]
    return result


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True, memory_format=torch.channels_last)

    return (
        move(batch["annotated"]),
        move(batch["clean"]),
        batch["mask"].to(device, non_blocking=True),
    )


def _load_initial_weights(model: nn.Module, arch: dict, spec: str) -> None:
    """Fine-tuning: start from a shipped model or a checkpoint of the same architecture."""
    from annot_denoise.pretrained import resolve_model

    path = resolve_model(spec)
    source = load_checkpoint(path)
    if source["arch"]["name"] != arch["name"] or any(
        source["arch"]["kwargs"].get(k) != v for k, v in arch["kwargs"].items() if k != "norm"
    ):
        raise TrainingError(
            f"model.init {spec}: its architecture {source['arch']} differs from the config's "
            f"{arch}; set model.arch/width/depth (and data.channels) to match it"
        )
    model.load_state_dict(source["model"])
    log.info("starting from the weights of %s", path)


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def _lr_lambda(cfg: TrainConfig, horizon: list[int]):
    cosine = cfg.optim.scheduler == "cosine"

    def factor(step: int) -> float:
        total = horizon[0]
        warmup = min(cfg.optim.warmup_steps, max(total // 10, 1))
        if step < warmup:
            return (step + 1) / warmup
        if not cosine:
            return 1.0
        t = min(1.0, (step - warmup) / max(total - warmup, 1))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def _prepare_run_dir(run_dir: Path, resume: bool) -> dict | None:
    last = run_dir / "last.pt"
    if resume:
        if not last.is_file():
            raise TrainingError(f"{run_dir}: nothing to resume (no last.pt)")
        return load_checkpoint(last)
    if last.exists() or (run_dir / "metrics.jsonl").exists():
        raise TrainingError(
            f"{run_dir}: already holds a run; pass --resume {run_dir} to continue it, "
            f"or choose another folder with --set output.dir=..."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return None


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop rows written after the checkpoint we resume from (a kill between the two writes)."""
    if not path.is_file():
        return
    rows = [r for r in path.read_text(encoding="utf-8").splitlines() if r.strip()]
    kept = [r for r in rows if json.loads(r).get("epoch", 0) <= last_epoch + 1]
    atomic_write_text(path, "".join(r + "\n" for r in kept))


def _tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def _log_epoch(writer, row: dict, samples: list | None, run_dir: Path, epoch: int) -> None:
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
