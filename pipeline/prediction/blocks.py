"""The two steps of block-wise prediction: accumulate tiles, then finish the interior.

:func:`accumulate_block` infers a block's tiles on an image window and returns
weighted softmax sums over the block's extent, split into the interior part and
the spill that belongs to the blocks right, below and diagonally below-right.
:func:`finish_block` adds the neighbours' spill to an interior and normalizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.classes import IGNORE_LABEL
from terraseg.pipeline.grid import Window
from terraseg.pipeline.prediction.blending import tile_weights
from terraseg.pipeline.prediction.plan import PredictionPlan

F32 = NDArray[np.float32]
BatchPredictor = Callable[
    [F32], F32
]  # (N, bands, T, T) normalized -> (N, classes, T, T) probabilities, a new array


@dataclass
class Accumulator:
    """Weighted probability sums and weight sums over a window."""

    probs: F32  # (classes, rows, cols)
    weights: F32  # (rows, cols)

    @classmethod
    def empty(cls) -> Accumulator:
        """An accumulator over no pixels (for a block whose interior is done)."""
        return cls(np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.float32))

    def __getitem__(self, key: tuple[slice, slice]) -> Accumulator:
        return Accumulator(self.probs[(slice(None), *key)], self.weights[key])

    def copy(self) -> Accumulator:
        """An accumulator with its own memory (not a view of a larger one)."""
        return Accumulator(self.probs.copy(), self.weights.copy())


@dataclass
class BlockParts:
    """A block's accumulators: its interior and its spill into three neighbours."""

    own: Accumulator
    right: Accumulator | None
    down: Accumulator | None
    diagonal: Accumulator | None


Spill = tuple[Accumulator | None, Accumulator | None]  # below, diagonally below-right


def right_spill(parts: BlockParts) -> Accumulator | None:
    """A block's spill into its right neighbour."""
    return parts.right


def below_spill(parts: BlockParts) -> Spill:
    """A block's spill into the next block row: below and diagonally below-right."""
    return parts.down, parts.diagonal


def accumulate_block(
    plan: PredictionPlan,
    block: tuple[int, int],
    image: F32,
    valid: NDArray[np.bool_],
    predict: BatchPredictor,
    *,
    num_classes: int,
    tile: int,
    overlap: int,
    window: str,
    batch_size: int,
) -> BlockParts:
    """Infer block ``block``'s tiles and accumulate weighted probabilities.

    Args:
        plan: The raster's prediction plan.
        block: (row, col) index of the block.
        image: Normalized pixels of ``plan.extent(*block)``, (bands, rows, cols).
        valid: Valid pixels of the same window; invalid ones get zero weight.
        predict: Batch predictor returning per-class probabilities.
        num_classes: Classes the predictor returns.
        tile: Tile size the model is fed (tiles of small rasters are reflected up to it).
        overlap: Tile overlap in pixels.
        window: Blending window name.
        batch_size: Tiles per forward pass.
    """
    extent = plan.extent(*block)
    tiles = plan.tiles(*block)  # may be none: a short last block is all spill
    acc = Accumulator(
        np.zeros((num_classes, *extent.shape), np.float32), np.zeros(extent.shape, np.float32)
    )
    for start in range(0, len(tiles), batch_size):
        batch_tiles = tiles[start : start + batch_size]
        inputs = [_tile_input(image, t.relative_to(extent), tile) for t in batch_tiles]
        # one tile goes as a view: the predictor copies it into the model's layout anyway
        batch = inputs[0][None] if len(inputs) == 1 else np.stack(inputs)
        for t, p in zip(batch_tiles, predict(batch), strict=True):
            rows, cols = t.relative_to(extent).slices()
            origin = (t.row_off, t.col_off)
            weight = tile_weights(origin, t.shape, plan.shape, overlap, window)
            tile_valid = valid[rows, cols]
            if not tile_valid.all():
                weight = weight * tile_valid
            weighted = p[:, : t.height, : t.width]
            np.multiply(weighted, weight, out=weighted)  # in place: the batch is ours
            acc.probs[:, rows, cols] += weighted
            acc.weights[rows, cols] += weight
    interior = plan.interior(*block)
    h, w = interior.shape
    # The spill waits for the neighbours (a whole block row for ``down``), so it is
    # copied out: a view would keep the block's whole accumulator alive meanwhile.
    return BlockParts(
        own=acc[:h, :w],
        right=acc[:h, w:].copy() if extent.width > w else None,
        down=acc[h:, :w].copy() if extent.height > h else None,
        diagonal=acc[h:, w:].copy() if extent.height > h and extent.width > w else None,
    )


def _tile_input(image: F32, rel: Window, tile: int) -> F32:
    """A tile of the block's image, reflected up to ``tile`` pixels when the raster is smaller."""
    rows, cols = rel.slices()
    data = image[:, rows, cols]
    pad_rows, pad_cols = tile - data.shape[1], tile - data.shape[2]
    if pad_rows or pad_cols:
        data = np.pad(data, ((0, 0), (0, pad_rows), (0, pad_cols)), mode="symmetric")
    return data


def finish_block(
    own: Accumulator, left: Accumulator | None, up: Accumulator | None, up_left: Accumulator | None
) -> Accumulator:
    """Add the spill of the left, upper and upper-left blocks to a block's interior.

    Args:
        own: The block's interior accumulator.
        left: The left neighbour's ``right`` spill (rows of this block, first columns).
        up: The upper neighbour's ``down`` spill (first rows, columns of this block).
        up_left: The upper-left neighbour's ``diagonal`` spill (first rows and columns).
    """
    total = Accumulator(own.probs.copy(), own.weights.copy())
    for part in (left, up, up_left):
        if part is not None:
            rows, cols = part.weights.shape
            total.probs[:, :rows, :cols] += part.probs
            total.weights[:rows, :cols] += part.weights
    return total


def class_map(
    total: Accumulator, probabilities: bool = True
) -> tuple[NDArray[np.uint8], F32 | None]:
    """The output index of highest probability, and the normalized probabilities when asked for.

    Pixels no tile weighted (nodata) get class ``IGNORE_LABEL`` (255) and zero
    probabilities. A pixel's weight divides all its classes alike, so without
    probabilities the classes come from the weighted sums, skipping the division.

    Returns:
        ``(indices (rows, cols) uint8, probabilities (classes, rows, cols) float32 or None)``;
        :func:`class_ids_of` turns the indices into class ids.
    """
    if not probabilities:
        return first_argmax(total.probs, total.weights), None
    # an uncovered pixel's sums are all 0, so dividing by the smallest float gives 0
    divisor = np.maximum(total.weights, np.finfo(np.float32).tiny)
    probs = np.divide(total.probs, divisor)
    return first_argmax(probs, total.weights), probs


def class_ids_of(indices: NDArray[np.uint8], class_ids: tuple[int, ...]) -> NDArray[np.uint8]:
    """The class ids of model output indices (255, no class, stays 255).

    Args:
        indices: Output indices, e.g. from :func:`class_map`.
        class_ids: The class id of each output, in output order.
    """
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    lut[: len(class_ids)] = class_ids
    return lut[indices]


ARGMAX_CHUNK = 1 << 17  # pixels per row chunk: its working arrays stay in the core's cache


def first_argmax(scores: F32, weights: F32) -> NDArray[np.uint8]:
    """``scores.argmax(axis=0)`` as uint8 (ties to the first class), 255 where ``weights <= 0``.

    The same result as numpy's argmax, about 8x faster: numpy reduces along the
    first axis of a (classes, rows, cols) array through a strided copy, whereas
    this compares class planes, a chunk of rows at a time.
    """
    classes, height, width = scores.shape
    out = np.empty((height, width), np.uint8)
    rows = max(1, ARGMAX_CHUNK // max(width, 1))
    best = np.empty((rows, width), np.float32)
    better = np.empty((rows, width), np.bool_)
    candidate = np.empty((rows, width), np.uint8)
    for top in range(0, height, rows):
        n = min(rows, height - top)
        chunk = scores[:, top : top + n]
        best_n, better_n, candidate_n = best[:n], better[:n], candidate[:n]
        out_n = out[top : top + n]
        np.copyto(best_n, chunk[0])
        out_n.fill(0)
        for c in range(1, classes):
            np.greater(chunk[c], best_n, out=better_n)
            # classes rise, so the winner so far is below c where c wins: max picks c
            np.multiply(better_n, np.uint8(c), out=candidate_n)
            np.maximum(out_n, candidate_n, out=out_n)
            np.maximum(best_n, chunk[c], out=best_n)
        np.less_equal(weights[top : top + n], 0, out=better_n)
        np.multiply(better_n, np.uint8(IGNORE_LABEL), out=candidate_n)  # above every class
        np.maximum(out_n, candidate_n, out=out_n)
    return out
