"""The model's configuration: which backbone, output stride, decoder, bands and classes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from terraseg.pipeline.settings import StrictModel

BackboneName = Literal["resnet50", "resnet101", "xception65", "mobilenetv2"]


def stored_model_config(data: dict[str, object]) -> dict[str, object]:
    """A model config as saved by an earlier terraseg, with the architecture it had.

    Options added since keep the value that rebuilds the saved weights: a config
    without ``full_resolution`` was saved before the option existed (false), one
    without ``pixel_layers`` had one pixel layer, one without ``members`` one network.
    """
    return {"full_resolution": False, "pixel_layers": 1, "members": 1, **data}


class ModelConfig(StrictModel):
    """Architecture of a DeepLabV3+ model; ``build_model`` turns it into a module.

    The trainer and the model artifact store ``config.model_dump()`` next to the
    weights and rebuild the model with ``build_model(ModelConfig(**data))``.
    """

    backbone: BackboneName = "resnet50"
    output_stride: Literal[8, 16] = 16
    decoder: bool = True
    in_channels: int = Field(default=3, ge=1, le=1024)
    num_classes: int = Field(default=2, ge=1, le=65535)
    width_multiplier: float = Field(default=1.0, gt=0.0, le=4.0)
    multi_grid: tuple[int, int, int] = (1, 2, 4)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    full_resolution: bool = Field(
        default=True,
        description="Classify at the input resolution from the decoder's features and the "
        "input bands (false: the paper's stride-4 logits upsampled bilinearly; models saved "
        "before this option existed are false).",
    )
    pixel_layers: int = Field(
        default=3,
        ge=1,
        le=8,
        description="Layers of the full-resolution head's branch over the input bands: 1 is "
        "a 3x3 conv; more put 1x1 convs (a per-pixel network of the band values) before it "
        "(models saved before this option existed have 1).",
    )
    members: int = Field(
        default=0,
        ge=0,
        le=8,
        description="Networks trained side by side, each from initial weights and on "
        "training crops of its own, whose class probabilities are averaged (a deep "
        "ensemble; prediction takes as many times as long). 0: automatic, 3 when the "
        "training tiles hold fewer than 1 million labelled pixels, otherwise 1 (models "
        "saved before this option existed have 1).",
    )
    pretrained_weights: Path | None = None
    strict_weights: bool = True
