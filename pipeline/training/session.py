"""The training driver: one process's share of a run, in phases.

Config, data, model (new or resumed), loop, finish. The caller joins the process
group first and passes this process's :class:`~terraseg.pipeline.training.components.Placement`
and a :class:`~terraseg.pipeline.training.tracker.Tracker`; ``terraseg.workflows.train_run`` does
both for the CLI. Rank 0 alone logs, tracks and writes files; metrics are computed
from confusion matrices summed over ranks, so every rank takes the same decisions.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from terraseg.pipeline.errors import TrainingError
from terraseg.pipeline.model.config import stored_model_config
from terraseg.pipeline.training.checkpoint import check_compatible, load_checkpoint
from terraseg.pipeline.training.components import (
    Placement,
    build_network,
    make_loaders,
    make_step_context,
    resolve_model_config,
)
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.dataset import read_store_info
from terraseg.pipeline.training.finish import finish
from terraseg.pipeline.training.loop import (
    NonFiniteLossError,
    StepContext,
    all_reduce_sum,
    train_one_epoch,
    validate,
    wait_for_all,
)
from terraseg.pipeline.training.recipe import describe_recipe
from terraseg.pipeline.training.records import end_epoch, start_outputs
from terraseg.pipeline.training.sampler import WeightedCropSampler
from terraseg.pipeline.training.seeding import seed_epoch
from terraseg.pipeline.training.state import RunContext, RunState, restore_progress
from terraseg.pipeline.training.tracker import Tracker

logger = logging.getLogger(__name__)


def run_training(
    config: TrainConfig,
    data: Path,
    out: Path,
    *,
    place: Placement,
    tracker: Tracker,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a DeepLabV3+ on the store ``data``; write checkpoints, plots and the model to ``out``.

    Args:
        config: The training config.
        data: The Zarr store written by ``terraseg tile``.
        out: The run folder.
        place: This process's rank, the number of ranks and the device; the
            process group is joined when there is more than one rank.
        tracker: Where rank 0 reports parameters, metrics, plots and the model.
        resume: Continue from ``out/checkpoints/last.pt``.
        progress: Show a progress bar (on rank 0).

    Returns:
        On rank 0, the summary: best epoch, best validation mean IoU, per-class
        IoU, paths. ``{}`` on the other ranks, returned as soon as all ranks are
        done training, without waiting for rank 0 to export the model.

    Raises:
        TrainingError: The store cannot be trained on, the checkpoint does not match
            it, or the loss became NaN (the last good checkpoint is kept).
    """
    info = read_store_info(data, config.data.min_valid_fraction)
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(out / "checkpoints" / "last.pt")
        check_compatible(checkpoint, info.classes.names, len(info.band_names), data)
    if checkpoint is not None:  # what the saved weights were trained with (older runs too)
        config = as_checkpointed(config, checkpoint)
    info = replace(info, normalization_method=config.data.normalization)
    model_config = resolve_model_config(config, info)
    config = config.model_copy(update={"model": model_config})  # saved with bands and classes
    train_loader, val_loader, sampler, steps = make_loaders(config, info, place)
    raw, trained = build_network(
        model_config, config, place, checkpoint["model"] if checkpoint else None
    )
    step_ctx = make_step_context(config, info, place, trained, steps)
    if place.is_main:
        _announce(describe_recipe(config, info, model_config, steps, place.world), progress)
    state = RunState()
    if checkpoint is not None:
        restore_progress(checkpoint, step_ctx, state)
    run = RunContext(config, info, model_config, out, place, tracker, steps)
    if place.is_main:
        start_outputs(run, state)
    loaders = (train_loader, val_loader)
    _loop(run, step_ctx, raw, state, loaders, sampler, steps, progress and place.is_main)
    # The last collective call: rank 0's long work (int8 calibration, the model upload)
    # follows with no rank waiting on it, so no collective timeout can cut it short.
    wait_for_all(place.world)
    if not place.is_main:
        return {}
    return finish(run, state)


def _announce(line: str, progress: bool) -> None:
    """Show the run's recipe above the progress bars, or log it when there are none."""
    if progress:
        tqdm.write(line, file=sys.stderr)
    else:
        logger.info(line)


def as_checkpointed(config: TrainConfig, checkpoint: dict[str, Any]) -> TrainConfig:
    """``config`` with the architecture and normalization the checkpoint was trained with.

    A run saved before an option existed resumes with what it had: no full-resolution
    head, one pixel layer, mean/std normalization.
    """
    saved = stored_model_config(checkpoint["model_config"])
    saved_data = (checkpoint.get("config") or {}).get("data") or {}
    architecture = {key: saved[key] for key in ("full_resolution", "pixel_layers")}
    model = config.model.model_copy(update=architecture)
    data = config.data.model_copy(
        update={"normalization": saved_data.get("normalization", "mean_std")}
    )
    return config.model_copy(update={"model": model, "data": data})


def _loop(
    run: RunContext,
    step_ctx: StepContext,
    raw: nn.Module,
    state: RunState,
    loaders: tuple[DataLoader[Any], DataLoader[Any]],
    sampler: WeightedCropSampler,
    steps: int,
    progress: bool,
) -> None:
    """Train and validate from the epoch after ``state.epoch`` to the last, or early stop."""
    config, place = run.config, run.place
    train_loader, val_loader = loaders
    for epoch in range(state.epoch + 1, config.epochs + 1):
        seed_epoch(config.seed, epoch, place.rank, loaders)  # dropout, loaders: from the epoch
        sampler.set_epoch(epoch)
        try:
            train_stats = train_one_epoch(
                step_ctx,
                train_loader,
                steps=steps,
                accumulate=config.optimizer.accumulate,
                epoch=epoch,
                progress=progress,
            )
        except NonFiniteLossError as exc:
            raise nan_error(exc, epoch, run.out / "checkpoints" / "last.pt") from None
        keep = config.overlays if place.is_main else 0
        matrix, samples = validate(raw, val_loader, run.info.num_classes, step_ctx, keep)
        summed = all_reduce_sum(matrix, place.world).cpu().numpy()
        if end_epoch(run, step_ctx, raw, state, epoch, train_stats, summed, samples):
            break


def nan_error(exc: NonFiniteLossError, epoch: int, last: Path) -> TrainingError:
    """The error that stops a run whose loss is no longer finite.

    Args:
        exc: What the training step raised.
        epoch: The epoch it happened in.
        last: The last checkpoint, kept as it is.

    Returns:
        A one-line error naming the step, the checkpoint and what to change.
    """
    kept = "the last good checkpoint is kept" if last.is_file() else "no checkpoint was written"
    if exc.skipped:
        return TrainingError(
            f"fp16 gradients were not finite in {exc.skipped} steps in a row, up to epoch "
            f"{epoch}, step {exc.step} (optimizer steps from the start; loss {exc.value}); "
            f"stopped, {kept}; train in bf16 (GPUs of compute capability 8.0 or newer) or "
            "fp32, lower optimizer.lr or set optimizer.grad_clip",
            path=last,
        )
    return TrainingError(
        f"loss became {exc.value} at epoch {epoch}, step {exc.step} (optimizer steps from the "
        f"start); stopped, {kept}; lower optimizer.lr or set optimizer.grad_clip",
        path=last,
    )
