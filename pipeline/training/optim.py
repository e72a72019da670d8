"""Optimizer and learning-rate schedule: SGD + poly (the paper's recipe) or AdamW + cosine.

The schedule is per optimizer step: linear warm-up from 0, then poly
``(1 - t/T) ** power`` or half-cosine decay to ``min_lr_ratio * lr``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from terraseg.pipeline.training.config import OptimizerConfig, ScheduleConfig


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """Conv and linear weights decay; biases and norm parameters (1-D) do not."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    rest = [p for p in params if p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: OptimizerConfig) -> Optimizer:
    """The configured optimizer over ``model``'s trainable parameters."""
    groups = parameter_groups(model, config.weight_decay)
    match config.name:
        case "sgd":
            return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)
        case "adamw":
            return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas)
        case _:
            raise ValueError(f"unknown optimizer {config.name!r}; use sgd or adamw")


@dataclass
class LRFactor:
    """Multiplier of the peak learning rate at an optimizer step (picklable for checkpoints)."""

    total: int
    warmup: int
    name: str
    power: float
    floor: float

    def __call__(self, step: int) -> float:
        """The factor at optimizer step ``step`` (0-based)."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        match self.name:
            case "poly":
                decay = (1.0 - progress) ** self.power
            case "cosine":
                decay = 0.5 * (1.0 + math.cos(math.pi * progress))
            case _:
                raise ValueError(f"unknown schedule {self.name!r}; use poly or cosine")
        return float(self.floor + (1.0 - self.floor) * decay)


def build_scheduler(
    optimizer: Optimizer, config: ScheduleConfig, total_steps: int, steps_per_epoch: int
) -> LambdaLR:
    """The learning-rate schedule over ``total_steps`` optimizer steps."""
    warmup = round(config.warmup_epochs * steps_per_epoch)
    factor = LRFactor(total_steps, warmup, config.name, config.power, config.min_lr_ratio)
    return LambdaLR(optimizer, factor)
