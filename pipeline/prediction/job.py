"""One raster to predict: its checked input, outputs, block plan and provenance.

A :class:`FileJob` is planned in the driver's process before any work and sent
with every task of its file. Its provenance tags decide whether an existing
output is current: the model reference, its resolved version, a content hash of
its weights, the input's identity and every setting that changes pixels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from terraseg.pipeline.artifact import ModelArtifact, weights_digest
from terraseg.pipeline.errors import InputError, TerrasegError
from terraseg.pipeline.locks import new_run_id
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.inputs import RasterInput, check_raster
from terraseg.pipeline.prediction.outputs import OutputPaths, is_current
from terraseg.pipeline.prediction.plan import PredictionPlan

# Settings that change the pixels of an output (the others change only speed).
# ``nodata`` counts only when set, so outputs made before it existed stay current.
PIXEL_SETTINGS = {"overlap", "window", "tta", "bands", "probability_dtype", "precision", "nodata"}


@dataclass(frozen=True)
class FileJob:
    """One raster to predict: its input, outputs, plan and provenance tags."""

    model: str
    raster: RasterInput
    paths: OutputPaths
    plan: PredictionPlan
    config: PredictConfig
    tile: int
    num_classes: int
    class_ids: tuple[int, ...]  # the class id of each model output, in output order
    tags: dict[str, str]
    weights: str  # content hash of the model weights: workers load the model by it
    run_id: str  # names this run's scratch store, lock and task keys
    tracking_uri: str | None = None  # where workers find models:/ and runs:/ URIs


def plan_file(
    model: str,
    artifact: ModelArtifact,
    path: Path,
    out_dir: Path,
    config: PredictConfig,
    tracking_uri: str | None = None,
    *,
    run_id: str | None = None,
    weights: str | None = None,
) -> FileJob:
    """Check a raster against the model and plan its blocks.

    Args:
        model: The model reference as given (folder or URI).
        artifact: The loaded model.
        path: The raster.
        out_dir: The output folder.
        config: Prediction settings.
        tracking_uri: Where workers resolve ``models:/`` and ``runs:/`` URIs.
        run_id: Names this run's scratch store (default: a fresh id).
        weights: :func:`~terraseg.pipeline.artifact.weights_digest` of ``artifact``, when known.

    Raises:
        TerrasegError: The raster cannot be read or does not fit the model.
    """
    raster = check_raster(path, artifact, config.bands, config.nodata)
    tile = artifact.tile_size
    plan = PredictionPlan.build(raster.shape, tile, config.overlap_pixels(tile), config.block_size)
    digest = weights or weights_digest(artifact)
    run_id = run_id or new_run_id()
    return FileJob(
        model=model,
        raster=raster,
        paths=OutputPaths.for_input(out_dir, path, config.probabilities, run_id),
        plan=plan,
        config=config,
        tile=tile,
        num_classes=artifact.classes.num_classes,
        class_ids=tuple(artifact.classes.ids),
        tags=provenance_tags(model, artifact, raster, config, digest),
        weights=digest,
        run_id=run_id,
        tracking_uri=tracking_uri,
    )


def plan_files(
    model: str,
    artifact: ModelArtifact,
    paths: Sequence[Path],
    out_dir: Path,
    config: PredictConfig,
    tracking_uri: str | None = None,
) -> tuple[list[FileJob], dict[Path, str]]:
    """Plan every raster given once; return the jobs and the errors of those that do not fit.

    Raises:
        InputError: Two rasters would write the same output.
    """
    digest = weights_digest(artifact)
    jobs: list[FileJob] = []
    errors: dict[Path, str] = {}
    for path in dict.fromkeys(p.resolve() for p in paths):
        try:
            jobs.append(
                plan_file(model, artifact, path, out_dir, config, tracking_uri, weights=digest)
            )
        except TerrasegError as exc:
            errors[path] = str(exc)
    check_distinct_outputs(jobs)
    return jobs, errors


def check_distinct_outputs(jobs: list[FileJob]) -> None:
    """Refuse jobs that would write the same output files (inputs with one file name).

    Raises:
        InputError: Two jobs share an output path.
    """
    seen: dict[Path, Path] = {}
    for job in jobs:
        other = seen.setdefault(job.paths.classes, job.raster.path)
        if other != job.raster.path:
            raise InputError(
                f"{other} and {job.raster.path} would both write {job.paths.classes.name}; "
                "predict them into different --out folders"
            )


def provenance_tags(
    model: str,
    artifact: ModelArtifact,
    raster: RasterInput,
    config: PredictConfig,
    digest: str,
) -> dict[str, str]:
    """Tags that identify what produced an output: model, weights, source and settings."""
    settings = config.model_dump(include=PIXEL_SETTINGS, mode="json")
    del settings["nodata"]
    if config.nodata is not None:
        settings["nodata"] = str(config.nodata)  # as text: JSON has no NaN
    version = artifact.metadata.get("resolved_uri") or artifact.metadata.get("run_id") or "local"
    source = hashlib.sha256(
        json.dumps([raster.source, settings], sort_keys=True).encode()
    ).hexdigest()[:16]
    return {
        "TERRASEG_MODEL": model,
        "TERRASEG_MODEL_VERSION": str(version),
        "TERRASEG_WEIGHTS": digest,
        "TERRASEG_INPUT": source,
    }


def needs_work(job: FileJob) -> bool:
    """False when the outputs exist and were made by the same weights from the same input."""
    return job.config.overwrite or not is_current(job.paths, job.tags)
