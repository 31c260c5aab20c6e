"""Training: one readable loop that maps annotated scans to clean ones.

``train(cfg)`` wires data, model and optimiser together and runs epochs of
``train_one_epoch`` and ``validate``; the run folder (see ``rundir``) receives
the config, checkpoints, metrics, TensorBoard events and samples. ``resume=True``
continues from ``last.pt``. Under torchrun the same loop runs on every rank with
DistributedDataParallel; rank 0 alone writes.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

from annot_denoise import distributed as distrib
from annot_denoise.config import TrainConfig
from annot_denoise.inference.postprocess import PostprocessConfig
from annot_denoise.io import remove_stale_temporaries
from annot_denoise.models import build_model, model_outputs
from annot_denoise.models.maskunet import STAGES
from annot_denoise.progress import Progress
from annot_denoise.runtime import (
    amp_dtype,
    autocast,
    resolve_device,
    rng_state,
    seed_everything,
)
from annot_denoise.training import rundir
from annot_denoise.training.checkpoint import load_checkpoint, save_checkpoint
from annot_denoise.training.data import EpochSampler, build_datasets, echo_collate
from annot_denoise.training.losses import restoration_loss
from annot_denoise.training.validation import validate

log = logging.getLogger(__name__)


class TrainingError(Exception):
    """Training cannot go on (diverged, incompatible initial weights)."""


@dataclass
class RunResult:
    run_dir: Path
    epochs: int
    steps: int
    best_val_loss: float
    last: dict = field(default_factory=dict)  # the final metrics.jsonl row
    skipped: list[str] = field(default_factory=list)  # one error line per unusable file
    seconds: float = 0.0
    model: nn.Module | None = field(default=None, repr=False)  # the trained network


def train(
    cfg: TrainConfig,
    *,
    device: str = "auto",
    resume: bool = False,
    progress: Progress | None = None,
) -> RunResult:
    """Train the configured model; see the module docstring for what is written."""
    world, dev = distrib.setup(resolve_device(device))
    progress = progress if progress is not None and world.main else Progress()
    run_dir = Path(cfg.output.dir)
    ckpt = rundir.prepare(run_dir, resume)
    arch = architecture(cfg)
    if ckpt is not None:  # before the data is read: that can take minutes
        rundir.check_resumable(ckpt, arch, cfg, run_dir / "last.pt")
    seed_everything(cfg.train.seed)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed patch sizes: pick the fastest kernels

    train_ds, val_ds, skipped = _datasets(cfg, world, dev)
    shuffle = torch.Generator()
    loader, val_loader, sampler = _loaders(cfg, train_ds, val_ds, world, dev, shuffle)
    model = _build(cfg, arch, dev, fresh=ckpt is None)
    optimizer = _make_optimizer(model, cfg)
    # A one-element list so a wall-time budget can shorten the schedule as it goes.
    cap = cfg.train.max_steps or cfg.train.epochs * len(loader)
    horizon = [cap]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, horizon))
    dtype = amp_dtype(dev, cfg.train.amp)
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)

    start_epoch, step, best, history = 0, 0, math.inf, []
    if ckpt is not None:
        start_epoch, step, best, history = _resume(
            ckpt, model, optimizer, scheduler, scaler, cfg, world
        )
    step_model = _wrapped(model, cfg, world, dev)
    writer = None
    if world.main:
        rundir.write_config(run_dir, cfg)
        writer = rundir.tensorboard(run_dir, cfg.output.tensorboard)

    started, row, done, ckpt_step = time.perf_counter(), {}, start_epoch, step
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
                step_model, loader, optimizer, scheduler, scaler, cfg, dev, dtype, step,
                horizon[0], bar=bar, writer=writer, deadline=deadline, world=world,
            )  # fmt: skip
        seconds, done = time.perf_counter() - t0, epoch + 1
        if cfg.train.max_minutes:
            fit = _steps_within_budget(cfg, started, step, step - ckpt_step)
            # Every rank adopts the most cautious estimate so they stop together.
            end = budget_horizon(step, fit, cap, len(loader))
            horizon[0] = distrib.min_over_ranks(end, world, dev)
        train_loss = distrib.all_sum([train_loss * samples, samples], world, dev)
        train_loss, samples = train_loss[0] / max(train_loss[1], 1), int(train_loss[1])
        distrib.sync_buffers(model, world)
        val = validate(model, val_loader, cfg, dev, dtype, objective, world) if len(val_ds) else {}
        val_loss = val.get("val_loss", train_loss)
        row = _history_row(epoch, step, train_loss, val, scheduler, seconds, samples)
        improved, best = val_loss < best, min(best, val_loss)
        history.append(row)
        if world.main:
            state = {
                **_model_record(cfg, arch, val.get("mask_threshold", 0.5)),
                **_training_state(model, optimizer, scheduler, scaler),
                "epoch": epoch,
                "step": step,
                "best_val_loss": best,
                "metrics": row,
                "history": history,
            }
            _record_epoch(run_dir, state, improved, writer, val)
        distrib.barrier(world)  # nobody races ahead of rank 0's checkpoint
    if world.main:
        if writer is not None:
            writer.close()
        rundir.write_curves(run_dir, history)
    distrib.teardown()
    return RunResult(
        run_dir=run_dir,
        epochs=done,
        steps=step,
        best_val_loss=best,
        last=row,
        skipped=skipped,
        seconds=time.perf_counter() - started,
        model=model,
    )


def _history_row(
    epoch: int, step: int, train_loss: float, val: dict, scheduler, seconds: float, samples: int
) -> dict:
    """One epoch's row of the history: metrics.jsonl, TensorBoard, the checkpoint."""
    return {
        "epoch": epoch + 1,
        "step": step,
        "train_loss": train_loss,
        **{k: v for k, v in val.items() if k not in ("samples", "mask_threshold")},
        "lr": scheduler.get_last_lr()[0],
        "seconds": round(seconds, 3),
        "samples_per_s": round(samples / max(seconds, 1e-9), 2),
    }


def _resume(ckpt: dict, model, optimizer, scheduler, scaler, cfg: TrainConfig, world) -> tuple:
    """(first epoch, step, best validation loss, history) of a run continued from
    ``ckpt``, its states restored into the objects given; a learning rate changed
    since is adopted and said."""
    run_dir = Path(cfg.output.dir)
    start_epoch, step, best = rundir.restore_state(
        ckpt, model, optimizer, scheduler, scaler, run_dir / "last.pt"
    )
    before = rundir.adopt_learning_rate(optimizer, scheduler, cfg.optim.lr)
    if world.main:
        _tidy_resumed(run_dir, ckpt, step)
        if before is not None:
            log.info("peak learning rate %.3g (the run's was %.3g)", cfg.optim.lr, before)
    return start_epoch, step, best, list(ckpt.get("history", []))


def _training_state(model: nn.Module, optimizer, scheduler, scaler) -> dict:
    """What a checkpoint needs to continue the run exactly: weights, optimiser,
    schedule, loss scaler and random generators."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": rng_state(),
    }


def _datasets(cfg: TrainConfig, world: distrib.World, dev: torch.device) -> tuple:
    """(training set, validation set, unreadable pairs), reported once by rank 0."""
    train_ds, val_ds, skipped = build_datasets(cfg)
    if world.main:
        for line in skipped:
            log.error("skipping: %s", line)
        echo = cfg.data.echo
        log.info(
            "%d training samples%s, %d validation samples, device %s%s",
            len(train_ds) * echo, f" ({len(train_ds)} drawings x {echo})" if echo > 1 else "",
            len(val_ds), dev, f", {world.size} processes" if world.distributed else "",
        )  # fmt: skip
    return train_ds, val_ds, skipped


def _wrapped(model: nn.Module, cfg: TrainConfig, world: distrib.World, dev: torch.device):
    """What the step runs: the model, in DDP across ranks, compiled when asked.
    Checkpoints save ``model`` itself, never the wrappers."""
    net = model
    if world.distributed:
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return torch.compile(net) if cfg.train.compile else net


def _build(cfg: TrainConfig, arch: dict, dev: torch.device, fresh: bool) -> nn.Module:
    """The network on ``dev``: initial weights (``model.init``) for a fresh run,
    frozen stages as configured."""
    model = build_model(arch["name"], **arch["kwargs"])
    if cfg.model.init and fresh:
        _load_initial_weights(model, arch, cfg.model.init)
    if cfg.model.freeze:
        model.freeze(cfg.model.freeze)
    return model.to(dev, memory_format=torch.channels_last)


def _tidy_resumed(run_dir: Path, ckpt: dict, step: int) -> None:
    """Rank 0 of a resumed run: metrics cut back to the checkpoint, and the
    checkpoint writes a kill interrupted (.last.pt.<hex>.tmp, ~40 MB each) removed."""
    rundir.restore_metrics(run_dir, ckpt)
    remove_stale_temporaries(run_dir, {run_dir / "last.pt", run_dir / "best.pt"})
    log.info("resuming %s after epoch %d (step %d)", run_dir, ckpt["epoch"] + 1, step)


def _record_epoch(run_dir: Path, state: dict, improved: bool, writer, val: dict) -> None:
    """Checkpoints, metrics, TensorBoard and the log line at the end of an epoch."""
    row, epoch = state["metrics"], state["epoch"]
    # best.pt first: a kill between the two reruns this epoch, which writes it again.
    if improved:
        save_checkpoint(run_dir / "best.pt", state)
    save_checkpoint(run_dir / "last.pt", state)
    rundir.append_metrics(run_dir, row)
    rundir.log_epoch(writer, row, val.get("samples"), run_dir, epoch)
    log.info(
        "epoch %d: train loss %.5f, val loss %.5f, val PSNR %.2f dB",
        epoch + 1, row["train_loss"], val.get("val_loss", row["train_loss"]),
        val.get("val_psnr", float("nan")),
    )  # fmt: skip


def _loaders(
    cfg: TrainConfig,
    train_ds,
    val_ds,
    world: distrib.World,
    dev: torch.device,
    shuffle: torch.Generator,
) -> tuple[DataLoader, DataLoader, EpochSampler]:
    """(training loader, validation loader, the sampler told each epoch); under DDP
    each rank reads its own share of both."""
    if world.distributed:
        base = DistributedSampler(train_ds, world.size, world.rank, seed=cfg.train.seed)
        val_sampler = DistributedSampler(val_ds, world.size, world.rank, shuffle=False)
    else:
        base, val_sampler = RandomSampler(train_ds, generator=shuffle), None
    sampler = EpochSampler(base, len(train_ds))
    workers = cfg.train.workers
    # With data.echo each item is that many patches of one drawing.
    echo = cfg.data.echo
    items = cfg.train.batch_size // echo
    loader = DataLoader(
        train_ds,
        batch_size=items,
        sampler=sampler,
        drop_last=len(sampler) > items,
        collate_fn=echo_collate if echo > 1 else None,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        # Workers live across epochs: the epoch travels inside each index.
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )
    val_loader = DataLoader(val_ds, batch_size=cfg.train.batch_size, sampler=val_sampler)
    return loader, val_loader, sampler


def _steps_within_budget(cfg: TrainConfig, started: float, step: int, taken: int) -> int:
    """The step at which the wall-time budget runs out, at the speed of the ``taken``
    steps this process has run since ``started``."""
    elapsed = time.perf_counter() - started
    remaining = cfg.train.max_minutes * 60 - elapsed
    return step + int(remaining / (elapsed / max(taken, 1))) if remaining > 0 else step


def budget_horizon(step: int, fit: int, cap: int, epoch_steps: int) -> int:
    """The step a run under a wall-time budget stops at: where the budget runs out
    (``fit``, at most ``cap``), or now when that leaves under a tenth of an epoch.
    Every epoch ends in a full validation, which a handful of steps does not pay for."""
    end = max(step, min(cap, fit))
    return step if end - step < max(1, epoch_steps // 10) else end


def _model_record(cfg: TrainConfig, arch: dict, threshold: float) -> dict:
    """What a checkpoint says about its model beside the weights: the architecture,
    the data it takes, how inference runs it, and the config it was trained with."""
    return {
        "arch": arch,
        "data": {
            "channels": cfg.data.channels,
            "size": list(cfg.data.size) if cfg.data.size else None,
        },
        "inference": {
            "mask_threshold": threshold,
            "mask_dilate": cfg.model.mask_dilate,
            "postprocess": PostprocessConfig().model_dump(mode="json"),
        },
        "config": cfg.model_dump(mode="json"),
    }


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
    world: distrib.World | None = None,
) -> tuple[float, int, int]:
    """One pass over ``loader`` (ended early at ``total_steps`` or the ``deadline``,
    a ``time.perf_counter()`` value); returns (mean loss, samples seen, global step).

    The loss stays on the device: the host looks at it only for the progress bar and
    TensorBoard, and checks every ``CHECK_EVERY[device.type]`` steps (every step where
    unlisted, and at the end) that it is still finite; the first non-finite step is
    tracked on the device so the error names it exactly. Every epoch trains at least
    one step, so a budget spent early never leaves an epoch with nothing to report.
    """
    world = world or distrib.World()
    model.train()
    # Mask-aware models get the true mask for teacher forcing of their inpainter, and
    # how to cut their holes from it.
    teacher = getattr(unwrap(model), "predicts_mask", False)
    holes = {"train_holes": cfg.model.train_holes, "dilate": cfg.model.mask_dilate}
    total, seen, t0 = torch.zeros((), device=device), 0, time.perf_counter()
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    every = CHECK_EVERY.get(device.type, 1)
    last = Path(cfg.output.dir) / "last.pt"
    for i, batch in enumerate(loader):
        if step >= total_steps or _past(deadline, i, world, device):
            break
        x, y, m, ui = _to_device(batch, device)
        with autocast(device, dtype):
            parts = model_outputs(model(x, **({"true_mask": m, **holes} if teacher else {})))
        loss = objective(parts, y, m, cfg, ui)
        bad = ~torch.isfinite(loss) & (first_bad < 0)
        first_bad = torch.where(bad, torch.full_like(first_bad, step + 1), first_bad)
        if (i + 1) % every == 0:
            _check_finite(first_bad, last)
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
        if bar is not None and bar.visible:
            rate = seen / max(time.perf_counter() - t0, 1e-9)
            bar.advance(1, loss=float(loss), samples_per_s=round(rate, 1))
        if writer is not None and step % 10 == 0:
            writer.add_scalar("loss/train_step", float(loss), step)
    _check_finite(first_bad, last)
    return float(total) / max(seen, 1), seen, step


def architecture(cfg: TrainConfig) -> dict:
    """The checkpoint's ``arch`` entry: the network's name and constructor arguments."""
    arch = {
        "name": cfg.model.arch,
        "kwargs": {
            "in_channels": cfg.data.channels,
            "width": cfg.model.width,
            "depth": cfg.model.depth,
            "norm": cfg.model.norm,
        },
    }
    if cfg.model.detector_width is not None:
        arch["kwargs"]["detector_width"] = cfg.model.detector_width
    return arch


# Steps between finiteness checks, by device type: each check waits for the device,
# which stalls a CUDA queue but costs nothing on the CPU (checked every step).
CHECK_EVERY: dict[str, int] = {"cuda": 10}


def _check_finite(first_bad: torch.Tensor, last: Path) -> None:
    bad_step = int(first_bad)
    if bad_step < 0:
        return
    # last.pt is written only after an epoch whose every loss was finite.
    saved = (
        f"the weights of the last finished epoch are in {last}"
        if last.is_file()
        else "no weights were saved (no epoch had finished)"
    )
    raise TrainingError(
        f"the loss became NaN or infinite at step {bad_step}; stopped: {saved} "
        "(lower optim.lr or check the data)"
    )


def objective(
    parts: dict,
    target: torch.Tensor,
    mask: torch.Tensor,
    cfg: TrainConfig,
    interface: torch.Tensor | None = None,
):
    """The configured loss for one batch of model outputs (``interface``: where the
    scanner's interface is, when the batch knows)."""
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
        content_metric=cfg.loss.content_metric,
        interface=interface,
        interface_weight=cfg.loss.interface_weight,
    )


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DistributedDataParallel and torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def _past(deadline: float | None, i: int, world: distrib.World, device: torch.device) -> bool:
    """Has the wall-time budget run out? Never before an epoch's first step (an epoch
    that trained nothing would still be validated and reported); ranks agree every
    10 steps (a collective)."""
    if deadline is None or i == 0:
        return False
    if not world.distributed:
        return time.perf_counter() > deadline
    return i % 10 == 0 and distrib.any_rank(time.perf_counter() > deadline, world, device)


def _to_device(batch: dict, device: torch.device) -> tuple[torch.Tensor, ...]:
    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True, memory_format=torch.channels_last)

    ui = batch.get("interface")
    return (
        move(batch["annotated"]),
        move(batch["clean"]),
        batch["mask"].to(device, non_blocking=True),
        None if ui is None else ui.to(device, non_blocking=True),
    )


def _load_initial_weights(model: nn.Module, arch: dict, spec: str) -> None:
    """Fine-tuning: start from a shipped model or a checkpoint of the same architecture.

    A maskunet whose detector is narrower or wider than the source's takes the
    source's inpainter and starts its detector from scratch.
    """
    from annot_denoise.pretrained import resolve_model

    path = resolve_model(spec)
    source = load_checkpoint(path)
    theirs, ours = source["arch"]["kwargs"], arch["kwargs"]
    if source["arch"]["name"] != arch["name"] or any(
        theirs.get(k) != v for k, v in ours.items() if k not in ("norm", "detector_width")
    ):
        raise TrainingError(
            f"model.init {spec}: its architecture {source['arch']} differs from the config's "
            f"{arch}; set model.arch/width/depth (and data.channels) to match it"
        )
    state = source["model"]
    width = ours.get("width")
    if (theirs.get("detector_width") or width) != (ours.get("detector_width") or width):
        detector = tuple(f"{name}." for name in STAGES["detector"])
        state = {k: v for k, v in state.items() if not k.startswith(detector)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or not all(k.startswith(detector) for k in missing):
            raise TrainingError(
                f"model.init {spec}: weights do not fit the inpainter "
                f"(missing {[k for k in missing if not k.startswith(detector)][:3]}, "
                f"unexpected {unexpected[:3]})"
            )
        log.info("starting from the inpainter of %s; the detector (another width) is new", path)
        return
    model.load_state_dict(state)
    log.info("starting from the weights of %s", path)


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]  # frozen stages stay out
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


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
