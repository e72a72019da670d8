"""Parameters, multiply-adds and forward time of a model, measured on the built model."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.model.deeplab import DeepLabV3Plus, build_network
from terraseg.pipeline.model.ensemble import Ensemble

PARTS = ("backbone", "aspp", "decoder", "refine", "head")


@dataclass(frozen=True)
class PartCost:
    """Parameters and multiply-adds of one part of the model for one tile."""

    name: str
    parameters: int
    macs: int


@dataclass(frozen=True)
class Complexity:
    """Size and cost of a model for one tile (batch 1)."""

    config: ModelConfig
    tile: tuple[int, int]
    parts: tuple[PartCost, ...]

    @property
    def parameters(self) -> int:
        """All parameters of the model."""
        return sum(part.parameters for part in self.parts)

    @property
    def macs(self) -> int:
        """Multiply-adds of one forward pass over one tile."""
        return sum(part.macs for part in self.parts)


def measure_complexity(config: ModelConfig, tile: tuple[int, int]) -> Complexity:
    """Count parameters and multiply-adds of the model ``config`` describes.

    The model is built on the meta device (no memory, no weights file read) and run
    once under ``torch.utils.flop_counter.FlopCounterMode``, which counts
    convolutions and matrix products; multiply-adds are half its FLOPs. Batch
    norm, activations, pooling and interpolation are not counted, as in the paper.
    The figures are one network's: an ensemble (``members``) costs that many times.

    Args:
        config: The architecture.
        tile: Input size (rows, cols).

    Returns:
        Parameters and multiply-adds per part and in total.

    """
    with torch.device("meta"):
        model = build_network(config.model_copy(update={"pretrained_weights": None}))
        x = torch.empty(1, config.in_channels, *tile)
    model.eval()
    with FlopCounterMode(display=False) as counter:
        model(x)
    flops = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    parts = []
    for name in PARTS:
        module: nn.Module | None = getattr(model, name)
        if module is not None:
            params = sum(p.numel() for p in module.parameters())
            macs = flops.get(f"{type(model).__name__}.{name}", 0) // 2
            parts.append(PartCost(name, params, int(macs)))
    return Complexity(config, tile, tuple(parts))


def time_forward(model: DeepLabV3Plus | Ensemble, tile: tuple[int, int], runs: int = 5) -> float:
    """Median wall time in milliseconds of one forward pass over one tile.

    Eval mode, ``torch.inference_mode``, batch 1, random input; one warm-up pass
    is not counted.

    Args:
        model: The model (on the CPU or a device; input is created there).
        tile: Input size (rows, cols).
        runs: Timed passes.

    Returns:
        The median time in milliseconds.

    """
    device = next(model.parameters()).device
    x = torch.randn(1, model.in_channels, *tile, device=device)
    model.eval()
    times = []
    with torch.inference_mode():
        for index in range(runs + 1):
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if index > 0:
                times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000
