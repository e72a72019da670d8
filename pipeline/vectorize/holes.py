"""Hole filling with one-pass semantics, in blocks and across the merge of a raster's blocks.

Hole filling (``fill_holes``) drops every polygon whose anchor lies in a hole filled
after merging. A polygon inside a hole of another one lies strictly below that one's
top row, and the enclosing polygon has pixels right above it, in a block already seen
(the one above in the same column, or the same block). So a batch of polygons waits
(on disk) until every group still open starts at or below the batch's last top row;
by then all holes that may contain it are known.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import shapely

from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.features import load_features, save_features
from terraseg.pipeline.vectorize.geometry import inside_any
from terraseg.pipeline.vectorize.measure import area_m2, at_least
from terraseg.pipeline.vectorize.pieces import OUTSIDE, FloatArray, GeomArray, Pieces
from terraseg.pipeline.vectorize.rasters import RasterInfo


def fill_small_holes(pieces: Pieces, max_area_m2: float, info: RasterInfo) -> Pieces:
    """Remove holes smaller than ``max_area_m2`` and drop the pieces inside them."""
    if max_area_m2 <= 0 or not len(pieces):
        return pieces
    owners = pieces.class_ids != OUTSIDE  # the pseudo class never absorbs anything
    pieces_before = pieces.geoms
    geoms = pieces.geoms.copy()
    geoms[owners], filled = fill_holes(pieces.geoms[owners], max_area_m2, info)
    pieces = pieces.with_geoms(geoms)
    if not len(filled):
        return pieces
    # Anchors from the unfilled polygons: a filled polygon may cover its own anchor.
    return pieces.take(~inside_any(shapely.point_on_surface(pieces_before), filled))


def fill_holes(
    geoms: GeomArray, max_area_m2: float, info: RasterInfo
) -> tuple[GeomArray, GeomArray]:
    """Polygons without their holes smaller than ``max_area_m2``, and those holes as polygons.

    Args:
        geoms: Polygons in the pixel coordinates of ``info``'s raster.
        max_area_m2: Holes of a smaller true area (m², see
            :mod:`terraseg.pipeline.vectorize.measure`)
            are filled.
        info: The raster.

    Returns:
        The polygons, and the holes filled.
    """
    rings, owner = shapely.get_rings(geoms, return_index=True)
    is_shell = np.r_[True, owner[1:] != owner[:-1]] if len(owner) else np.zeros(0, bool)
    ring_polys = shapely.polygons(rings)
    small = np.zeros(len(rings), bool)
    small[~is_shell] = area_m2(ring_polys[~is_shell], info) < max_area_m2
    if not small.any():
        return geoms, np.empty(0, object)
    changed = np.unique(owner[small])
    out = geoms.copy()
    for index in changed:
        own = owner == index
        kept = rings[own & ~small]
        out[index] = shapely.Polygon(kept[0], list(kept[1:]))
    return out, ring_polys[small]


def post_process_merged(
    merged: Pieces, info: RasterInfo, config: VectorizeConfig
) -> tuple[Pieces, FloatArray | None, GeomArray]:
    """Fill small holes of merged polygons and drop those below the minimum area.

    Args:
        merged: Polygons dissolved from edge pieces (pixel coordinates).
        info: Their raster.
        config: Settings (``fill_holes``, ``min_area``).

    Returns:
        The kept polygons (pixel coordinates); with hole filling, their anchor points
        before filling (the points that decide whether a polygon lies in a filled
        hole; ``None`` without it); and the holes filled (pixel coordinates): every
        polygon inside one of them is to be dropped.
    """
    if config.fill_holes <= 0 or not len(merged):
        keep = at_least(merged.geoms, config.min_area, info)
        return merged.take(keep), None, np.empty(0, object)
    anchors = shapely.get_coordinates(shapely.point_on_surface(merged.geoms))  # before filling
    geoms, filled = fill_holes(merged.geoms, config.fill_holes, info)
    keep = at_least(geoms, config.min_area, info)
    return merged.with_geoms(geoms).take(keep), anchors[keep], filled


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

        Returns:
            Scratch files, in the order their batches came.
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
