"""Test data generated in code: tiny synthetic scenes from `terraseg synth`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.settings import build_config
from pipeline.synth.config import SynthConfig
from pipeline.synth.writer import SynthOutputs, synthesize

TINY = {"scenes": 2, "size": "256x192", "seed": 11, "resolution": 2.0, "workers": 1}


def tiny_scenes(out: Path, **changes: Any) -> SynthOutputs:
    """Two 256 x 192 scenes at 2 m (one generation cell each)."""
    return synthesize(build_config(SynthConfig, {**TINY, **changes}), out)
