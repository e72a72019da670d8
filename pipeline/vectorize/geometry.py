"""Geometry operations on polygon arrays: coordinates, simplification, vertex clean-up."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import shapely
from affine import Affine

from terraseg.pipeline.vectorize.pieces import FloatArray, GeomArray, Pieces


def to_crs(geoms: GeomArray, transform: Affine) -> GeomArray:
    """Pixel-coordinate geometries in the raster's CRS (GDAL's arithmetic order)."""
    a, b, c, d, e, f = tuple(transform)[:6]

    def apply(xy: FloatArray) -> FloatArray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([c + col * a + row * b, f + col * d + row * e])

    return np.asarray(shapely.transform(geoms, apply), dtype=object)


def simplify_block(pieces: Pieces, tolerance_px: float) -> Pieces:
    """Coverage-simplify a block's pieces with the block outline fixed.

    The pieces are first densified to one vertex per pixel corner so that
    neighbours share their edges vertex by vertex, as coverage simplification needs.
    """
    dense = shapely.segmentize(pieces.geoms, 1.0)
    return pieces.with_geoms(
        shapely.coverage_simplify(dense, tolerance_px, simplify_boundary=False)
    )


def remove_collinear(geoms: GeomArray) -> GeomArray:
    """Remove vertices that lie on a straight line between their neighbours.

    Exact for pixel coordinates (integers), which is where it is used.
    """
    if not len(geoms):
        return geoms
    rings, owner = shapely.get_rings(geoms, return_index=True)
    coords, ring_of = shapely.get_coordinates(rings, return_index=True)
    last = np.r_[ring_of[1:] != ring_of[:-1], True]
    coords, ring_of = coords[~last], ring_of[~last]  # drop each ring's closing point
    starts = np.r_[0, np.flatnonzero(ring_of[1:] != ring_of[:-1]) + 1]
    lengths = np.diff(np.r_[starts, len(ring_of)])
    first = np.repeat(starts, lengths)
    end = first + np.repeat(lengths, lengths) - 1
    pos = np.arange(len(coords))
    prev = np.where(pos == first, end, pos - 1)
    nxt = np.where(pos == end, first, pos + 1)
    d1 = coords - coords[prev]
    d2 = coords[nxt] - coords
    keep = d1[:, 0] * d2[:, 1] - d1[:, 1] * d2[:, 0] != 0
    new_rings = shapely.linearrings(coords[keep], indices=ring_of[keep])
    kept_rings = np.unique(ring_of[keep])
    return np.asarray(shapely.polygons(new_rings, indices=owner[kept_rings]), dtype=object)


def inside_any(points: GeomArray, areas: GeomArray) -> npt.NDArray[np.bool_]:
    """Whether each point lies inside one of ``areas``."""
    result = np.zeros(len(points), bool)
    if len(points) and len(areas):
        hits = shapely.STRtree(areas).query(points, predicate="within")
        result[np.unique(hits[0])] = True
    return result


def top_range(geoms: GeomArray) -> tuple[float, float]:
    """The smallest and the largest top (minimum y) of ``geoms``."""
    tops = shapely.bounds(geoms)[:, 1]
    return float(tops.min()), float(tops.max())
