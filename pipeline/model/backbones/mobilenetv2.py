"""MobileNetV2 with atrous convolution, in torchvision's key layout."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from terraseg.pipeline.model.backbones.base import Backbone
from terraseg.pipeline.model.layers import dilated_strides, scaled_channels

# (expansion t, output channels c, units n, stride s), Sandler et al. 2018, Table 2.
INVERTED_RESIDUALS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
LOW_LEVEL_INDEX = 3  # features.3: last 24-channel unit, stride 4


def conv_bn_relu6(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
) -> nn.Sequential:
    """Conv, BN, ReLU6 as torchvision's ``Conv2dNormActivation`` (keys ``0``, ``1``)."""
    padding = (kernel_size - 1) // 2 * dilation
    return nn.Sequential(
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups=groups, bias=False,
        ),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )  # fmt: skip


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise (strided or dilated), linear 1x1 projection."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, dilation: int, expansion: int
    ) -> None:
        super().__init__()
        hidden = round(in_channels * expansion)
        self.use_residual = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn_relu6(in_channels, hidden, 1))
        layers += [
            conv_bn_relu6(hidden, hidden, 3, stride, dilation, groups=hidden),  # depthwise
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, H, W) to (B, C_out, H / stride, W / stride)."""
        out: Tensor = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(Backbone):
    """MobileNetV2 encoder without the final 1x1 conv to 1280 channels.

    The high-level feature is the 320-channel output of the last inverted residual
    (the DeepLab reference's ``layer_18``); the stride-4 feature is the output of
    ``features.3`` (24 channels). A unit whose stride is dropped keeps the previous
    dilation; later units multiply it (DeepLab reference rule).
    """

    layout: ClassVar[str] = "torchvision MobileNetV2"
    first_conv: ClassVar[str] = "features.0.0.weight"
    unused_prefixes: ClassVar[tuple[str, ...]] = ("features.18.", "classifier.")

    def __init__(
        self,
        *,
        in_channels: int,
        output_stride: int,
        width_multiplier: float = 1.0,
        multi_grid: tuple[int, ...] = (1, 1, 1),
    ) -> None:
        super().__init__()
        del multi_grid  # the paper uses multi-grid with ResNet only
        units = [
            (t, scaled_channels(c, width_multiplier), s if i == 0 else 1)
            for t, c, n, s in INVERTED_RESIDUALS
            for i in range(n)
        ]
        plan = dilated_strides([s for _, _, s in units], output_stride, input_stride=2)
        channels = scaled_channels(32, width_multiplier)
        layers: list[nn.Module] = [conv_bn_relu6(in_channels, channels, 3, stride=2)]
        for (expansion, out, _), (stride, rate) in zip(units, plan, strict=True):
            layers.append(InvertedResidual(channels, out, stride, rate, expansion))
            channels = out
        self.features = nn.Sequential(*layers)
        self.low_level_channels = units[LOW_LEVEL_INDEX - 1][1]  # 24
        self.out_channels = channels  # 320

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map (B, bands, H, W) to ((B, 24, H/4, W/4), (B, 320, H/os, W/os))."""
        low = x
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index == LOW_LEVEL_INDEX:
                low = x  # (B, 24, H/4, W/4)
        return low, x
