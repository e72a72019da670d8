"""Prediction from Python: load a model, predict arrays and raster files.

The same functions ``terraseg predict`` runs: the same tile grid, overlap,
blending window and nodata handling, so an array cut from a raster gets the
pixels the command writes for that raster.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg.pipeline.errors import TerrasegError
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.workflows.api.settings import ConfigSource, stage_config

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from terraseg.pipeline.artifact import ModelArtifact
    from terraseg.pipeline.prediction.arrays import ArrayPrediction
    from terraseg.pipeline.prediction.driver import FileOutcome
    from terraseg.pipeline.prediction.job import FileJob

logger = logging.getLogger(__name__)
MODEL_CACHE = ".models"  # in the output folder: models downloaded from a remote store


def load_model(uri: str | Path, *, tracking_uri: str | None = None) -> ModelArtifact:
    """Load a terraseg model: weights, classes, bands and normalization.

    Args:
        uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/ID/model``,
            or a model folder (``RUN/model``).
        tracking_uri: The MLflow tracking store of model URIs (default:
            ``MLFLOW_TRACKING_URI``, else ``./mlruns``).

    Returns:
        The model, on the CPU.

    Raises:
        ModelNotFoundError: Nothing is at ``uri``.
        InputError: ``uri`` is not a terraseg model.
    """
    from terraseg.pipeline.registry import load_model as load
    from terraseg.pipeline.registry import resolve_tracking_uri

    return load(uri, resolve_tracking_uri(tracking_uri) if _is_uri(uri) else None)


def predict_array(
    model: ModelArtifact | str | Path,
    image: NDArray[Any],
    *,
    nodata: float | None = None,
    config: ConfigSource = None,
    tracking_uri: str | None = None,
    **settings: Any,
) -> ArrayPrediction:
    """Predict a ``(bands, rows, cols)`` image of raw pixel values, of any size.

    Args:
        model: A loaded model (:func:`load_model`) or its URI or folder.
        image: Raw values, bands in the model's order (``model.band_names``).
        nodata: A pixel whose bands all hold this value is nodata; NaN always is.
        config: A predict YAML file or :class:`PredictConfig`.
        tracking_uri: The tracking store, for a model URI.
        **settings: Predict settings (``overlap``, ``window``, ``tta``, ``device``,
            ``precision``, ``block_size``...), as in ``configs/predict.yaml``.

    Returns:
        ``classes`` (rows, cols) uint8 class ids, 255 where no pixel was valid,
        and ``probabilities`` (classes, rows, cols) float32.

    Raises:
        ModelInputError: The array is not (bands, rows, cols) with the model's bands.
    """
    from terraseg.pipeline.prediction.arrays import predict_array as predict

    predict_config = stage_config(PredictConfig, config, settings)  # before any loading
    return predict(_artifact(model, tracking_uri), image, nodata=nodata, config=predict_config)


def predict_file(
    path: str | Path,
    model: ModelArtifact | str | Path,
    out: str | Path,
    **options: Any,
) -> list[Path]:
    """Predict one raster into ``out``; the options of :func:`predict_files`.

    Returns:
        The files written (or found current): ``<name>_classes.tif`` and, with
        ``probabilities=True``, ``<name>_probabilities.tif``.

    Raises:
        TerrasegError: The raster could not be predicted (one line naming it).
    """
    (outcome,) = predict_files([path], model, out, **options)
    if outcome.error:
        raise TerrasegError(outcome.error)
    return outcome.outputs


def predict_files(
    inputs: Sequence[str | Path],
    model: ModelArtifact | str | Path,
    out: str | Path,
    *,
    band_files: list[str] | None = None,
    recursive: bool = False,
    band_resampling: str = "bilinear",
    devices: int | None = None,
    scheduler: str | None = None,
    tracking_uri: str | None = None,
    config: ConfigSource = None,
    progress: bool = False,
    **settings: Any,
) -> list[FileOutcome]:
    """Predict class maps for rasters: files, folders, globs or ``.txt`` lists.

    Each raster becomes a class-map COG (with a QGIS style) in ``out``; outputs
    that are current (same model, same input, same settings) are skipped.

    Args:
        inputs: Rasters, folders, glob patterns or lists; with ``band_files``,
            scene folders holding one file per band.
        model: A model URI or folder (a loaded model is used by its folder).
        out: The output folder.
        band_files: Band file names to stack, in order (e.g. ``["B02", "B03"]``).
        recursive: Look for band-file scenes in sub-folders too.
        band_resampling: Resampling of coarser band files onto the finest grid.
        devices: Local workers: one per GPU on CUDA, processes on CPU.
        scheduler: A Dask scheduler address (default: a LocalCluster).
        tracking_uri: The tracking store, for a model URI.
        config: A predict YAML file or :class:`PredictConfig`.
        progress: Draw a progress bar on stderr.
        **settings: Predict settings as in ``configs/predict.yaml``.

    Returns:
        One outcome per input: outputs, skipped, or the error of that input.

    Raises:
        TerrasegError: Nothing could start (model, device, settings, outputs).
    """
    from terraseg.pipeline.prediction.driver import FileOutcome
    from terraseg.pipeline.prediction.inference import (
        check_device,
        check_precision,
        check_weights,
        open_for_workers,
    )
    from terraseg.pipeline.prediction.job import plan_files
    from terraseg.pipeline.registry import resolve_tracking_uri
    from terraseg.pipeline.remote import as_location, local_folder
    from terraseg.workflows.api.inputs import scene_inputs

    out_dir = as_location(out)  # a bucket's folder: staged on this disk, uploaded per file
    tracking_uri = resolve_tracking_uri(tracking_uri)  # passed to every worker with its jobs
    settings_ = stage_config(PredictConfig, config, settings)
    device = check_device(settings_.device)
    cache = local_folder(out_dir) / MODEL_CACHE
    reference = _reference(model, cache)
    artifact, load_from = open_for_workers(  # read afresh: it may have been retrained
        reference, tracking_uri, cache, shared_disk=scheduler is None
    )
    check_weights(artifact, reference)
    check_precision(artifact, reference, settings_.precision, device)
    stacks = local_folder(out_dir) / ".band-stacks"
    paths = scene_inputs(inputs, band_files, recursive, band_resampling, stacks)
    jobs, errors = plan_files(reference, artifact, paths, out_dir, settings_, tracking_uri)
    jobs = [replace(job, model=load_from) for job in jobs]  # the tags keep the reference given
    outcomes = [FileOutcome(path, error=error) for path, error in errors.items()]
    run = _Cluster(device, devices, scheduler, settings_.threads, progress)
    return outcomes + run.predict(jobs)


class _Cluster:
    """Where planned files run: in this process when all are current, else on Dask."""

    def __init__(
        self,
        device: str,
        devices: int | None,
        scheduler: str | None,
        threads: int | None,
        progress: bool,
    ) -> None:
        self.device, self.devices, self.scheduler = device, devices, scheduler
        self.threads, self.progress = threads, progress

    def predict(self, jobs: list[FileJob]) -> list[FileOutcome]:
        """Predict ``jobs`` on a LocalCluster or the scheduler, with a progress bar."""
        from tqdm import tqdm

        from terraseg.pipeline.executor import InProcessExecutor
        from terraseg.pipeline.prediction.driver import predict_files
        from terraseg.pipeline.prediction.job import needs_work
        from terraseg.workflows.cluster import dask_client
        from terraseg.workflows.executor import DaskExecutor
        from terraseg.workflows.workers import configure_workers, local_cluster_plan

        todo = [job for job in jobs if needs_work(job)]
        if not todo:  # all current: no cluster to start (the driver still takes the locks)
            return predict_files(jobs, InProcessExecutor())
        plan = local_cluster_plan(self.device, self.devices, self.threads)
        total = sum(job.plan.shape[0] * job.plan.shape[1] for job in todo)
        bar = tqdm(total=total, desc="predicting", unit="px", unit_scale=True, leave=False,
                   disable=not self.progress)  # fmt: skip
        cluster = dask_client(
            self.scheduler,
            workers=plan.workers,
            threads_per_worker=plan.threads_per_worker,
            resources=plan.resources,
        )
        with cluster as client, bar:
            configure_workers(client, self.device, self.threads)
            gpu = {"GPU": 1.0} if self.device == "cuda" else None  # asked of any cluster

            def update(pixels: int) -> None:
                bar.update(pixels)

            return predict_files(jobs, DaskExecutor(client), resources=gpu, progress=update)


def _is_uri(model: object) -> bool:
    return isinstance(model, str) and model.startswith(("models:/", "runs:/"))


def _reference(model: ModelArtifact | str | Path, cache: Path) -> str:
    """The reference workers load: a model URI, or a model folder as an absolute path.

    A model loaded in Python is used by its URI when it came from one, else saved
    once into ``cache`` under its weights' digest.
    """
    from terraseg.pipeline.artifact import save_artifact, weights_digest

    if _is_uri(model):
        return str(model)
    if isinstance(model, str | Path):
        return str(Path(model).resolve()) if Path(model).exists() else str(model)
    if model.metadata.get("resolved_uri"):
        return str(model.metadata["resolved_uri"])
    folder = cache / f"weights-{weights_digest(model)[:16]}"
    if not folder.is_dir():
        save_artifact(model, folder)
    return str(folder)


def _artifact(model: ModelArtifact | str | Path, tracking_uri: str | None) -> ModelArtifact:
    if isinstance(model, str | Path):
        return load_model(model, tracking_uri=tracking_uri)
    return model


__all__ = ["load_model", "predict_array", "predict_file", "predict_files"]
