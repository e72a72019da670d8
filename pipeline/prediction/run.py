"""Prediction of one raster: the block tasks and a sequential driver over them.

:func:`predict_block` and :func:`finish_block_and_write` are the units of work
that the Dask graph maps over blocks; :func:`predict_file` runs the same
functions in one process, keeping only one row of spill in memory.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.artifact import ModelArtifact
from pipeline.errors import InputError
from pipeline.prediction.blocks import (
    Accumulator,
    BlockParts,
    accumulate_block,
    class_map,
    finish_block,
)
from pipeline.prediction.config import PredictConfig
from pipeline.prediction.inputs import RasterInput, check_raster, read_normalized
from pipeline.prediction.outputs import (
    OutputPaths,
    assemble,
    create_scratch,
    is_current,
    write_block,
)
from pipeline.prediction.plan import PredictionPlan
from pipeline.prediction.runner import batch_predictor, cached_model, resolve_device


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
    tags: dict[str, str]
    tracking_uri: str | None = None  # where workers find models:/ and runs:/ URIs


def plan_file(
    model: str,
    artifact: ModelArtifact,
    path: Path,
    out_dir: Path,
    config: PredictConfig,
    tracking_uri: str | None = None,
) -> FileJob:
    """Check a raster against the model and plan its blocks.

    Raises:
        TerrasegError: The raster cannot be read or does not fit the model.
    """
    raster = check_raster(path, artifact, config.bands)
    tile = artifact.tile_size
    plan = PredictionPlan.build(raster.shape, tile, config.overlap_pixels(tile), config.block_size)
    return FileJob(
        model=model,
        raster=raster,
        paths=OutputPaths.for_input(out_dir, path, config.probabilities),
        plan=plan,
        config=config,
        tile=tile,
        num_classes=artifact.classes.num_classes,
        tags=provenance_tags(model, artifact, raster, config),
        tracking_uri=tracking_uri,
    )


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
    model: str, artifact: ModelArtifact, raster: RasterInput, config: PredictConfig
) -> dict[str, str]:
    """Tags that identify what produced an output: model, its version, the source, the settings."""
    settings = config.model_dump(
        include={"overlap", "window", "tta", "bands", "probability_dtype", "precision"},
        mode="json",
    )
    version = artifact.metadata.get("resolved_uri") or artifact.metadata.get("run_id") or "local"
    digest = hashlib.sha256(
        json.dumps([raster.source, settings], sort_keys=True).encode()
    ).hexdigest()[:16]
    return {
        "TERRASEG_MODEL": model,
        "TERRASEG_MODEL_VERSION": str(version),
        "TERRASEG_INPUT": digest,
    }


def needs_work(job: FileJob) -> bool:
    """False when the outputs exist and were made by the same model from the same input."""
    return job.config.overwrite or not is_current(job.paths, job.tags)


def start_file(job: FileJob) -> None:
    """Create the scratch store for a file's blocks."""
    probs = job.config.probability_dtype if job.config.probabilities else None
    step = job.plan.rows.bounds[1] if job.plan.rows.count > 1 else job.plan.shape[0]
    col_step = job.plan.cols.bounds[1] if job.plan.cols.count > 1 else job.plan.shape[1]
    create_scratch(job.paths, job.plan.shape, max(step, col_step), job.num_classes, probs)


def predict_block(job: FileJob, block: tuple[int, int]) -> BlockParts:
    """Read a block's extent, infer its tiles and accumulate weighted probabilities."""
    artifact = cached_model(job.model, job.tracking_uri)
    config = job.config
    predict = batch_predictor(
        job.model, config.device, config.precision, config.tta, config.threads, job.tracking_uri
    )
    image, valid = read_normalized(job.raster, job.plan.extent(*block), artifact)
    return accumulate_block(
        job.plan,
        block,
        image,
        valid,
        predict,
        num_classes=job.num_classes,
        tile=job.tile,
        overlap=job.config.overlap_pixels(job.tile),
        window=job.config.window,
        batch_size=job.config.batch_for(resolve_device(job.config.device)),
    )


def finish_block_and_write(
    job: FileJob,
    block: tuple[int, int],
    own: Accumulator,
    left: Accumulator | None,
    up: Accumulator | None,
    up_left: Accumulator | None,
) -> int:
    """Complete a block's interior with its neighbours' spill and store it; return its pixels."""
    classes, probs = class_map(finish_block(own, left, up, up_left), job.config.probabilities)
    interior = job.plan.interior(*block)
    write_block(job.paths, interior, classes, probs, job.config.probability_dtype)
    return interior.height * interior.width


def finish_file(job: FileJob) -> list[Path]:
    """Assemble the COGs of a file whose blocks are all written."""
    artifact = cached_model(job.model, job.tracking_uri)
    assemble(job.paths, job.raster.profile, artifact.classes, job.tags)
    return job.paths.finals()


def predict_file(job: FileJob, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Predict one raster in this process, block row by block row.

    Only the previous block row's downward spill is kept between rows, so
    memory depends on block size and raster width, not on raster height.
    """
    start_file(job)
    above: dict[int, BlockParts] = {}  # spill of the previous block row
    for i in range(job.plan.rows.count):
        current: dict[int, BlockParts] = {}
        for j in range(job.plan.cols.count):
            parts = predict_block(job, (i, j))
            left = current[j - 1].right if j > 0 else None
            up = above[j].down if j in above else None
            up_left = above[j - 1].diagonal if j - 1 in above else None
            done = finish_block_and_write(job, (i, j), parts.own, left, up, up_left)
            current[j] = BlockParts(
                own=Accumulator.empty(), right=parts.right, down=parts.down, diagonal=parts.diagonal
            )
            if progress:
                progress(done)
        above = current
    return finish_file(job)
