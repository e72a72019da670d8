"""The tile grid: one plan of tile windows per raster, shared by every stage.

The plan for one axis of ``length`` pixels, tile size ``T`` and overlap ``O``
(stride ``S = T - O``) is::

    length <= T:  one tile at offset 0 (the data is reflected up to T by the reader)
    otherwise:    n = ceil((length - T) / S) + 1 tiles at offsets
                  0, S, 2S, ..., (n - 2) S  and  length - T  (the last shifted inward)

Tiles start at the raster's upper-left pixel; edge tiles are shifted inward so
that no tile reads made-up pixels when the raster is at least one tile large.
The 2-D plan is the product of the row and column plans, in row-major order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Shape = tuple[int, int]  # (rows, cols)


@dataclass(frozen=True, order=True)
class Window:
    """A rectangle of pixels: offsets of the upper-left corner and size, in pixels."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def row_end(self) -> int:
        """One past the last row."""
        return self.row_off + self.height

    @property
    def col_end(self) -> int:
        """One past the last column."""
        return self.col_off + self.width

    @property
    def shape(self) -> Shape:
        """``(height, width)``."""
        return (self.height, self.width)

    def slices(self) -> tuple[slice, slice]:
        """Numpy slices selecting this window from a (rows, cols) array."""
        return slice(self.row_off, self.row_end), slice(self.col_off, self.col_end)

    def intersection(self, other: Window) -> Window | None:
        """The overlap of two windows, or ``None`` when they do not overlap."""
        r0, c0 = max(self.row_off, other.row_off), max(self.col_off, other.col_off)
        r1, c1 = min(self.row_end, other.row_end), min(self.col_end, other.col_end)
        if r1 <= r0 or c1 <= c0:
            return None
        return Window(r0, c0, r1 - r0, c1 - c0)

    def overlaps_rows(self, start: int, length: int) -> bool:
        """True when rows ``start`` to ``start + length`` meet this window's rows."""
        return start < self.row_end and start + length > self.row_off

    def overlaps_cols(self, start: int, length: int) -> bool:
        """True when columns ``start`` to ``start + length`` meet this window's columns."""
        return start < self.col_end and start + length > self.col_off

    def relative_to(self, outer: Window) -> Window:
        """This window in the pixel coordinates of ``outer``."""
        return Window(
            self.row_off - outer.row_off, self.col_off - outer.col_off, self.height, self.width
        )

    def grow(self, margin: int, bounds: Shape) -> Window:
        """This window enlarged by ``margin`` on every side, clipped to ``bounds``."""
        r0, c0 = max(0, self.row_off - margin), max(0, self.col_off - margin)
        r1, c1 = min(bounds[0], self.row_end + margin), min(bounds[1], self.col_end + margin)
        return Window(r0, c0, r1 - r0, c1 - c0)

    def to_rasterio(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``((row_start, row_stop), (col_start, col_stop))`` as rasterio accepts."""
        return (self.row_off, self.row_end), (self.col_off, self.col_end)


def axis_offsets(length: int, tile: int, overlap: int = 0) -> list[int]:
    """Tile offsets along one axis (see the module docstring for the formula).

    Args:
        length: Pixels along the axis.
        tile: Tile size in pixels.
        overlap: Pixels shared by neighbouring tiles, ``0 <= overlap < tile``.

    Returns:
        Increasing offsets; the last tile ends at ``length`` when ``length >= tile``.

    Raises:
        ValueError: Sizes are not positive or the overlap is not smaller than the tile.
    """
    if length <= 0 or tile <= 0:
        raise ValueError(f"length and tile must be positive, got {length} and {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, {tile}), got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    return [i * stride for i in range(count - 1)] + [length - tile]


def plan_tiles(shape: Shape, tile: int, overlap: int = 0) -> list[Window]:
    """All tile windows of a raster in row-major order, clipped to the raster.

    A raster smaller than ``tile`` along an axis gives one tile of the raster's
    size along it; readers reflect it up to ``tile``.
    """
    rows, cols = shape
    heights = min(tile, rows)
    widths = min(tile, cols)
    return [
        Window(r, c, heights, widths)
        for r in axis_offsets(rows, tile, overlap)
        for c in axis_offsets(cols, tile, overlap)
    ]


def plan_blocks(shape: Shape, block: int) -> list[Window]:
    """Non-overlapping blocks of at most ``block`` x ``block`` pixels covering a raster.

    Blocks start at multiples of ``block``; the last row and column of blocks are
    partial. These are the units of Dask tasks and Zarr chunks.
    """
    rows, cols = shape
    return [
        Window(r, c, min(block, rows - r), min(block, cols - c))
        for r in range(0, rows, block)
        for c in range(0, cols, block)
    ]
