"""Training from Python: DeepLabV3+ on a Zarr store, on one or several devices."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.training.config import TrainConfig
from terraseg.workflows.api.settings import ConfigSource, stage_config

SAVED_CONFIG = "config.yaml"  # in the run folder: the settings a resumed run reads


def train(
    store: str | Path,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    tracking_uri: str | None = None,
    config: ConfigSource = None,
    progress: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Train a model on a store written by :func:`~terraseg.workflows.api.tile.tile`.

    With ``devices=N`` (in ``settings``) N processes train with
    DistributedDataParallel (NCCL on GPUs, gloo on CPU). The run folder gets
    checkpoints, ``summary.json`` and the model (``OUT/model``); with tracking on,
    the run, its metrics and the model go to MLflow.

    Args:
        store: The Zarr store.
        out: The run folder (default: ``runs/<date>-<time>``).
        resume: Continue the run in ``out`` from its last checkpoint, with the
            settings saved there unless ``config`` is given.
        overwrite: Replace a former run in ``out``.
        tracking_uri: The MLflow tracking store (default: ``MLFLOW_TRACKING_URI``,
            else ``./mlruns``).
        config: A train YAML file or :class:`TrainConfig`.
        progress: Draw progress bars on stderr.
        **settings: Train settings as in ``configs/train.yaml``: top-level fields,
            nested sections as dicts (``optim={"epochs": 3}``) or dotted keys.

    Returns:
        The summary: best epoch, validation mean IoU, per-class IoU, paths; with a
        ``tracking`` entry when the tracking store did not take everything.

    Raises:
        ConfigError: Invalid settings, or ``resume`` without ``out``.
        TrackingError: The tracking store cannot be reached (before any step).
    """
    from terraseg.pipeline.remote import publish_run_folder, stage_run_folder
    from terraseg.workflows.train_run import launch

    if resume and out is None:
        raise ConfigError("resume needs out, the folder of the run to continue")
    target = out if out is not None else Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    run = stage_run_folder(target, resume=resume, overwrite=overwrite)  # s3://: staged here
    saved = run / SAVED_CONFIG
    train_config = stage_config(
        TrainConfig, config if config is not None or not resume or not saved.exists() else saved,
        settings,
    )  # fmt: skip
    if train_config.tracking.alias and not train_config.tracking.register_as:
        raise ConfigError("an alias needs a registered model name (register_as)")
    if train_config.tracking.enabled:
        _connect_tracking(tracking_uri)
    check_crop_size(train_config.data.crop_size, Path(store))
    # A former run in ``out`` is refused, or removed with ``overwrite``, by rank 0 once
    # the processes have joined their group (under torchrun every rank runs this).
    summary = launch(
        train_config, Path(store), run, resume=resume, overwrite=overwrite, progress=progress
    )
    publish_run_folder(run, target)  # a run bound for a bucket is uploaded once finished
    return summary


def _connect_tracking(tracking_uri: str | None) -> None:
    """Check the tracking store answers and hand its URI to every training process."""
    from terraseg.pipeline.registry import check_tracking_reachable, resolve_tracking_uri
    from terraseg.workflows.tracking_fallback import brief_http_retries

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_reachable(uri)  # fail before any step
    os.environ["MLFLOW_TRACKING_URI"] = uri  # every training process inherits it
    brief_http_retries()  # a server gone mid-run: training goes on within seconds


def check_crop_size(crop: int, data: Path) -> None:
    """Refuse crops larger than the store's tiles, before any process starts.

    A training crop is cut from one tile; a larger one would be the tile scaled up.

    Raises:
        InputError: ``data`` is not a finished terraseg store.
        ConfigError: ``crop`` exceeds the store's tile size.
    """
    from terraseg.pipeline.store import attributes, open_existing

    tile = attributes(open_existing(data)).get("tile_size")
    if tile is not None and crop > int(tile):
        raise ConfigError(
            f"--crop-size {crop} is larger than the store's tiles ({tile} pixels), and a "
            f"crop is cut from one tile; choose --crop-size {tile} or less, or tile again "
            f"with --tile-size {crop}",
            path=data,
        )
