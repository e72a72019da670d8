"""The task of one window: read its pixels, build its label, write both, summarize them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.classes import IGNORE_LABEL, ClassTable
from terraseg.pipeline.errors import IncompleteOutputError
from terraseg.pipeline.grid import Window, axis_offsets
from terraseg.pipeline.rasters import read_window, shared_reader
from terraseg.pipeline.tiling.labels import ChunkLabels, chunk_label
from terraseg.pipeline.tiling.plan import ScenePlan
from terraseg.pipeline.tiling.stats import BandSummary
from terraseg.pipeline.tiling.store import scene_run, write_chunk

TileKey = tuple[int, int]  # (row, col) of a tile's upper-left pixel


@dataclass
class ChunkSummary:
    """What window tasks report: band statistics and per-tile pixel counts, mergeable.

    ``windows`` holds the upper-left corners of the windows summarized, so that a
    scene is finished only when its summary covers every window of its plan.
    """

    bands: BandSummary
    tiles: dict[TileKey, NDArray[np.int64]]  # (row, col) -> 256 label counts + valid count
    windows: frozenset[TileKey]

    def merge(self, other: ChunkSummary) -> ChunkSummary:
        """The summary of both parts.

        Raises:
            ValueError: The parts share a window (it would be counted twice).
        """
        if self.windows & other.windows:
            raise ValueError(f"windows summarized twice: {sorted(self.windows & other.windows)}")
        tiles = dict(self.tiles)
        for key, counts in other.tiles.items():
            tiles[key] = tiles[key] + counts if key in tiles else counts
        return ChunkSummary(self.bands.merge(other.bands), tiles, self.windows | other.windows)


def merge_summaries(*summaries: ChunkSummary) -> ChunkSummary:
    """The summary of all parts (at least one), merged in order."""
    result = summaries[0]
    for summary in summaries[1:]:
        result = result.merge(summary)
    return result


def tile_window(
    store: str,
    plan: ScenePlan,
    window: Window,
    labels: ChunkLabels,
    classes: ClassTable,
    tile: int,
    run_id: str,
) -> ChunkSummary:
    """Read one window of a raster, build its label, write both; summarize it.

    Label values are class ids; the store holds their model output indices
    (:meth:`ClassTable.index_lut`), ignored values and nodata pixels (nodata value,
    or the plan's nodata setting, mask or alpha) the ignore label. The summary
    holds band statistics of valid pixels and, for every tile of the scene's tile
    plan that overlaps this window, the label counts and valid pixels of the overlap.

    The task writes only into a scene created by its own run: run again (Dask
    recomputes tasks of lost workers) it writes the same bytes again, and a task
    left over from another run writes nothing.

    Args:
        store: The store's path.
        plan: The scene's plan, without vector labels.
        window: A chunk-aligned window of the scene.
        labels: The window's labels (see :meth:`ScenePlan.window_labels`).
        classes: The class table.
        tile: The tile size.
        run_id: The run that created the scene.

    Returns:
        The window's summary.

    Raises:
        IncompleteOutputError: The scene was not created by ``run_id``.
    """
    if scene_run(store, plan.name) != run_id:
        raise IncompleteOutputError(
            f"scene {plan.name} is not the one run {run_id} created (the store was removed "
            "or another run recreated it); this window is not written",
            path=plan.image,
        )
    src = shared_reader(plan.image, (plan.source["size"], plan.source["mtime_ns"]))
    image, valid = read_window(src, window, plan.bands, plan.nodata_override)
    label = chunk_label(
        labels, window, transform=plan.affine, crs=src.crs, shape=plan.shape, classes=classes
    )
    label = np.where(valid, classes.index_lut()[label], np.uint8(IGNORE_LABEL)).astype(np.uint8)
    write_chunk(store, plan.name, window, image, label, valid)
    return ChunkSummary(
        BandSummary.of(image, valid),
        _tile_counts(plan, window, label, valid, tile),
        frozenset({(window.row_off, window.col_off)}),
    )


def _tile_counts(
    plan: ScenePlan, window: Window, label: NDArray[np.uint8], valid: NDArray[np.bool_], tile: int
) -> dict[TileKey, NDArray[np.int64]]:
    counts = {}
    height, width = min(tile, plan.shape[0]), min(tile, plan.shape[1])
    tile_rows = [r for r in axis_offsets(plan.shape[0], tile) if window.overlaps_rows(r, height)]
    tile_cols = [c for c in axis_offsets(plan.shape[1], tile) if window.overlaps_cols(c, width)]
    for candidate in [Window(r, c, height, width) for r in tile_rows for c in tile_cols]:
        part = candidate.intersection(window)
        assert part is not None  # the candidates overlap the window by construction
        rows, cols = part.relative_to(window).slices()
        histogram = np.bincount(label[rows, cols].ravel(), minlength=256).astype(np.int64)
        valid_count = np.int64(np.count_nonzero(valid[rows, cols]))
        counts[(candidate.row_off, candidate.col_off)] = np.append(histogram, valid_count)
    return counts
