"""Streaming merge of one raster's blocks, one row of blocks at a time, in bounded memory.

The driver sees the block results in raster row order. A group of edge pieces that
does not reach the bottom line of the current row of blocks cannot be joined by any
later block: it is closed, dissolved and handed on to be written. Only the pieces of
the groups that reach the next row are carried, so the memory held depends on the
block size and on the polygons that cross the current line, not on the raster size.

Each group is dissolved from the same pieces in the same order as a merge of the whole
raster at once would use, so the polygons are identical to it.

Hole filling (``fill_holes``) drops every polygon whose anchor lies in a hole filled
after merging. A polygon inside a hole of another one lies strictly below that one's
top row, so a batch of polygons waits (on disk) until every group still open starts
at or below the batch's last top row; by then all holes that may contain it are known.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import shapely

from pipeline.grid import Shape
from pipeline.vectorize import (
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


class RowMerger:
    """Merges the edge pieces of a raster row of blocks by row of blocks."""

    def __init__(self, shape: Shape, block: int) -> None:
        self.shape = shape
        self.block = block
        self.carry = empty_pieces()  # pieces of the groups still open, in raster order
        self.roots = np.empty(0, np.int64)  # lowest carried index of each piece's group

    @property
    def open_top(self) -> float:
        """The top pixel row of the highest open group (infinity when none is open)."""
        if not len(self.carry):
            return math.inf
        return float(shapely.bounds(self.carry.geoms)[:, 1].min())

    def add_row(self, edges: Pieces, row_off: int, row_end: int) -> Pieces:
        """Join one row of blocks' edge pieces (in window order) to the open groups.

        Args:
            edges: The edge pieces of the row's blocks, concatenated in window order.
            row_off: The row's first pixel row.
            row_end: One past the row's last pixel row.

        Returns:
            The polygons closed by this row (dissolved, in order of their first piece).

        """
        carried = len(self.carry)
        pieces = Pieces.concat([self.carry, edges])
        bounds = shapely.bounds(pieces.geoms) if len(pieces) else np.empty((0, 4))
        # Only carried pieces on the line above this row can join new pieces.
        near = np.flatnonzero((bounds[:, 3] == row_off) | (np.arange(len(pieces)) >= carried))
        pairs = touching_pairs(pieces.take(near), self.block, self.shape)
        prior = np.r_[self.roots, np.arange(carried, len(pieces))].astype(np.int64)
        roots = group_roots(((near[a], near[b]) for a, b in pairs), len(pieces), prior)
        reaching = (bounds[:, 3] == row_end) & (row_end < self.shape[0])
        is_open = np.isin(roots, roots[reaching])
        closed = np.flatnonzero(~is_open)
        renumber = np.cumsum(is_open) - 1  # roots are the lowest index, so they stay open
        self.carry, self.roots = pieces.take(is_open), renumber[roots[is_open]]
        return dissolve_groups(pieces, split_groups(closed, roots[closed]))


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

    def release(self, open_top: float, next_row: float) -> list[str]:
        """The files of the batches that can be written now, filtered.

        Args:
            open_top: The top row of the highest group still open.
            next_row: The first pixel row of the next row of blocks.

        """
        files = []
        while self.waiting and (not self.active or self.waiting[0].last_top <= open_top):
            file = self._filter(self.waiting.popleft())
            if file is not None:
                files.append(file)
        needed_below = min([next_row, *(b.first_top for b in self.waiting)])
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
