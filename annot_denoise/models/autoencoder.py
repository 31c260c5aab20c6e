"""The reference architecture: a plain convolutional autoencoder, no skips.

Kept as the baseline the project grew from: everything passes through the
bottleneck, so fine detail is lost. Use ``unet`` for real work.
"""

from __future__ import annotations

import torch
from torch import nn

from annot_denoise.models.common import conv_block, pad_to_multiple


class Autoencoder(nn.Module):
    residual = False  # repaints the whole image

    def __init__(
        self, in_channels: int = 3, width: int = 32, depth: int = 4, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        layers: list[nn.Module] = [conv_block(in_channels, chans[0], norm)]
        for i in range(depth):
            layers += [nn.MaxPool2d(2), conv_block(chans[i], chans[i + 1], norm)]
        self.encoder = nn.Sequential(*layers)
        layers = []
        for i in reversed(range(depth)):
            layers += [
                nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2),
                conv_block(chans[i], chans[i], norm),
            ]
        layers += [nn.Conv2d(chans[0], in_channels, 1), nn.Sigmoid()]
        self.decoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(x, 2**self.depth)
        return self.decoder(self.encoder(padded))[..., :h, :w]
