"""U-Net with skip connections that predicts a residual added to its input.

Skips carry the fine speckle and edges past the bottleneck, which the plain
autoencoder loses; predicting ``x + delta`` (as NAFNet does) means untouched
regions only need a zero residual.
"""

from __future__ import annotations

import torch
from torch import nn

from annot_denoise.models.common import conv_block, pad_to_multiple


class UNet(nn.Module):
    residual = True  # output = input + correction; inference relies on it

    def __init__(
        self, in_channels: int = 3, width: int = 32, depth: int = 4, norm: str = "batch"
    ) -> None:
        super().__init__()
        self.depth = depth
        chans = [width * 2**i for i in range(depth + 1)]
        self.stem = conv_block(in_channels, chans[0], norm)
        self.down = nn.ModuleList(conv_block(chans[i], chans[i + 1], norm) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in range(depth)
        )
        self.fuse = nn.ModuleList(conv_block(2 * chans[i], chans[i], norm) for i in range(depth))
        self.head = nn.Conv2d(chans[0], in_channels, 1)
        # Start as the identity: the residual branch begins at zero.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padded, (h, w) = pad_to_multiple(x, 2**self.depth)
        skips = [self.stem(padded)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        y = skips.pop()
        for i in reversed(range(self.depth)):
            y = self.fuse[i](torch.cat([self.up[i](y), skips.pop()], dim=1))
        return (padded + self.head(y))[..., :h, :w]
