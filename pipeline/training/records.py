"""What rank 0 records of a run: the output folder, per-epoch metrics, checkpoints, plots.

Output folder::

    OUT/config.yaml               the full training config
    OUT/metrics.jsonl             one line of metrics per epoch (strict JSON: NaN is null)
    OUT/checkpoints/last.pt       model, optimizer, scheduler, scaler, epoch, RNG, config
    OUT/checkpoints/best.pt       the same at the best validation mean IoU
    OUT/plots/*.png               confusion matrix, validation overlays, learning curves
    OUT/model/                    the best model as a terraseg model artifact
    OUT/summary.json              what the command prints at the end
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from terraseg.pipeline.errors import OutputExistsError
from terraseg.pipeline.files import json_text, write_text
from terraseg.pipeline.store import store_digest, store_location
from terraseg.pipeline.training.checkpoint import save_checkpoint
from terraseg.pipeline.training.components import Placement
from terraseg.pipeline.training.loop import StepContext, all_reduce_sum
from terraseg.pipeline.training.metrics import scores
from terraseg.pipeline.training.plots import plot_confusion, plot_overlays
from terraseg.pipeline.training.state import RunContext, RunState, make_checkpoint
from terraseg.pipeline.training.tracker import NullTracker, Tracker, code_version, flatten

logger = logging.getLogger(__name__)


def prepare_output(out: Path, place: Placement, *, resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for a run: rank 0 checks it and removes a former run; others wait.

    Every rank calls this after joining the process group and before writing
    anything. Rank 0 alone looks at the folder and, with ``overwrite``, removes it;
    the other ranks wait until it is done and take its verdict, so all ranks go on
    or stop together.

    Args:
        out: The run folder.
        place: This process's rank, the number of ranks and the device.
        resume: The run continues the one in ``out``: nothing is checked or removed.
        overwrite: Remove a former run in ``out``.

    Raises:
        OutputExistsError: On every rank, when ``out`` holds a training run and
            neither ``resume`` nor ``overwrite`` is set.
    """
    taken = torch.zeros(1, dtype=torch.int64, device=place.device)
    if place.is_main and not resume and (out / "checkpoints").exists():
        if overwrite:
            shutil.rmtree(out)
        else:
            taken += 1
    all_reduce_sum(taken, place.world)  # the other ranks wait here for rank 0
    if taken.item():
        raise OutputExistsError(
            "holds a training run; pass --resume to continue it or --overwrite", path=out
        )


def start_outputs(run: RunContext, state: RunState) -> None:
    """Create the output folder; write the config and the history so far; log parameters.

    The tracker also gets the training store as the run's dataset (path and
    :func:`~terraseg.pipeline.store.store_digest`).

    The history restored from a checkpoint is reported to the tracker again: an
    MLflow run reopened for the resume skips the epochs it holds, a new one gets
    them all, so the run that goes on holds every epoch.

    Args:
        run: The run's config, store, folder and tracker.
        state: The progress restored from a checkpoint (empty for a new run).
    """
    out, config, info = run.out, run.config, run.info
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    config_path = out / "config.yaml"
    write_text(config_path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    write_metrics(out, state.history)
    params = flatten(config.model_dump(mode="json"))
    params["data.store"] = info.path
    for band in info.statistics:
        for key in ("mean", "std", "p2", "p98"):
            params[f"statistics.{band['band']}.{key}"] = band[key]
    if not isinstance(run.tracker, NullTracker):
        params |= code_version()
    run.tracker.log_params(params)
    profile = {"scenes": len({t.scene for t in info.train + info.val}),
               "train_tiles": len(info.train), "val_tiles": len(info.val)}  # fmt: skip
    run.tracker.log_dataset(store_location(info.path), store_digest(info.path), profile)
    run.tracker.log_artifact(config_path)
    for metrics in state.history:  # a resumed run: a tracker skips the epochs it holds
        log_epoch(run, metrics)


def log_epoch(run: RunContext, metrics: dict[str, Any]) -> None:
    """Report an epoch's finite metrics to the tracker, at the epoch as the step."""
    run.tracker.log_metrics(_finite(metrics), step=int(metrics["epoch"]))


def log_headline(tracker: Tracker, history: list[dict[str, Any]], best_epoch: int) -> None:
    """Make the best epoch's metrics the run's headline; keep the last epoch's as ``last/*``.

    A tracker shows each metric's latest value as the run's value; the model a run
    exports and registers is the best epoch's, so the best epoch's metrics are
    reported again under their own names one step after the last epoch (as
    MLflow's Keras autologging reports the restored weights' metrics), with
    ``best_epoch`` and ``last_epoch``. The last epoch's metrics stay in the
    per-epoch history and are also reported as ``last/NAME`` at the last epoch.

    Args:
        tracker: Where to report.
        history: The metrics of every epoch, each with its ``epoch``.
        best_epoch: The epoch whose weights the run exports.
    """
    if not history:
        return
    last = history[-1]
    best = next(h for h in history if h["epoch"] == best_epoch)
    last_epoch = int(last["epoch"])
    tracker.log_metrics({f"last/{k}": v for k, v in _finite(last).items()}, step=last_epoch)
    headline = _finite(best) | {"best_epoch": float(best_epoch), "last_epoch": float(last_epoch)}
    tracker.log_metrics(headline, step=last_epoch + 1)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are numbers, without ``epoch``, as floats."""
    return {k: float(v) for k, v in metrics.items() if k != "epoch" and np.isfinite(v)}


def write_metrics(out: Path, history: list[dict[str, Any]]) -> None:
    """Write ``OUT/metrics.jsonl`` afresh: one line of strict JSON per epoch (NaN as null).

    Args:
        out: The run folder.
        history: The metrics of every epoch so far.
    """
    write_text(out / "metrics.jsonl", "".join(json_text(metrics) + "\n" for metrics in history))


def epoch_metrics(
    epoch: int, train: dict[str, float], result: dict[str, Any], names: list[str]
) -> dict[str, Any]:
    """Flat metrics of one epoch, as logged to the tracker and metrics.jsonl.

    Args:
        epoch: The epoch (1-based).
        train: The training statistics of the epoch (``loss``, ``lr``, ...).
        result: Validation scores from :func:`~terraseg.pipeline.training.metrics.scores`.
        names: Class names, in class order.

    Returns:
        ``epoch``, ``train/*``, ``val/*`` and ``val/{iou,accuracy,f1}/CLASS`` values.
    """
    metrics: dict[str, Any] = {"epoch": epoch}
    metrics |= {f"train/{k}": v for k, v in train.items()}
    for key in ("mean_iou", "pixel_accuracy", "mean_accuracy", "mean_f1"):
        metrics[f"val/{key}"] = result[key]
    for kind in ("iou", "accuracy", "f1"):
        for name, value in zip(names, result[kind], strict=True):
            metrics[f"val/{kind}/{name}"] = value
    return metrics


def end_epoch(
    run: RunContext,
    step_ctx: StepContext,
    raw: nn.Module,
    state: RunState,
    epoch: int,
    train_stats: dict[str, float],
    matrix: np.ndarray[Any, Any],
    samples: list[Any],
) -> bool:
    """Record the epoch, checkpoint it, and say whether early stopping ends the run.

    Every rank updates ``state`` from the same summed confusion matrix, so all
    ranks stop together; rank 0 alone writes and reports.

    Args:
        run: The run's config, store, folder, rank and tracker.
        step_ctx: The optimizer, schedule and scaler (for the checkpoint).
        raw: The unwrapped model (for the checkpoint).
        state: Progress, updated in place.
        epoch: The epoch that ended.
        train_stats: Its training statistics.
        matrix: The validation confusion matrix summed over ranks.
        samples: Validation ``(image, label, prediction)`` triples for overlays.

    Returns:
        True when ``patience`` epochs passed without a better mean IoU.
    """
    result = scores(matrix)
    metrics = epoch_metrics(epoch, train_stats, result, run.info.classes.names)
    miou = result["mean_iou"] if np.isfinite(result["mean_iou"]) else 0.0
    improved = miou > state.best_miou
    if improved:
        state.best_miou, state.best_epoch = miou, epoch
    state.epoch = epoch
    state.history.append(metrics)
    if run.place.is_main:
        _write_epoch(run, step_ctx, raw, state, metrics, improved)
        if improved:
            _plot_best(run, epoch, matrix, samples)
        log_epoch(run, metrics)
        logger.info("epoch %d: loss %.4f, val mIoU %.4f", epoch, train_stats["loss"], miou)
    patience = run.config.patience
    return patience > 0 and epoch - state.best_epoch >= patience


def _write_epoch(
    run: RunContext,
    step_ctx: StepContext,
    raw: nn.Module,
    state: RunState,
    metrics: dict[str, Any],
    improved: bool,
) -> None:
    write_metrics(run.out, state.history)
    folder = run.out / "checkpoints"
    checkpoint = make_checkpoint(run, step_ctx, raw, state)
    # best.pt before last.pt: a run killed between the two resumes from the epoch
    # before, which redoes this one (deterministically) and finds a best.pt either way
    if improved:
        save_checkpoint(folder / "best.pt", checkpoint)
    save_checkpoint(folder / "last.pt", checkpoint)


def _plot_best(run: RunContext, epoch: int, matrix: Any, samples: list[Any]) -> None:
    plots = run.out / "plots"
    title = f"validation, epoch {epoch}"
    paths = [plot_confusion(matrix, run.info.classes.names, plots / "confusion.png", title)]
    if samples:
        paths.append(plot_overlays(samples, run.info.classes, plots / "overlays.png", title))
    for path in paths:
        run.tracker.log_artifact(path, "plots")
