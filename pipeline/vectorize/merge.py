"""Streaming merge of one raster's edge pieces, block by block in row-major order.

The driver sees the block results in the order of the block plan. A group of edge
pieces none of whose pieces lies on a block line with a block still to come on the
other side can no longer grow: it is closed, dissolved and handed on to be written.
Only the pieces of the other groups are carried (those that cross the staircase
between done and not yet done blocks), so the memory held depends on the block size
and on the polygons that cross that line, not on the raster's area.

Each group is dissolved from the same pieces in the same order as a merge of the whole
raster at once would use, so the polygons are identical to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt
import shapely

from terraseg.pipeline.grid import Shape, Window
from terraseg.pipeline.vectorize.geometry import remove_collinear
from terraseg.pipeline.vectorize.pieces import FloatArray, IntArray, Pieces, empty_pieces


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

        Blocks must come in the order of :func:`terraseg.pipeline.grid.plan_blocks`.

        Args:
            edges: The block's edge pieces.
            window: The block.

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


def group_roots(
    pairs: Iterable[tuple[int, int]], size: int, roots: IntArray | None = None
) -> IntArray:
    """The first (lowest) index of each piece's group after joining ``pairs``.

    Args:
        pairs: Index pairs of pieces that belong to one polygon.
        size: Number of pieces.
        roots: Groups known before (each entry the lowest index of its group); by
            default every piece is a group of its own.

    Returns:
        For each piece, the lowest index of its group.
    """
    parent = np.arange(size) if roots is None else roots.copy()

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(size)], dtype=np.int64)


def split_groups(index: IntArray, roots: IntArray) -> list[IntArray]:
    """Split ascending ``index`` by group root: groups ordered by root, members ascending."""
    order = np.argsort(roots, kind="stable")
    splits = np.flatnonzero(np.diff(roots[order])) + 1
    return [g for g in np.split(index[order], splits) if len(g)]


def touching_pairs(edges: Pieces, block: int, shape: tuple[int, int]) -> Iterable[tuple[int, int]]:
    """Pairs of same-class pieces sharing a stretch of a block line."""
    if not len(edges):
        return
    coords, ring = shapely.get_coordinates(
        shapely.get_exterior_ring(edges.geoms), return_index=True
    )
    same = ring[1:] == ring[:-1]
    p, q, piece = coords[:-1][same], coords[1:][same], ring[:-1][same]
    centre = shapely.bounds(edges.geoms)
    for axis, limit in ((0, shape[1]), (1, shape[0])):  # 0: vertical lines x = k*block
        on_line = (p[:, axis] == q[:, axis]) & (p[:, axis] % block == 0)
        on_line &= (p[:, axis] > 0) & (p[:, axis] < limit)
        line = p[on_line, axis]
        lo = np.minimum(p[on_line, 1 - axis], q[on_line, 1 - axis])
        hi = np.maximum(p[on_line, 1 - axis], q[on_line, 1 - axis])
        owner = piece[on_line]
        mid = (centre[owner, axis] + centre[owner, axis + 2]) / 2
        before = mid < line
        for value in np.unique(line):
            at = line == value
            yield from _overlaps(lo, hi, owner, at & before, at & ~before, edges.class_ids)


def _overlaps(
    lo: FloatArray,
    hi: FloatArray,
    owner: IntArray,
    side_a: npt.NDArray[np.bool_],
    side_b: npt.NDArray[np.bool_],
    class_ids: IntArray,
) -> Iterable[tuple[int, int]]:
    """Pieces on two sides of one line whose intervals overlap with positive length."""
    a = sorted(zip(lo[side_a], hi[side_a], owner[side_a], strict=True))
    b = sorted(zip(lo[side_b], hi[side_b], owner[side_b], strict=True))
    i = j = 0
    while i < len(a) and j < len(b):
        (alo, ahi, ap), (blo, bhi, bp) = a[i], b[j]
        if min(ahi, bhi) > max(alo, blo) and class_ids[ap] == class_ids[bp]:
            yield int(ap), int(bp)
        if ahi <= bhi:
            i += 1
        else:
            j += 1


def dissolve_groups(edges: Pieces, groups: Sequence[IntArray]) -> Pieces:
    """One polygon per group: union of its pieces, collinear vertices removed."""
    geoms = np.empty(len(groups), object)
    for k, group in enumerate(groups):
        geoms[k] = (
            edges.geoms[group[0]] if len(group) == 1 else shapely.union_all(edges.geoms[group])
        )
    multi = np.flatnonzero(shapely.get_type_id(geoms) != 3)
    if len(multi):
        raise AssertionError(f"merged pieces did not give single polygons: {multi[:5]}")
    firsts = np.array([g[0] for g in groups], dtype=np.int64)
    return Pieces(
        remove_collinear(geoms),
        edges.class_ids[firsts],
        np.array([edges.conf_sum[g].sum() for g in groups]),
        np.array([edges.conf_count[g].sum() for g in groups]),
    )
