"""DeepLabV3+: backbone, ASPP, decoder and classifier head, and the factory that builds it."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn
from torch.nn import functional

from terraseg.pipeline.errors import ModelInputError
from terraseg.pipeline.model.aspp import ASPP
from terraseg.pipeline.model.backbones import BACKBONES, Backbone
from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.model.decoder import Decoder
from terraseg.pipeline.model.ensemble import Ensemble
from terraseg.pipeline.model.layers import init_weights, scaled_channels, upsample_to
from terraseg.pipeline.model.refine import FullResolutionRefine
from terraseg.pipeline.model.weights import load_backbone_weights

logger = logging.getLogger(__name__)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (Chen et al. 2018): encoder with atrous convs, ASPP, decoder, head.

    Input (B, bands, H, W) float32 gives logits (B, classes, H, W) for any H and W.
    Sizes that are not multiples of the output stride are padded at the bottom and
    right by repeating the edge pixels, and the logits are cropped back, so every
    feature map is exactly H/4 or H/os of the padded size and bilinear upsampling
    stays aligned. Without the decoder (``decoder=False``, "BU" in the paper) the
    ASPP logits are upsampled bilinearly to the input size.

    Args:
        backbone: The encoder; gives the stride-4 and the output-stride features.
        num_classes: Number of output channels (classes).
        output_stride: Total stride of the backbone's output, 8 or 16.
        decoder: Whether to use the decoder (otherwise bilinear upsampling).
        channels: Channels of the ASPP branches and decoder convs (256).
        low_level_reduced: Channels the stride-4 feature is reduced to (48).
        dropout: Dropout after the ASPP projection (0.1).
        full_resolution: Classify at the input resolution from the decoder's features
            and the input bands (:class:`FullResolutionRefine`) instead of upsampling
            stride-4 logits.
        refine_channels: Channels of the full-resolution features (32).
        pixel_layers: Layers of the head's branch over the input bands.

    """

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int,
        output_stride: int,
        decoder: bool = True,
        channels: int = 256,
        low_level_reduced: int = 48,
        dropout: float = 0.1,
        full_resolution: bool = False,
        refine_channels: int = 32,
        pixel_layers: int = 1,
    ) -> None:
        super().__init__()
        self.output_stride = output_stride
        self.in_channels = int(backbone.get_parameter(backbone.first_conv).shape[1])
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, output_stride, channels, dropout)
        self.decoder: Decoder | None = None
        if decoder:
            self.decoder = Decoder(
                backbone.low_level_channels, channels, low_level_reduced, channels
            )
        self.refine: FullResolutionRefine | None = None
        if full_resolution:
            self.refine = FullResolutionRefine(
                self.in_channels, channels, refine_channels, pixel_layers
            )
        self.head = nn.Conv2d(refine_channels if full_resolution else channels, num_classes, 1)
        init_weights(self)

    def forward(self, x: Tensor, *, logits_dtype: torch.dtype | None = None) -> Tensor:
        """Map (B, bands, H, W) to logits (B, classes, H, W).

        Args:
            x: The input tiles.
            logits_dtype: Convert the head's output to this dtype, in plain
                (B, C, H, W) layout, before the final upsampling. For bf16 inference
                on CPU: upsampling 5 x 128 x 128 logits to 512 x 512 took 1.8 ms in
                fp32 against 5.5 ms in bf16 channels_last (and its conversion).

        Raises:
            ModelInputError: ``x`` is not 4-D or has the wrong number of bands.

        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ModelInputError(
                f"expected a (batch, {self.in_channels}, rows, cols) tensor, "
                f"got shape {tuple(x.shape)}; the model was built for "
                f"{self.in_channels} bands"
            )
        rows, cols = x.shape[-2], x.shape[-1]
        pad_rows, pad_cols = -rows % self.output_stride, -cols % self.output_stride
        if pad_rows or pad_cols:  # to (B, bands, H', W')
            x = functional.pad(x, (0, pad_cols, 0, pad_rows), mode="replicate")
        low_level, features = self.backbone(x)  # (B, C_low, H'/4, W'/4), (B, C, H'/os, W'/os)
        features = self.aspp(features)  # (B, 256, H'/os, W'/os)
        if self.decoder is not None:
            features = self.decoder(features, low_level)  # (B, 256, H'/4, W'/4)
        if self.refine is not None:
            features = self.refine(features, x)  # (B, 32, H', W')
        logits: Tensor = self.head(features)  # (B, classes, H'/4 or H'/os, ...)
        if logits_dtype is not None:
            logits = logits.to(logits_dtype, memory_format=torch.contiguous_format)
        if logits.shape[-2:] != x.shape[-2:]:
            logits = upsample_to(logits, x.shape[-2:])  # (B, classes, H', W')
        return logits[:, :, :rows, :cols]  # (B, classes, H, W)


def build_model(config: ModelConfig) -> DeepLabV3Plus | Ensemble:
    """Build (and initialize) the model a configuration describes.

    Channel counts of ASPP and decoder scale with ``width_multiplier`` like the
    backbone's. Backbone weights named by ``pretrained_weights`` are loaded after
    initialization (see :func:`terraseg.pipeline.model.weights.load_backbone_weights`).
    With ``members`` above 1 the model is an
    :class:`~terraseg.pipeline.model.ensemble.Ensemble` of that many networks, each
    initialized in turn (0, automatic, is resolved by the trainer; built as 1 here).

    Args:
        config: The architecture.

    Returns:
        The model, in training mode.

    Raises:
        WeightsError: The weights file does not fit the backbone.

    """
    if config.members > 1:
        return Ensemble([build_network(config) for _ in range(config.members)])
    return build_network(config)


def build_network(config: ModelConfig) -> DeepLabV3Plus:
    """Build (and initialize) one DeepLabV3+ network of ``config`` (``members`` aside)."""
    width = config.width_multiplier
    backbone = BACKBONES[config.backbone](
        in_channels=config.in_channels,
        output_stride=config.output_stride,
        width_multiplier=width,
        multi_grid=config.multi_grid,
    )
    model = DeepLabV3Plus(
        backbone,
        num_classes=config.num_classes,
        output_stride=config.output_stride,
        decoder=config.decoder,
        channels=scaled_channels(256, width),
        low_level_reduced=scaled_channels(48, width),
        dropout=config.dropout,
        full_resolution=config.full_resolution,
        refine_channels=scaled_channels(32, width),
        pixel_layers=config.pixel_layers,
    )
    if config.pretrained_weights is not None:
        report = load_backbone_weights(
            model.backbone, config.pretrained_weights, strict=config.strict_weights
        )
        logger.info("%s", report.summary())
    return model
