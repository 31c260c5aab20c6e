"""Model registry: a plain dict from architecture name to constructor.

Every architecture takes ``in_channels`` plus its own keyword arguments, accepts
any input size (it pads internally and crops back) and returns an image of the
input's shape in [0, 1] (unclamped while training). Mask-aware networks
(``predicts_mask = True``) return a dict instead: ``output`` (that image),
``mask_logits`` and ``content``; :func:`model_outputs` gives every caller the dict.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from annot_denoise.models.autoencoder import Autoencoder
from annot_denoise.models.maskunet import MaskUNet
from annot_denoise.models.unet import UNet

MODELS: dict[str, Callable[..., nn.Module]] = {
    "autoencoder": Autoencoder,
    "unet": UNet,
    "maskunet": MaskUNet,
}


def build_model(name: str, **kwargs) -> nn.Module:
    """Instantiate architecture ``name`` with ``kwargs``; unknown names list the valid ones."""
    try:
        factory = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}") from None
    return factory(**kwargs)


def model_outputs(out: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A plain network's tensor as ``{"output": tensor}``; dicts pass through."""
    return out if isinstance(out, dict) else {"output": out}
