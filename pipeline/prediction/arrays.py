"""Prediction of an image array in memory, with the tiling and blending of ``terraseg predict``.

:func:`predict_array` runs the same block graph (:mod:`terraseg.pipeline.prediction.graph`)
and the same block arithmetic as the file driver over an array instead of a
raster: the same tile grid, blending window and nodata handling, so an array cut
from a raster gets the pixels ``terraseg predict`` writes for that raster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.artifact import ModelArtifact
from terraseg.pipeline.classes import IGNORE_LABEL
from terraseg.pipeline.errors import ModelInputError
from terraseg.pipeline.prediction.blocks import (
    BatchPredictor,
    accumulate_block,
    below_spill,
    class_ids_of,
    class_map,
    finish_block,
    right_spill,
)
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.graph import Node, block_graph, run_in_order
from terraseg.pipeline.prediction.inference import predictor_for, resolve_device
from terraseg.pipeline.prediction.plan import PredictionPlan


@dataclass
class ArrayPrediction:
    """Class ids (rows, cols) uint8, 255 where no pixel was valid, and probabilities."""

    classes: NDArray[np.uint8]
    probabilities: NDArray[np.float32]  # (classes, rows, cols), 0 where invalid


def predict_array(
    artifact: ModelArtifact,
    image: NDArray[Any],
    *,
    nodata: float | None = None,
    config: PredictConfig | None = None,
    predict: BatchPredictor | None = None,
) -> ArrayPrediction:
    """Predict one ``(bands, rows, cols)`` image of raw pixel values, of any size.

    Args:
        artifact: The model (band count and normalization come from it).
        image: Raw values, bands in the model's order.
        nodata: A pixel whose bands all hold this value is nodata (class 255); NaN
            pixels always are.
        config: Overlap, blending window, block size, device, precision and TTA
            (defaults as for ``terraseg predict``).
        predict: A batch predictor to use (default: one built from the artifact).

    Raises:
        ModelInputError: The array is not (bands, rows, cols) with the model's bands.
    """
    config = config or PredictConfig()
    valid = _check(image, artifact, nodata)
    normalized = artifact.normalization.apply(image)
    normalized[:, ~valid] = 0.0
    predict = predict or predictor_for(artifact, config.device, config.precision, config.tta)
    tile = artifact.tile_size
    plan = PredictionPlan.build(
        image.shape[1:], tile, config.overlap_pixels(tile), config.block_size
    )
    result = ArrayPrediction(
        np.full(plan.shape, IGNORE_LABEL, np.uint8),
        np.zeros((artifact.classes.num_classes, *plan.shape), np.float32),
    )
    tasks = _ArrayTasks(plan, normalized, valid, predict, config, artifact, result)
    run_in_order(block_graph(plan.rows.count, plan.cols.count), tasks.run)
    return result


def _check(image: NDArray[Any], artifact: ModelArtifact, nodata: float | None) -> NDArray[np.bool_]:
    """The valid pixels of ``image``, after checking its shape and type."""
    bands = len(artifact.band_names)
    if image.ndim != 3 or image.shape[0] != bands:
        raise ModelInputError(
            f"expected an array of shape ({bands}, rows, cols) with bands "
            f"{', '.join(artifact.band_names)}; got shape {image.shape}"
        )
    if not np.issubdtype(image.dtype, np.number):
        raise ModelInputError(f"expected a numeric array, got dtype {image.dtype}")
    valid = np.ones(image.shape[1:], bool)
    if np.issubdtype(image.dtype, np.floating):
        valid &= np.isfinite(image).all(axis=0)
    if nodata is not None:
        valid &= ~(image == np.asarray(nodata).astype(image.dtype)).all(axis=0)
    return valid


@dataclass
class _ArrayTasks:
    """The graph's node kinds over an array in memory."""

    plan: PredictionPlan
    image: NDArray[np.float32]
    valid: NDArray[np.bool_]
    predict: BatchPredictor
    config: PredictConfig
    artifact: ModelArtifact
    result: ArrayPrediction

    def run(self, node: Node, args: list[Any]) -> Any:
        """Run one node of the block graph."""
        block = node.block
        if node.kind == "read":
            rows, cols = self.plan.extent(*block).slices()
            return self.image[:, rows, cols], self.valid[rows, cols]
        if node.kind == "infer":
            return self._infer(block, args[2])
        if node.kind in ("right", "below"):
            return right_spill(args[0]) if node.kind == "right" else below_spill(args[0])
        if node.kind == "write":
            self._write(block, *args[3:])
        return None

    def _infer(self, block: tuple[int, int], pixels: Any) -> Any:
        tile = self.artifact.tile_size
        device = resolve_device(self.config.device)
        return accumulate_block(self.plan, block, pixels[0], pixels[1], self.predict,
                                num_classes=self.artifact.classes.num_classes, tile=tile,
                                overlap=self.config.overlap_pixels(tile), window=self.config.window,
                                batch_size=self.config.batch_for(device))  # fmt: skip

    def _write(self, block: tuple[int, int], parts: Any, left: Any, up: Any, up_left: Any) -> None:
        total = finish_block(
            parts.own, left, up[0] if up else None, up_left[1] if up_left else None
        )
        indices, probs = class_map(total)
        rows, cols = self.plan.interior(*block).slices()
        self.result.classes[rows, cols] = class_ids_of(indices, tuple(self.artifact.classes.ids))
        assert probs is not None
        self.result.probabilities[:, rows, cols] = probs
