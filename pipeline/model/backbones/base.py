"""What every backbone provides: two feature maps and the names its weights use."""

from __future__ import annotations

from typing import ClassVar, Protocol

from torch import Tensor, nn


class Backbone(nn.Module):
    """An encoder that returns the stride-4 feature and the output-stride feature.

    Subclasses set the channel counts in ``__init__`` and the class variables that
    describe the reference state-dict layout their attribute names follow.
    """

    #: Where the attribute names come from, e.g. "torchvision ResNet".
    layout: ClassVar[str]
    #: State-dict key of the first convolution's weight (adapted to the band count).
    first_conv: ClassVar[str]
    #: Key prefixes of the reference layout that a backbone has no use for
    #: (ImageNet classifier), skipped when loading and listed in the report.
    unused_prefixes: ClassVar[tuple[str, ...]]

    low_level_channels: int
    out_channels: int

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """Map (B, bands, H, W) to ((B, C_low, H/4, W/4), (B, C_out, H/os, W/os))."""
        raise NotImplementedError


class BackboneBuilder(Protocol):
    """Signature shared by the entries of ``BACKBONES``."""

    def __call__(
        self,
        *,
        in_channels: int,
        output_stride: int,
        width_multiplier: float,
        multi_grid: tuple[int, ...],
    ) -> Backbone:
        """Build the backbone for these bands, output stride and width."""
        ...
