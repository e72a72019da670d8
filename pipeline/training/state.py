"""What a run carries from epoch to epoch and across a resume, and what stays fixed.

:class:`RunState` changes every epoch and travels in the checkpoint;
:class:`RunContext` is set up once and read by every end-of-epoch step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.training.checkpoint import rng_state, set_rng_state
from terraseg.pipeline.training.components import Placement
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.dataset import StoreInfo
from terraseg.pipeline.training.loop import StepContext
from terraseg.pipeline.training.tracker import Tracker


@dataclass
class RunState:
    """Progress that a checkpoint carries besides the weights and optimizer."""

    epoch: int = 0
    best_miou: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """For the checkpoint."""
        return {
            "epoch": self.epoch,
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "history": self.history,
        }


@dataclass
class RunContext:
    """The fixed surroundings of a run: its config, store, output folder, rank and tracker."""

    config: TrainConfig  # with bands and classes resolved from the store
    info: StoreInfo
    model_config: ModelConfig
    out: Path
    place: Placement
    tracker: Tracker
    steps_per_epoch: int  # optimizer steps, as the loaders were built


def make_checkpoint(
    run: RunContext, step_ctx: StepContext, raw: nn.Module, state: RunState
) -> dict[str, Any]:
    """The checkpoint dict.

    Args:
        run: The run's config, store and model config.
        step_ctx: The optimizer, schedule, scaler and step count.
        raw: The unwrapped, uncompiled model.
        state: Epoch, best epoch and history.

    Returns:
        The model's state, its config, the optimizer, schedule and scaler states,
        the step, the progress, the RNG states and the training config.
    """
    scaler = step_ctx.scaler
    scheduler = step_ctx.scheduler
    return {
        "model": raw.state_dict(),
        "model_config": run.model_config.model_dump(mode="json"),
        "config": run.config.model_dump(mode="json"),
        "classes": run.info.classes.names,
        "optimizer": step_ctx.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": step_ctx.step,
        "state": state.as_dict(),
        "rng": rng_state(),
    }


def restore_progress(checkpoint: dict[str, Any], step_ctx: StepContext, state: RunState) -> None:
    """Put the optimizer, scaler, schedule, progress and RNG states of ``checkpoint`` back.

    The model's weights are loaded when it is built; see
    :func:`~terraseg.pipeline.training.components.build_network`. Every epoch then seeds
    its generators from ``(seed, epoch, rank)`` (:mod:`terraseg.pipeline.training.seeding`),
    so the epochs that follow draw what they would have drawn without the stop.
    """
    step_ctx.optimizer.load_state_dict(checkpoint["optimizer"])
    if step_ctx.scaler is not None and checkpoint.get("scaler"):
        step_ctx.scaler.load_state_dict(checkpoint["scaler"])
    step_ctx.step = int(checkpoint["step"])
    if isinstance(step_ctx.scheduler, LambdaLR):
        continue_schedule(step_ctx.scheduler, step_ctx.step)
    saved = checkpoint["state"]
    state.epoch, state.best_miou = int(saved["epoch"]), float(saved["best_miou"])
    state.best_epoch, state.history = int(saved["best_epoch"]), list(saved["history"])
    set_rng_state(checkpoint["rng"])


def continue_schedule(scheduler: LambdaLR, step: int) -> None:
    """Place the current config's schedule at ``step``.

    The schedule is rebuilt from the config rather than loaded, so a resumed run
    may raise ``epochs`` or change ``optimizer.lr``; with the same config the
    learning rates equal those of an uninterrupted run.

    Args:
        scheduler: The schedule built from the current config.
        step: Optimizer steps done so far.
    """
    scheduler.last_epoch = step
    lrs = [
        base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, base, lr in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, lrs, strict=True
    ):
        group["initial_lr"], group["lr"] = base, lr
    scheduler._last_lr = lrs
