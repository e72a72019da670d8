"""Comparing predicted class maps with ground truth, block by block.

Truth is either label rasters (matched to predictions by name, warped onto the
prediction's grid by nearest neighbour when grids differ) or vector labels
(reprojected and rasterized on the prediction's grid, block by block). Pixels
that are nodata in the prediction or ignored in the truth count for nothing.
Both hold class ids; the confusion matrix has one row and column per class, in
id order (see :mod:`terraseg.pipeline.classes`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from terraseg.pipeline.classes import CLASSES_TAG, ClassTable
from terraseg.pipeline.errors import InputError
from terraseg.pipeline.files import write_json
from terraseg.pipeline.grid import Window, plan_blocks
from terraseg.pipeline.metrics import (
    BOUNDARY_HALO,
    BOUNDARY_TOLERANCES,
    boundary_counts,
    boundary_scores,
    confusion_counts,
    scores,
)
from terraseg.pipeline.rasters import NodataOverride, open_raster, read_band, shared_reader
from terraseg.pipeline.settings import StrictModel
from terraseg.pipeline.tiling.checks import raster_overlaps
from terraseg.pipeline.tiling.labels import (
    LabelsCover,
    RasterChunkLabels,
    SceneVectorLabels,
    chunk_label,
    match_label_rasters,
    read_vector_labels,
)

PREDICTION_SUFFIX = "_classes"  # terraseg predict writes <name>_classes.tif

logger = logging.getLogger(__name__)


class EvaluateConfig(StrictModel):
    """Settings of ``terraseg evaluate``."""

    block_size: int = Field(2048, ge=64, description="Pixels per block side.")
    class_column: str = Field(
        "class", description="Column of vector truth with class ids or names."
    )
    all_touched: bool = Field(False, description="Burn every pixel a truth polygon touches.")
    labels_cover: LabelsCover = Field(
        "complete",
        description="complete: pixels outside truth polygons are background; partial: ignored.",
    )
    nodata: NodataOverride = Field(
        None,
        description="Nodata value of the truth rasters, overriding what they declare; "
        "'none': every truth pixel counts; unset: as each declares. (Class maps of "
        "terraseg predict declare 255.)",
    )


@dataclass(frozen=True)
class BlockJob:
    """One block of one prediction and where its truth comes from.

    ``window`` holds the pixels the block counts, ``outer`` the pixels it reads: the
    window and up to :data:`BOUNDARY_HALO` pixels around it, within the raster.
    """

    prediction: Path
    window: Window
    truth: RasterChunkLabels | Any  # VectorChunkLabels
    classes: ClassTable
    outer: Window | None = None


BlockResult = tuple[str, NDArray[np.int64], NDArray[np.int64]]  # file, matrix, boundary counts


@dataclass
class Evaluation:
    """Confusion matrices per file and over all files, boundary counts, and their scores."""

    classes: ClassTable
    matrix: NDArray[np.int64]
    per_file: dict[str, NDArray[np.int64]] = field(default_factory=dict)
    boundary: NDArray[np.int64] | None = None  # summed boundary_counts

    def report(self) -> dict[str, Any]:
        """Everything as JSON-ready data."""
        overall = scores(self.matrix)
        size = self.classes.num_classes
        boundary = self.boundary
        if boundary is None:
            boundary = np.zeros((len(BOUNDARY_TOLERANCES), size, 4), np.int64)
        return {
            "classes": self.classes.names,
            **overall,
            **boundary_scores(boundary),
            "confusion_matrix": self.matrix.tolist(),
            "files": {
                name: {"mean_iou": scores(m)["mean_iou"], "pixels": int(m.sum())}
                for name, m in self.per_file.items()
            },
        }

    def write_json(self, path: Path) -> None:
        """Write :meth:`report` as strict JSON (NaN as null) through a temporary name."""
        write_json(path, self.report())


def prediction_classes(path: Path, given: ClassTable | None) -> ClassTable:
    """The class table: ``given``, else the one ``terraseg predict`` stored in the raster.

    Raises:
        InputError: Neither is available.
    """
    if given is not None:
        return given
    with open_raster(path) as src:
        tag = src.tags().get(CLASSES_TAG)
    if tag is None:
        raise InputError("the prediction names no classes; pass --classes FILE", path=path)
    return ClassTable.model_validate(json.loads(tag))


def plan_evaluation(
    predictions: list[Path], truth: Path, classes: ClassTable | None, config: EvaluateConfig
) -> tuple[list[BlockJob], ClassTable]:
    """Check inputs and plan one job per block of every prediction.

    Raises:
        TerrasegError: A prediction or the truth cannot be used, or the truth covers
            none of the predictions; the file is named.
    """
    table = prediction_classes(predictions[0], classes)
    vector = truth.suffix.lower() in {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet"}
    frame = (
        read_vector_labels(truth, config.class_column, table, config.labels_cover)[0]
        if vector
        else None
    )
    rasters = (
        None if vector else match_label_rasters(_truth_names(predictions), _truth_files(truth))
    )
    jobs, uncovered = [], []
    for prediction in predictions:
        with open_raster(prediction) as src:
            shape, transform, crs, bounds = src.shape, src.transform, src.crs, tuple(src.bounds)
        scene_truth = SceneVectorLabels(frame, crs, bounds) if frame is not None else None
        if not _has_truth(scene_truth, rasters, prediction, crs, bounds):
            uncovered.append(prediction)
        for window in plan_blocks(shape, config.block_size):
            outer = expand_window(window, BOUNDARY_HALO, shape)
            if scene_truth is not None:
                source: Any = scene_truth.for_window(
                    outer, transform, config.all_touched, config.labels_cover
                )
            else:
                assert rasters is not None
                source = RasterChunkLabels(str(rasters[_truth_key(prediction)]), config.nodata)
            jobs.append(BlockJob(prediction, window, source, table, outer))
    check_truth_covers(uncovered, predictions, truth)
    return jobs, table


def _has_truth(
    scene_truth: SceneVectorLabels | None,
    rasters: dict[Path, Path] | None,
    prediction: Path,
    crs: Any,
    bounds: tuple[float, float, float, float],
) -> bool:
    """Whether a truth polygon or the truth raster overlaps the prediction."""
    if scene_truth is not None:
        return len(scene_truth) > 0
    assert rasters is not None
    return raster_overlaps(rasters[_truth_key(prediction)], crs, bounds)


def check_truth_covers(uncovered: list[Path], predictions: list[Path], truth: Path) -> None:
    """Refuse truth that covers no prediction; warn of each prediction it misses.

    Raises:
        InputError: No prediction overlaps the truth (nothing could be compared).
    """
    if uncovered and len(uncovered) == len(predictions):
        names = ", ".join(p.name for p in uncovered[:3]) + (", ..." if len(uncovered) > 3 else "")
        raise InputError(
            f"the truth covers none of the predictions ({names}); check the CRS and "
            "extent of both (open them together in QGIS)",
            path=truth,
        )
    for prediction in uncovered:
        logger.warning(
            "the truth %s covers nothing of %s; it counts for nothing", truth, prediction
        )


def check_compared(evaluation: Evaluation, truth: Path) -> None:
    """Refuse an evaluation that compared no pixel (its metrics would all be empty).

    Raises:
        InputError: Every pixel of the truth is ignored or nodata where the
            predictions hold a class, or the reverse.
    """
    if not evaluation.matrix.any():
        raise InputError(
            "no pixel was compared: where the predictions hold a class, the truth is "
            "ignored or nodata; check the truth's nodata and class ids",
            path=truth,
        )


def _truth_key(prediction: Path) -> Path:
    return prediction.with_name(prediction.stem.removesuffix(PREDICTION_SUFFIX) + prediction.suffix)


def _truth_names(predictions: list[Path]) -> list[Path]:
    return [_truth_key(p) for p in predictions]


def _truth_files(truth: Path) -> list[Path]:
    from terraseg.pipeline.rasters import expand_inputs

    return expand_inputs([truth], what="truth raster")


def expand_window(window: Window, halo: int, shape: tuple[int, int]) -> Window:
    """``window`` grown by ``halo`` pixels on every side, clipped to a raster of ``shape``."""
    row, col = max(0, window.row_off - halo), max(0, window.col_off - halo)
    row_end = min(shape[0], window.row_end + halo)
    col_end = min(shape[1], window.col_end + halo)
    return Window(row, col, row_end - row, col_end - col)


def read_block(job: BlockJob) -> tuple[NDArray[Any], NDArray[Any], tuple[slice, slice]]:
    """Prediction and truth of the block's outer window, and where its own pixels lie in them."""
    outer = job.outer or job.window
    src = shared_reader(job.prediction)
    pred = read_band(src, 1, outer)
    truth = chunk_label(
        job.truth, outer, transform=src.transform, crs=src.crs, shape=src.shape, classes=job.classes
    )
    rows = slice(job.window.row_off - outer.row_off, job.window.row_end - outer.row_off)
    cols = slice(job.window.col_off - outer.col_off, job.window.col_end - outer.col_off)
    return pred, truth, (rows, cols)


def compare(
    pred: NDArray[Any], truth: NDArray[Any], classes: ClassTable, interior: tuple[slice, slice]
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Confusion matrix of the interior and its boundary counts, from class-id arrays."""
    lut = classes.index_lut()  # class ids -> rows and columns; ignored -> 255
    pred_index, truth_index = lut[pred], lut[truth]
    size = classes.num_classes
    matrix = confusion_counts(pred_index[interior], truth_index[interior], size)
    return matrix, boundary_counts(pred_index, truth_index, size, interior)


def evaluate_block(job: BlockJob) -> BlockResult:
    """The confusion matrix (rows and columns in class-id order) and boundary counts of a block."""
    pred, truth, interior = read_block(job)
    return (str(job.prediction), *compare(pred, truth, job.classes, interior))


def combine(results: list[BlockResult], classes: ClassTable) -> Evaluation:
    """Sum block matrices per file and overall, and boundary counts overall."""
    size = classes.num_classes
    evaluation = Evaluation(
        classes,
        np.zeros((size, size), np.int64),
        boundary=np.zeros((len(BOUNDARY_TOLERANCES), size, 4), np.int64),
    )
    for name, matrix, boundary in results:
        evaluation.per_file[name] = evaluation.per_file.get(name, np.zeros_like(matrix)) + matrix
        evaluation.matrix += matrix
        assert evaluation.boundary is not None
        evaluation.boundary += boundary
    return evaluation


def evaluate(
    predictions: list[Path], truth: Path, classes: ClassTable | None, config: EvaluateConfig
) -> Evaluation:
    """Evaluate in this process, one block at a time."""
    jobs, table = plan_evaluation(predictions, truth, classes, config)
    return combine([evaluate_block(job) for job in jobs], table)
