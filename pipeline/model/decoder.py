"""The DeepLabV3+ decoder: fuse the ASPP output with the stride-4 backbone feature."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from terraseg.pipeline.model.layers import ConvBNAct, SeparableConv2d, upsample_to


class Decoder(nn.Module):
    """Reduce the low-level feature, concatenate, refine with two separable convs.

    The low-level feature is reduced to ``low_level_reduced`` channels (48, paper
    Table 1) so that it does not outweigh the 256 ASPP channels; two 3x3 separable
    convs of ``channels`` (256, paper Table 2) follow.
    """

    def __init__(
        self,
        low_level_channels: int,
        aspp_channels: int = 256,
        low_level_reduced: int = 48,
        channels: int = 256,
    ) -> None:
        super().__init__()
        self.reduce = ConvBNAct(low_level_channels, low_level_reduced, 1)
        self.fuse = nn.Sequential(
            SeparableConv2d(aspp_channels + low_level_reduced, channels, 3),
            SeparableConv2d(channels, channels, 3),
        )

    def forward(self, x: Tensor, low_level: Tensor) -> Tensor:
        """Map (B, 256, H/os, W/os) and (B, C_low, H/4, W/4) to (B, 256, H/4, W/4)."""
        low = self.reduce(low_level)  # (B, 48, H/4, W/4)
        x = upsample_to(x, low.shape[-2:])  # (B, 256, H/4, W/4): x4 at OS16, x2 at OS8
        out: Tensor = self.fuse(torch.cat([x, low], dim=1))  # (B, 256, H/4, W/4)
        return out
