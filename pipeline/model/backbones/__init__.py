"""Backbones of DeepLabV3+, built in plain torch, by name."""

from __future__ import annotations

from pipeline.model.backbones.base import Backbone, BackboneBuilder
from pipeline.model.backbones.mobilenetv2 import mobilenetv2
from pipeline.model.backbones.resnet import resnet50, resnet101
from pipeline.model.backbones.xception import xception65

BACKBONES: dict[str, BackboneBuilder] = {
    "resnet50": resnet50,
    "resnet101": resnet101,
    "xception65": xception65,
    "mobilenetv2": mobilenetv2,
}

__all__ = ["BACKBONES", "Backbone", "BackboneBuilder"]
