"""The tasks of one raster's prediction, as the block graph names them.

Each function is one node kind of :mod:`terraseg.pipeline.prediction.graph`: ``start``
creates the scratch store, ``read`` reads a block's extent, ``infer`` accumulates
its tiles, ``right`` and ``below`` pick out the spill strips its neighbours need,
``write`` completes a block's interior with its neighbours' spill and stores it,
and ``assemble`` turns the scratch store into the final COGs once every block is
stored. Every task can run again (Dask recomputes work lost with a worker) without
undoing what the run has already written.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.prediction.blocks import (
    Accumulator,
    BatchPredictor,
    BlockParts,
    Spill,
    accumulate_block,
    class_ids_of,
    class_map,
    finish_block,
)
from terraseg.pipeline.prediction.devices import use_assigned_gpu
from terraseg.pipeline.prediction.inference import batch_predictor, cached_model, resolve_device
from terraseg.pipeline.prediction.inputs import read_normalized
from terraseg.pipeline.prediction.job import FileJob
from terraseg.pipeline.prediction.outputs import assemble, create_scratch, write_block

Pixels = tuple[NDArray[np.float32], NDArray[np.bool_]]  # normalized image, valid mask


def start_file(job: FileJob) -> None:
    """Create the file's scratch store if it does not exist yet."""
    probs = job.config.probability_dtype if job.config.probabilities else None
    rows, cols = job.plan.rows, job.plan.cols
    chunks = (
        rows.bounds[1] if rows.count > 1 else job.plan.shape[0],
        cols.bounds[1] if cols.count > 1 else job.plan.shape[1],
    )
    blocks = (rows.count, cols.count)
    create_scratch(job.paths, job.plan.shape, chunks, blocks, job.num_classes, probs)


def read_block(job: FileJob, block: tuple[int, int]) -> Pixels:
    """The normalized pixels and valid mask of a block's extent."""
    artifact = cached_model(job.model, job.tracking_uri, job.weights)
    return read_normalized(job.raster, job.plan.extent(*block), artifact)


def infer_block(job: FileJob, block: tuple[int, int], pixels: Pixels) -> BlockParts:
    """Infer a block's tiles and accumulate weighted probabilities over its extent.

    On CUDA the worker's GPU is made current in this task's thread first (see
    :mod:`terraseg.pipeline.prediction.devices`).
    """
    config = job.config
    device = resolve_device(config.device)
    if device == "cuda":
        use_assigned_gpu()
    predict = job_predictor(job)
    image, valid = pixels
    return accumulate_block(
        job.plan,
        block,
        image,
        valid,
        predict,
        num_classes=job.num_classes,
        tile=job.tile,
        overlap=config.overlap_pixels(job.tile),
        window=config.window,
        batch_size=config.batch_for(device),
    )


def job_predictor(job: FileJob) -> BatchPredictor:
    """The batch predictor of ``job``'s model and settings (built once per process)."""
    config = job.config
    return batch_predictor(
        job.model,
        config.device,
        config.precision,
        config.tta,
        config.threads,
        job.tracking_uri,
        job.weights,
    )


def write_block_interior(
    started: None,
    job: FileJob,
    block: tuple[int, int],
    parts: BlockParts,
    left: Accumulator | None,
    up: Spill | None,
    up_left: Spill | None,
) -> int:
    """Complete a block's interior with its neighbours' spill, store it, return its pixels.

    Args:
        started: The file's ``start`` result: the scratch store exists.
        job: The file.
        block: (row, col) index of the block.
        parts: The block's own accumulators.
        left: The left neighbour's spill into this block.
        up: The upper neighbour's spill into the next row: this block takes its first part.
        up_left: The upper-left neighbour's: this block takes its diagonal part.
    """
    total = finish_block(parts.own, left, up[0] if up else None, up_left[1] if up_left else None)
    indices, probs = class_map(total, job.config.probabilities)
    classes = class_ids_of(indices, job.class_ids)
    interior = job.plan.interior(*block)
    write_block(job.paths, block, interior, classes, probs, job.config.probability_dtype)
    return interior.height * interior.width


def assemble_file(job: FileJob) -> list[Path]:
    """Check that every block is stored, then write the COGs; return their paths."""
    artifact = cached_model(job.model, job.tracking_uri, job.weights)
    assemble(job.paths, job.raster.profile, artifact.classes, job.tags)
    return job.paths.finals()
