"""The end of a run on rank 0: the best model as an artifact, calibrated for int8, and a summary."""

from __future__ import annotations

from typing import Any

from terraseg.pipeline.artifact import ModelArtifact, save_artifact
from terraseg.pipeline.files import write_json
from terraseg.pipeline.store import store_digest, store_location, store_resolution
from terraseg.pipeline.training.calibration import calibrate_on_store
from terraseg.pipeline.training.checkpoint import load_checkpoint
from terraseg.pipeline.training.plots import plot_curves
from terraseg.pipeline.training.records import log_headline
from terraseg.pipeline.training.state import RunContext, RunState
from terraseg.pipeline.training.uncertainty import report_uncertainty


def finish(run: RunContext, state: RunState) -> dict[str, Any]:
    """Export the best checkpoint's model, plot the learning curves, and summarize.

    The tracker gets the model, then the best epoch's metrics as the run's headline
    (see :func:`~terraseg.pipeline.training.records.log_headline`).

    Args:
        run: The run's config, store, folder and tracker.
        state: The progress at the last epoch.

    Returns:
        The summary, also written to ``OUT/summary.json`` (strict JSON, a metric
        that is not a number is null): best epoch, best
        validation mean IoU, per-class IoU, throughput, paths and the model URI,
        and the validation's uncertainty (see :mod:`terraseg.pipeline.training.uncertainty`).
    """
    out, history = run.out, state.history
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    best_metrics = next(h for h in history if h["epoch"] == state.best_epoch)
    artifact = ModelArtifact(
        model_config=run.model_config.model_dump(mode="json"),
        band_names=run.info.band_names,
        normalization=run.info.normalization,
        classes=run.info.classes,
        tile_size=run.info.tile_size,
        state_dict=best["model"],
        input_dtype=run.info.input_dtype,
        metadata=_metadata(run, state.best_epoch, best_metrics),
    )
    artifact.calibration = calibrate_on_store(
        artifact.build_model(), run.info, run.config.int8_calibration
    )
    model_dir = save_artifact(artifact, out / "model")
    curves = plot_curves(history, out / "plots" / "curves.png")
    run.tracker.log_artifact(curves, "plots")
    model_uri = run.tracker.log_model(model_dir)
    names = run.info.classes.names
    summary = {
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_mean_iou": state.best_miou,
        "val_iou": {n: best_metrics[f"val/iou/{n}"] for n in names},
        "val_pixel_accuracy": best_metrics["val/pixel_accuracy"],
        "last_train_loss": history[-1]["train/loss"],
        "steps_per_epoch": run.steps_per_epoch,
        "images_per_s": history[-1]["train/images_per_s"],
        "data_wait": history[-1]["train/data_wait"],
        "model": str(model_dir),
        "model_uri": model_uri,
        "checkpoints": str(out / "checkpoints"),
        "out": str(out),
    }
    summary["val_uncertainty"] = report_uncertainty(run, state, artifact.build_model())
    log_headline(run.tracker, history, state.best_epoch)
    write_json(out / "summary.json", summary)
    return summary


def _metadata(run: RunContext, epoch: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """What the model artifact records of its training: epoch, metrics and store."""
    return {
        "epoch": epoch,
        "metrics": metrics,
        "store": store_location(run.info.path),
        "store_digest": store_digest(run.info.path),
        "resolution": store_resolution(run.info.path),
    }
