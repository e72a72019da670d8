"""Explicit zero padding for depthwise convolutions with wide padding, for CPU inference.

oneDNN's depthwise kernels slow down sharply once a convolution's zero padding is
wider than 6 pixels: a 3x3 depthwise conv over 2048 x 32 x 32 in bf16 takes
2.4 ms at dilation 6 but 34 ms at dilation 12 and 50 ms at dilation 18, and
5 to 7 ms when the input is padded first and the conv itself pads nothing. The
ASPP's atrous branches (rates 12 and 18 at output stride 16, up to 36 at 8) are
such convolutions: they took a sixth of a ResNet-50 DeepLabV3+ forward pass.
"""

from __future__ import annotations

from torch import nn

# Widest padding oneDNN's depthwise kernels handle at full speed (measured: 6 is
# fast, 7 and up slow, at 16 x 16 to 64 x 64 maps, in bf16 and fp32).
FAST_PADDING = 6


def pad_wide_depthwise(model: nn.Module, fast_padding: int = FAST_PADDING) -> nn.Module:
    """Give depthwise convs padded wider than ``fast_padding`` an explicit pad, in place.

    Each such ``Conv2d`` becomes ``Sequential(ZeroPad2d, Conv2d)`` with the same
    weights and no padding of its own, which computes the same function. Apply
    after :func:`~terraseg.pipeline.model.fusion.fuse_batch_norms`, which looks for the
    plain ``Conv2d`` layers.
    """
    for module in list(model.modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.Conv2d) and _is_wide_depthwise(child, fast_padding):
                module._modules[name] = _explicitly_padded(child)
    return model


def _is_wide_depthwise(conv: nn.Conv2d, fast_padding: int) -> bool:
    depthwise = conv.groups > 1 and conv.groups == conv.in_channels
    padding = _numeric_padding(conv)
    return depthwise and conv.padding_mode == "zeros" and max(padding) > fast_padding


def _numeric_padding(conv: nn.Conv2d) -> tuple[int, int]:
    """(rows, cols) of zero padding; (0, 0) for the string forms ``valid`` and ``same``."""
    padding = conv.padding
    if isinstance(padding, str):
        return 0, 0
    return int(padding[0]), int(padding[1])


def _explicitly_padded(conv: nn.Conv2d) -> nn.Sequential:
    rows, cols = _numeric_padding(conv)
    conv.padding = (0, 0)
    return nn.Sequential(nn.ZeroPad2d((cols, cols, rows, rows)), conv)
