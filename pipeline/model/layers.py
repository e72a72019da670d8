"""Building blocks shared by the backbones, ASPP and decoder: conv-BN-ReLU, separable conv."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class ConvBNAct(nn.Module):
    """Convolution without bias, batch norm, then ReLU (or nothing when ``act=False``).

    Attribute names ``conv`` and ``bn`` match timm's ``ConvNormAct``, so timm weights
    load by name.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        dilation: int = 1,
        act: bool = True,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation  # "same" for odd kernels
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, dilation, bias=False
        )
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.act: nn.Module = nn.ReLU(inplace=True) if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, H, W) to (B, C_out, H / stride, W / stride)."""
        out: Tensor = self.act(self.bn(self.conv(x)))
        return out


class SeparableConv2d(nn.Module):
    """Depthwise conv, BN, ReLU, pointwise 1x1 conv, BN, ReLU (paper Sec. 3.1 and 3.2).

    The paper adds batch norm and ReLU after every depthwise convolution (the
    MobileNet design); most ports skip them. ``act_pointwise=False`` leaves out the
    last ReLU, for the Xception blocks whose next layer starts with a ReLU anyway
    or whose output is added to a shortcut before the activation.

    Attribute names match timm's ``SeparableConv2d`` (``conv_dw``, ``bn_dw``,
    ``conv_pw``, ``bn_pw``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        stride: int = 1,
        dilation: int = 1,
        act_pointwise: bool = True,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        padding = (kernel_size - 1) // 2 * dilation
        self.conv_dw = nn.Conv2d(
            in_channels, in_channels, kernel_size, stride, padding, dilation,
            groups=in_channels, bias=False,
        )  # fmt: skip
        self.bn_dw = nn.BatchNorm2d(in_channels, eps=bn_eps)
        self.act_dw = nn.ReLU(inplace=True)
        self.conv_pw = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.act_pw: nn.Module = nn.ReLU(inplace=True) if act_pointwise else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Map (B, C_in, H, W) to (B, C_out, H / stride, W / stride)."""
        x = self.act_dw(self.bn_dw(self.conv_dw(x)))  # (B, C_in, H / stride, W / stride)
        out: Tensor = self.act_pw(self.bn_pw(self.conv_pw(x)))
        return out


def scaled_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channel count ``channels * width`` rounded to a multiple of ``divisor``.

    ``width == 1`` returns ``channels`` unchanged, so full-width models have the
    paper's channel counts exactly. The rounding is torchvision's MobileNetV2 rule:
    nearest multiple, never below ``divisor`` and never more than 10 % below the
    exact value.

    Args:
        channels: Channel count of the full-width model.
        width: Width multiplier.
        divisor: The result is a multiple of this.

    Returns:
        The scaled channel count.

    """
    if width == 1.0:
        return channels
    exact = channels * width
    value = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    return value + divisor if value < 0.9 * exact else value


def dilated_strides(
    strides: Sequence[int], output_stride: int, input_stride: int = 1
) -> list[tuple[int, int]]:
    """Replace the strides that would exceed ``output_stride`` by dilation.

    A stage whose stride is dropped keeps the dilation of the resolution its input
    lives on; every later stage multiplies its dilation by the dropped stride (the
    rule of the DeepLab reference code for Xception and MobileNetV2).

    Args:
        strides: Stride of each stage in the undilated network.
        output_stride: Largest total stride allowed.
        input_stride: Total stride before the first stage (e.g. 2 after a stem).

    Returns:
        ``(stride, dilation)`` for each stage.

    """
    current, dilation = input_stride, 1
    plan = []
    for stride in strides:
        if current * stride > output_stride:
            plan.append((1, dilation))
            dilation *= stride
        else:
            plan.append((stride, dilation))
            current *= stride
    return plan


def init_weights(module: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU gain), BN weight 1 and bias 0.

    Args:
        module: The module whose submodules are initialized in place.

    """
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.BatchNorm2d):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)


def upsample_to(x: Tensor, size: torch.Size | Sequence[int]) -> Tensor:
    """Bilinear resize of ``x`` (B, C, h, w) to ``size`` (H, W), corners not aligned."""
    return nn.functional.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)
