"""Streaming merge of one raster's blocks, block by block in row-major order, in bounded memory.

The driver sees the block results in the order of the block plan. A group of edge
pieces none of whose pieces lies on a block line with a block still to come on the
other side can no longer grow: it is closed, dissolved and handed on to be written.
Only the pieces of the other groups are carried (those that cross the staircase
between done and not yet done blocks), so the memory held depends on the block size
and on the polygons that cross that line, not on the raster's area.

Each group is dissolved from the same pieces in the same order as a merge of the whole
raster at once would use, so the polygons are identical to it.

Hole filling (``fill_holes``) drops every polygon whose anchor lies in a hole filled
after merging. A polygon inside a hole of another one lies strictly below that one's
top row, and the enclosing polygon has pixels right above it, in a block already seen
(the one above in the same column, or the same block). So a batch of polygons waits
(on disk) until every group still open starts at or below the batch's last top row;
by then all holes that may contain it are known.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely

from pipeline.grid import Shape, Window
from pipeline.vectorize import (
    FloatArray,
    GeomArray,
    Pieces,
    dissolve_groups,
    empty_pieces,
    group_roots,
    inside_any,
    load_features,
    save_features,
    split_groups,
    touching_pairs,
)


class EdgeMerger:
    """Merges the edge pieces of a raster's blocks, block by block in row-major order."""

    def __init__(self, shape: Shape, block: int) -> None:
        self.shape = shape
        self.block = block
        self.carry = empty_pieces()  # pieces of the groups still open, in raster order
        self.roots = np.empty(0, np.int64)  # lowest carried index of each piece's group
        self.bounds = np.empty((0, 4))  # of the carried pieces

    @property
    def open_top(self) -> float:
        """The top pixel row of the highest open group (infinity when none is open)."""
        return float(self.bounds[:, 1].min()) if len(self.carry) else math.inf

    def add_block(self, edges: Pieces, window: Window) -> Pieces:
        """Join one block's edge pieces to the open groups.

        Blocks must come in the order of :func:`pipeline.grid.plan_blocks`.

        Returns:
            The polygons that no later block can reach any more (dissolved, in the
            order of their first piece).

        """
        carried = len(self.carry)
        pieces = Pieces.concat([self.carry, edges])
        new = shapely.bounds(edges.geoms) if len(edges) else np.empty((0, 4))
        bounds = np.concatenate([self.bounds, new])
        near = np.r_[np.flatnonzero(_beside(self.bounds, window)), np.arange(carried, len(pieces))]
        pairs = touching_pairs(pieces.take(near), self.block, self.shape)
        prior = np.r_[self.roots, np.arange(carried, len(pieces))].astype(np.int64)
        roots = group_roots(((near[a], near[b]) for a, b in pairs), len(pieces), prior)
        is_open = np.isin(roots, roots[self._reachable(bounds, window)])
        closed = np.flatnonzero(~is_open)
        renumber = np.cumsum(is_open) - 1  # roots are the lowest index, so they stay open
        self.carry, self.roots = pieces.take(is_open), renumber[roots[is_open]]
        self.bounds = bounds[is_open]
        return dissolve_groups(pieces, split_groups(closed, roots[closed]))

    def _reachable(self, bounds: FloatArray, window: Window) -> npt.NDArray[np.bool_]:
        """Pieces on a block line whose block on the other side is still to come."""
        rows, cols = self.shape
        row_off = np.floor(bounds[:, 1] / self.block) * self.block  # of each piece's block
        col_off = np.floor(bounds[:, 0] / self.block) * self.block
        bottom = (bounds[:, 3] == row_off + self.block) & (bounds[:, 3] < rows)
        below_done = (row_off + self.block < window.row_off) | (
            (row_off + self.block == window.row_off) & (col_off <= window.col_off)
        )
        right = (bounds[:, 2] == col_off + self.block) & (bounds[:, 2] < cols)
        right_done = (row_off < window.row_off) | (col_off < window.col_off)
        result: npt.NDArray[np.bool_] = (bottom & ~below_done) | (right & ~right_done)
        return result


def _beside(bounds: FloatArray, window: Window) -> npt.NDArray[np.bool_]:
    """Pieces on the top or the left side of ``window``, outside it."""
    x0, y0, x1, y1 = bounds.T
    above = (y1 == window.row_off) & (x0 < window.col_end) & (x1 > window.col_off)
    left = (x1 == window.col_off) & (y0 < window.row_end) & (y1 > window.row_off)
    result: npt.NDArray[np.bool_] = above | left
    return result


@dataclass(frozen=True)
class Batch:
    """A scratch file of finalized polygons and the range of their top pixel rows."""

    file: str
    first_top: float
    last_top: float


class HoleFilter:
    """Releases batches in order once no hole filled later can contain their polygons.

    Without hole filling every batch passes at once. With it, a batch waits until
    every open group starts at or below its last top row; it is then filtered against
    the holes filled so far and released. Holes are kept only while a waiting batch
    or a later row may lie inside them.
    """

    def __init__(self, active: bool) -> None:
        self.active = active
        self.waiting: deque[Batch] = deque()
        self.holes: GeomArray = np.empty(0, object)
        self.hole_bottoms = np.empty(0)

    def add(self, batch: Batch) -> None:
        """Queue a batch (batches leave in the order they came)."""
        self.waiting.append(batch)

    def add_holes(self, holes: GeomArray) -> None:
        """Holes filled in polygons that were just closed (pixel coordinates)."""
        if len(holes):
            self.holes = np.concatenate([self.holes, holes])
            self.hole_bottoms = np.r_[self.hole_bottoms, shapely.bounds(holes)[:, 3]]

    def release(self, open_top: float, next_top: float) -> list[str]:
        """The files of the batches that can be written now, filtered.

        Args:
            open_top: The top pixel row of the highest group still open.
            next_top: The top pixel row of the blocks still to come.

        """
        files = []
        while self.waiting and (not self.active or self.waiting[0].last_top <= open_top):
            file = self._filter(self.waiting.popleft())
            if file is not None:
                files.append(file)
        needed_below = min([next_top, *(b.first_top for b in self.waiting)])
        keep = self.hole_bottoms > needed_below
        self.holes, self.hole_bottoms = self.holes[keep], self.hole_bottoms[keep]
        return files

    def _filter(self, batch: Batch) -> str | None:
        """Drop the batch's polygons inside filled holes; ``None`` when none is left."""
        holes = self.holes[self.hole_bottoms > batch.first_top]
        if not len(holes):
            return batch.file
        features = load_features(batch.file)
        inside = inside_any(shapely.points(features["anchor"]), holes)
        if not inside.any():
            return batch.file
        if inside.all():
            return None
        save_features(batch.file, {k: v[~inside] for k, v in features.items()})
        return batch.file
