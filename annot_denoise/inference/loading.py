"""A trained model, by name or path, as a :class:`.Restorer` with a job's settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from annot_denoise.config import ConfigError, InferenceConfig
from annot_denoise.distributed import from_env, rank_device
from annot_denoise.inference.postprocess import with_steps
from annot_denoise.inference.restorer import Restorer
from annot_denoise.pretrained import resolve_model
from annot_denoise.runtime import inference_batch, resolve_device
from annot_denoise.training.checkpoint import load_model


def load_restorer(
    settings: InferenceConfig, model: str | Path | None = None
) -> tuple[Restorer, dict]:
    """(restorer, checkpoint) for ``model`` (default: ``settings.model``; None: the
    shipped 'default') on the device ``settings.device`` names (under torchrun, the
    rank's own GPU). Threshold, dilation and post-processing are the checkpoint's
    unless ``settings`` overrides them."""
    device = rank_device(from_env(), resolve_device(settings.device))
    net, ckpt = load_model(resolve_model(settings.model if model is None else str(model)), device)
    restorer = Restorer.from_checkpoint(
        net,
        ckpt,
        device,
        threshold=settings.mask_threshold,
        dilate=settings.dilate,
        tile=settings.tile,
        batch_size=inference_batch(device, settings.batch_size),
        tta=settings.tta,
    )
    try:
        restorer.postprocess = with_steps(restorer.postprocess, settings.postprocess)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ConfigError(f"--postprocess {settings.postprocess}: {reason}") from None
    return restorer, ckpt
