"""Backbones of DeepLabV3+, built in plain torch, by name."""

from __future__ import annotations

from functools import partial

from terraseg.pipeline.model.backbones.base import Backbone, BackboneBuilder
from terraseg.pipeline.model.backbones.mobilenetv2 import MobileNetV2
from terraseg.pipeline.model.backbones.resnet import ResNet
from terraseg.pipeline.model.backbones.xception import Xception65

# Name -> builder called with keyword arguments in_channels, output_stride,
# width_multiplier and multi_grid.
BACKBONES: dict[str, BackboneBuilder] = {
    "resnet50": partial(ResNet, (3, 4, 6, 3)),  # bottleneck units per stage
    "resnet101": partial(ResNet, (3, 4, 23, 3)),
    "xception65": Xception65,
    "mobilenetv2": MobileNetV2,
}

__all__ = ["BACKBONES", "Backbone", "BackboneBuilder"]
