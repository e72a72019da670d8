"""Which tiles each block infers, and which pixels its accumulators cover.

Tiles come from the raster's one tile plan (:func:`terraseg.pipeline.grid.axis_offsets`).
Block boundaries are ``block`` pixels apart, rounded to a multiple of the
tile stride and at least one tile apart; a small raster gets smaller blocks,
so that its work spreads over several threads. Each tile belongs to the
block that contains its upper-left pixel, so every tile is inferred exactly
once. A tile reaches at most into the next block to the right
and below (its *spill*); a block's final values are its own accumulators plus
the spill of its left, upper and upper-left neighbours. The decomposition
depends only on the raster shape and the settings, never on the scheduler, so
a distributed run computes exactly what a single process computes.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

from terraseg.pipeline.grid import Window, axis_offsets

# A raster with fewer tiles along an axis than this many blocks of the configured
# size would hold gets blocks of fewer tiles instead, so that even a small raster
# has enough blocks to keep the threads of a cluster busy to its end: a 2048 x 2048
# raster in 4 blocks of 9, 6, 6 and 4 tiles left one of two threads idle for a
# fifth of the run.
MIN_BLOCKS_PER_AXIS = 3


@dataclass(frozen=True)
class AxisPlan:
    """Tiles and blocks along one axis."""

    length: int
    tile: int
    overlap: int
    block: int

    @cached_property
    def offsets(self) -> list[int]:
        """Tile offsets of the one tile plan."""
        return axis_offsets(self.length, self.tile, self.overlap)

    @property
    def tile_size(self) -> int:
        """Pixels of raster under each tile (smaller than ``tile`` for a small raster)."""
        return min(self.tile, self.length)

    @cached_property
    def bounds(self) -> list[int]:
        """Block boundaries: 0, step, 2 step, ..., length.

        The step is ``block`` rounded to the nearest multiple of the stride, at
        most as many strides as the axis has tiles divided by
        :data:`MIN_BLOCKS_PER_AXIS` (rounded up), and at least one tile, so that
        no tile, not even the last one shifted inward, reaches past the next block.
        A last block that no tile starts in would infer nothing, so it joins the
        block before it.
        """
        stride = self.tile - self.overlap
        small_raster = -(-len(self.offsets) // MIN_BLOCKS_PER_AXIS) * stride
        step = min(round(self.block / stride) * stride, small_raster)
        step = max(-(-self.tile // stride) * stride, step)
        bounds = [*range(0, self.length, step), self.length]
        if len(bounds) > 2 and self.offsets[-1] < bounds[-2]:
            del bounds[-2]
        return bounds

    @property
    def count(self) -> int:
        """Number of blocks."""
        return len(self.bounds) - 1

    def tiles_of(self, index: int) -> list[int]:
        """Offsets of the tiles whose first pixel lies in block ``index``."""
        lo = bisect.bisect_left(self.offsets, self.bounds[index])
        hi = bisect.bisect_left(self.offsets, self.bounds[index + 1])
        return self.offsets[lo:hi]

    def extent(self, index: int) -> tuple[int, int]:
        """Pixels ``[start, end)`` that block ``index``'s tiles cover (its interior and spill)."""
        start, end = self.bounds[index], self.bounds[index + 1]
        tiles = self.tiles_of(index)
        return start, max([end, *(o + self.tile_size for o in tiles)])


@dataclass(frozen=True)
class PredictionPlan:
    """The blocks of one raster and the tiles each infers."""

    rows: AxisPlan
    cols: AxisPlan

    @classmethod
    def build(cls, shape: tuple[int, int], tile: int, overlap: int, block: int) -> PredictionPlan:
        """Plan a raster of ``shape`` (rows, cols)."""
        return cls(
            AxisPlan(shape[0], tile, overlap, block), AxisPlan(shape[1], tile, overlap, block)
        )

    @property
    def shape(self) -> tuple[int, int]:
        """Raster shape (rows, cols)."""
        return (self.rows.length, self.cols.length)

    @property
    def blocks(self) -> list[tuple[int, int]]:
        """All block indexes, row-major."""
        return [(i, j) for i in range(self.rows.count) for j in range(self.cols.count)]

    def interior(self, i: int, j: int) -> Window:
        """The pixels block (i, j) finishes and writes."""
        r0, r1 = self.rows.bounds[i], self.rows.bounds[i + 1]
        c0, c1 = self.cols.bounds[j], self.cols.bounds[j + 1]
        return Window(r0, c0, r1 - r0, c1 - c0)

    def extent(self, i: int, j: int) -> Window:
        """The pixels block (i, j)'s tiles read and accumulate into."""
        r0, r1 = self.rows.extent(i)
        c0, c1 = self.cols.extent(j)
        return Window(r0, c0, r1 - r0, c1 - c0)

    def tiles(self, i: int, j: int) -> list[Window]:
        """Tile windows inferred by block (i, j), in raster coordinates, row-major."""
        return [
            Window(r, c, self.rows.tile_size, self.cols.tile_size)
            for r in self.rows.tiles_of(i)
            for c in self.cols.tiles_of(j)
        ]
