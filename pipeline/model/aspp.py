"""Atrous spatial pyramid pooling with separable atrous convs and image pooling."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from terraseg.pipeline.model.layers import ConvBNAct, SeparableConv2d

# Atrous rates of the three 3x3 branches per output stride (paper Sec. 4: rates
# 6, 12, 18 at OS16, doubled at OS8 so they cover the same image context).
ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}


class ImagePooling(nn.Module):
    """Global average pool, 1x1 conv, BN, ReLU, broadcast back to the feature size.

    Batch norm on a 1x1 map needs more than one value per channel in training, so
    training needs a batch of two or more tiles (as in the paper's setup).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.conv = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C, h, w) to (B, 256, h, w), constant over each map."""
        pooled: Tensor = self.conv(self.pool(x))  # (B, 256, 1, 1)
        return pooled.expand(-1, -1, x.shape[-2], x.shape[-1])  # (B, 256, h, w)


class ASPP(nn.Module):
    """Five parallel branches, concatenated, projected by 1x1 conv, then dropout.

    Branches: 1x1 conv; three atrous separable 3x3 convs at ``ASPP_RATES``; image
    pooling. Each has ``channels`` outputs (256 in the paper).
    """

    def __init__(
        self, in_channels: int, output_stride: int, channels: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.rates = ASPP_RATES[output_stride]
        self.conv1x1 = ConvBNAct(in_channels, channels, 1)
        self.atrous = nn.ModuleList(
            SeparableConv2d(in_channels, channels, 3, dilation=rate) for rate in self.rates
        )
        self.pooling = ImagePooling(in_channels, channels)
        self.project = ConvBNAct(channels * (2 + len(self.rates)), channels, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_out, h, w) to (B, 256, h, w)."""
        branches = [self.conv1x1(x), *(conv(x) for conv in self.atrous), self.pooling(x)]
        x = torch.cat(branches, dim=1)  # (B, 5 * 256, h, w)
        out: Tensor = self.dropout(self.project(x))  # (B, 256, h, w)
        return out
