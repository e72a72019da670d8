"""Aligned Xception-65 as modified for DeepLabV3+, in timm's ``xception65`` key layout."""

from __future__ import annotations

from collections import OrderedDict
from typing import ClassVar, cast

from torch import Tensor, nn

from terraseg.pipeline.model.backbones.base import Backbone
from terraseg.pipeline.model.layers import (
    ConvBNAct,
    SeparableConv2d,
    dilated_strides,
    scaled_channels,
)

BN_EPS = 1e-3  # the TensorFlow-trained reference weights use this epsilon

# (output channels of the three separable convs, stride, start_with_relu, shortcut)
# Entry flow: 3 blocks; middle flow: 16 blocks; exit flow: 2 blocks (paper Fig. 4).
XCEPTION65_BLOCKS: tuple[tuple[tuple[int, int, int], int, bool, bool], ...] = (
    ((128, 128, 128), 2, True, True),
    ((256, 256, 256), 2, True, True),  # its 2nd conv's output is the stride-4 feature
    ((728, 728, 728), 2, True, True),
    *(((728, 728, 728), 1, True, True),) * 16,
    ((728, 1024, 1024), 2, True, True),
    ((1536, 1536, 2048), 1, False, False),
)
LOW_LEVEL_BLOCK = 1


class XceptionBlock(nn.Module):
    """Three separable 3x3 convs, the last one strided, plus a 1x1 conv shortcut.

    With ``start_with_relu`` each separable conv is preceded by a ReLU and ends
    after its pointwise BN (the original Xception order, so the shortcut is added
    before the activation); otherwise each ends with ReLU and there is no shortcut
    (last exit-flow block). Every depthwise conv is followed by BN and ReLU, as the
    paper modifies Xception; the TensorFlow reference and timm's port leave that
    ReLU out inside the pre-activated blocks, which changes no weight name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: tuple[int, int, int],
        *,
        stride: int,
        dilation: int,
        start_with_relu: bool,
        shortcut: bool,
    ) -> None:
        super().__init__()
        self.shortcut: ConvBNAct | None = None
        if shortcut and (out_channels[-1] != in_channels or stride != 1):
            self.shortcut = ConvBNAct(
                in_channels, out_channels[-1], 1, stride=stride, act=False, bn_eps=BN_EPS
            )
        self.has_skip = shortcut
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels = in_channels
        for index, out in enumerate(out_channels, start=1):
            if start_with_relu:
                layers[f"act{index}"] = nn.ReLU()
            layers[f"conv{index}"] = SeparableConv2d(
                channels, out, 3, stride=stride if index == 3 else 1, dilation=dilation,
                act_pointwise=not start_with_relu, bn_eps=BN_EPS,
            )  # fmt: skip
            channels = out
        self.stack = nn.Sequential(layers)

    def forward_with_inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Block output and the activation that enters the last (strided) conv."""
        inner = x
        for layer in list(self.stack)[:-1]:
            inner = layer(inner)  # after act3: (B, C2, h, w), before the stride
        out = self.stack[-1](inner)
        if self.has_skip:
            out = out + (x if self.shortcut is None else self.shortcut(x))
        return out, inner

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, H, W) to (B, C_out, H / stride, W / stride)."""
        return self.forward_with_inner(x)[0]


class Xception65(Backbone):
    """Aligned Xception-65: strided separable convs instead of max pooling.

    Strides beyond ``output_stride`` become dilation of the following blocks (OS16:
    exit flow at rate 2 after its first block; OS8: middle flow at 2, exit at 2 and 4).
    The stride-4 feature is the 256-channel activation inside entry block 2, before
    its strided conv, as in the DeepLab reference.
    """

    layout: ClassVar[str] = "timm xception65"
    first_conv: ClassVar[str] = "stem.0.conv.weight"
    unused_prefixes: ClassVar[tuple[str, ...]] = ("head.",)

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

        def width(channels: int) -> int:
            return scaled_channels(channels, width_multiplier)

        self.stem = nn.Sequential(
            ConvBNAct(in_channels, width(32), 3, stride=2, bn_eps=BN_EPS),
            ConvBNAct(width(32), width(64), 3, bn_eps=BN_EPS),
        )
        plan = dilated_strides([spec[1] for spec in XCEPTION65_BLOCKS], output_stride, 2)
        blocks = []
        channels = width(64)
        for (outs, _, start_with_relu, shortcut), (stride, rate) in zip(
            XCEPTION65_BLOCKS, plan, strict=True
        ):
            out_channels = (width(outs[0]), width(outs[1]), width(outs[2]))
            blocks.append(
                XceptionBlock(
                    channels,
                    out_channels,
                    stride=stride,
                    dilation=rate,
                    start_with_relu=start_with_relu,
                    shortcut=shortcut,
                )
            )
            channels = out_channels[-1]
        self.blocks = nn.Sequential(*blocks)
        self.low_level_channels = width(XCEPTION65_BLOCKS[LOW_LEVEL_BLOCK][0][1])  # 256
        self.out_channels = channels  # 2048

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map (B, bands, H, W) to ((B, 256, H/4, W/4), (B, 2048, H/os, W/os))."""
        x = self.stem(x)  # (B, 64, H/2, W/2)
        low = x
        for index, block in enumerate(self.blocks):
            if index == LOW_LEVEL_BLOCK:
                x, low = cast(XceptionBlock, block).forward_with_inner(x)  # low: (B, 256, H/4, W/4)
            else:
                x = block(x)
        return low, x
