"""DeepLabV3+ in plain PyTorch: configuration, factory, backbones and weights loading.

``ModelConfig`` imports without torch; the torch-backed names load on first use so
that command-line help stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from terraseg.pipeline.model.config import ModelConfig

if TYPE_CHECKING:
    from terraseg.pipeline.model.backbones import BACKBONES
    from terraseg.pipeline.model.deeplab import DeepLabV3Plus, build_model

_LAZY = {
    "BACKBONES": "terraseg.pipeline.model.backbones",
    "DeepLabV3Plus": "terraseg.pipeline.model.deeplab",
    "build_model": "terraseg.pipeline.model.deeplab",
}

__all__ = ["BACKBONES", "DeepLabV3Plus", "ModelConfig", "build_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
