"""ResNet-50/101 with atrous convolution and multi-grid, in torchvision's key layout."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.model.backbones.base import Backbone
from terraseg.pipeline.model.layers import scaled_channels

EXPANSION = 4  # bottleneck output channels = 4 x its width (He et al. 2016)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided and/or dilated), 1x1 expand, plus shortcut (ResNet v1.5)."""

    def __init__(
        self, in_channels: int, width: int, stride: int, dilation: int, downsample: bool
    ) -> None:
        super().__init__()
        out_channels = width * EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(
            width, width, 3, stride, padding=dilation, dilation=dilation, bias=False
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if downsample:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, H, W) to (B, 4 x width, H / stride, W / stride)."""
        identity: Tensor = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        result: Tensor = self.relu(out + identity)
        return result


class ResNet(Backbone):
    """ResNet v1.5 encoder; strides beyond ``output_stride`` become dilation.

    Every unit of a stage whose stride is dropped uses that stage's rate; the units
    of the last stage multiply it by ``multi_grid`` (DeepLabv3 Sec. 3.2: OS16 gives
    rates 2, 4, 8 in block4, OS8 gives 4, 8, 16; block3 at OS8 uses 2).

    Attribute names follow torchvision (``conv1``, ``bn1``, ``layer1`` to ``layer4``,
    ``downsample.0``/``.1``), so its state dicts load by name.
    """

    layout: ClassVar[str] = "torchvision ResNet"
    first_conv: ClassVar[str] = "conv1.weight"
    unused_prefixes: ClassVar[tuple[str, ...]] = ("fc.",)

    def __init__(
        self,
        blocks: tuple[int, int, int, int],
        *,
        in_channels: int,
        output_stride: int,
        width_multiplier: float = 1.0,
        multi_grid: tuple[int, ...] = (1, 2, 4),
    ) -> None:
        super().__init__()
        stem = scaled_channels(64, width_multiplier)
        self.conv1 = nn.Conv2d(in_channels, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [scaled_channels(c, width_multiplier) for c in (64, 128, 256, 512)]
        current_stride, rate, channels = 4, 1, stem  # after conv1 and maxpool
        layers: list[nn.Sequential] = []
        for index, (n_units, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if index == 0 else 2
            if current_stride * stride > output_stride:
                stride, rate = 1, rate * stride
            current_stride *= stride
            grid = multi_grid if index == 3 else (1,) * n_units
            if len(grid) != n_units:
                raise ConfigError(f"multi_grid needs {n_units} entries, got {grid}")
            layers.append(self._stage(channels, width, n_units, stride, [rate * g for g in grid]))
            channels = width * EXPANSION
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.low_level_channels = widths[0] * EXPANSION  # 256: layer1 output, stride 4
        self.out_channels = channels  # 2048

    @staticmethod
    def _stage(
        in_channels: int, width: int, n_units: int, stride: int, rates: list[int]
    ) -> nn.Sequential:
        units = [Bottleneck(in_channels, width, stride, rates[0], downsample=True)]
        for rate in rates[1:]:
            units.append(Bottleneck(width * EXPANSION, width, 1, rate, downsample=False))
        return nn.Sequential(*units)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map (B, bands, H, W) to ((B, 256, H/4, W/4), (B, 2048, H/os, W/os))."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        low = self.layer1(x)  # (B, 256, H/4, W/4)
        x = self.layer4(self.layer3(self.layer2(low)))  # (B, 2048, H/os, W/os)
        return low, x
