"""A full-resolution head: every input pixel is classified from its own bands and the decoder.

DeepLabV3+ predicts at a quarter of the input resolution and upsamples bilinearly,
so at 10-30 m a one-pixel river, road or coastline is blurred away, and the model
cannot even do what a per-pixel classifier of the bands does. This head reduces the
decoder's stride-4 features, upsamples them to the input size and concatenates them
with features of the input bands themselves before the classifier: the
"full_resolution" option of the model config. The branch over the bands is
``pixel_layers - 1`` 1x1 convs, a small per-pixel network of the band values, then a
3x3 conv. On the dev set this made the Landsat models less dependent on the seed, and
it scored 0.02 higher on Sentinel-2 than the 3x3 conv followed by the 1x1 convs, which
costs fewer multiply-adds (see docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from terraseg.pipeline.model.layers import ConvBNAct, upsample_to


class FullResolutionRefine(nn.Module):
    """Fuse upsampled decoder features with full-resolution features of the input bands.

    Args:
        in_bands: Bands of the input image.
        features: Channels of the decoder output (256 at width 1).
        width: Channels of the full-resolution features (32 at width 1).
        pixel_layers: Layers of the branch over the bands (1: one 3x3 conv, with the
            state-dict keys of models saved before the option existed).
    """

    def __init__(self, in_bands: int, features: int, width: int = 32, pixel_layers: int = 1):
        super().__init__()
        self.reduce = ConvBNAct(features, width, 1)
        self.pixels: nn.Module = ConvBNAct(in_bands, width, 3)
        if pixel_layers > 1:
            per_pixel = [ConvBNAct(in_bands if i == 0 else width, width, 1)
                         for i in range(pixel_layers - 1)]  # fmt: skip
            self.pixels = nn.Sequential(*per_pixel, ConvBNAct(width, width, 3))
        self.fuse = ConvBNAct(2 * width, width, 3)

    def forward(self, features: Tensor, x: Tensor) -> Tensor:
        """Map (B, C, H/4, W/4) decoder features and the (B, bands, H, W) input to (B, w, H, W)."""
        coarse = upsample_to(self.reduce(features), x.shape[-2:])  # (B, w, H, W)
        pixels = self.pixels(x.to(coarse.dtype))  # the input is float32 where the rest is bf16
        out: Tensor = self.fuse(torch.cat([coarse, pixels], dim=1))  # (B, w, H, W)
        return out
