"""The block task: polygonize one block, keep its final polygons on disk, return its edge pieces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio.features
import shapely
from affine import Affine

from terraseg.pipeline.grid import Window, plan_blocks
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.features import SCRATCH_SUFFIX, finalize, save_features
from terraseg.pipeline.vectorize.geometry import simplify_block, top_range
from terraseg.pipeline.vectorize.holes import fill_small_holes
from terraseg.pipeline.vectorize.measure import at_least
from terraseg.pipeline.vectorize.pieces import OUTSIDE, GeomArray, Pieces, empty_pieces
from terraseg.pipeline.vectorize.rasters import RasterInfo, read_block, read_confidence


@dataclass
class BlockResult:
    """What a block task returns to the driver: edge pieces and a summary of the rest."""

    window: Window
    edges: Pieces
    final_file: str | None
    final_count: int
    values: list[int] = field(default_factory=list)
    final_tops: tuple[float, float] = (0.0, 0.0)  # first and last top pixel row of the finals


def block_plan(info: RasterInfo, config: VectorizeConfig) -> list[Window]:
    """Plan the blocks of a raster (:func:`terraseg.pipeline.grid.plan_blocks`)."""
    return plan_blocks(info.shape, config.block_size)


def polygonize_block(
    info: RasterInfo, window: Window, config: VectorizeConfig, workdir: str
) -> BlockResult:
    """Polygonize one block; write its final polygons to ``workdir``, return edge pieces.

    Args:
        info: The raster.
        window: The block (one of :func:`block_plan`).
        config: Settings (block size, post-processing).
        workdir: Directory shared with the driver for the block's final polygons.

    Returns:
        The edge pieces (pixel coordinates) and the name of the file with the rest.
    """
    data, valid = read_block(info, window)
    values = np.unique(data[valid]).astype(int).tolist()
    keep = valid & (data != config.background_id) if config.drop_background else valid
    simplify_px = config.simplify / info.pixel_size
    pieces = shapes_in_block(data, keep if simplify_px == 0 else None, window, keep)
    pieces = add_confidence(pieces, info, window)
    pieces = fill_small_holes(pieces, config.fill_holes, info)
    if simplify_px > 0:
        pieces = simplify_block(pieces, simplify_px)
    pieces = pieces.take(pieces.class_ids != OUTSIDE)
    on_edge = touches_interior_line(pieces.geoms, window, info.shape)
    finals = pieces.take(~on_edge)
    finals = finals.take(at_least(finals.geoms, config.min_area, info))
    final_file, tops = None, (0.0, 0.0)
    if len(finals):
        final_file = str(Path(workdir) / f"block-{window.row_off}-{window.col_off}{SCRATCH_SUFFIX}")
        save_features(final_file, finalize(finals, info, simplified=simplify_px > 0))
        tops = top_range(finals.geoms)
    return BlockResult(window, pieces.take(on_edge), final_file, len(finals), values, tops)


def shapes_in_block(
    data: npt.NDArray[Any],
    mask: npt.NDArray[np.bool_] | None,
    window: Window,
    keep: npt.NDArray[np.bool_],
) -> Pieces:
    """Polygonize ``data`` in global pixel coordinates (4-connectivity).

    With ``mask`` the masked-out pixels give no polygons; without it they are
    polygonized as the pseudo class :data:`OUTSIDE` so that the block is covered
    (needed for coverage simplification), and dropped later.

    Args:
        data: The block's class ids.
        mask: Pixels to polygonize, or ``None`` for all (see above).
        window: The block.
        keep: Pixels that belong to a polygon (used when ``mask`` is ``None``).

    Returns:
        One piece per connected region, confidence statistics zero.
    """
    transform = Affine.translation(window.col_off, window.row_off)
    if mask is None:
        data = np.where(keep, data.astype(np.int32), OUTSIDE).astype(np.int32)
    coords, ring_counts, ids = [], [], []
    for geojson, value in rasterio.features.shapes(data, mask=mask, transform=transform):
        rings = geojson["coordinates"]  # shell first, then holes
        coords += [np.asarray(ring, np.float64) for ring in rings]
        ring_counts.append(len(rings))
        ids.append(int(value))
    n = len(ids)
    if not n:
        return empty_pieces()
    # Built in one vectorized call: shapely.Polygon per shape spends most of its time
    # turning coordinate tuples into arrays one by one.
    ring_of = np.repeat(np.arange(len(coords)), [len(c) for c in coords])
    rings = shapely.linearrings(np.concatenate(coords), indices=ring_of)
    polygons = shapely.polygons(rings, indices=np.repeat(np.arange(n), ring_counts))
    geoms = np.asarray(polygons, dtype=object)
    return Pieces(geoms, np.asarray(ids, np.int64), np.zeros(n), np.zeros(n))


def add_confidence(pieces: Pieces, info: RasterInfo, window: Window) -> Pieces:
    """Per-piece sum and count of the confidence raster's pixels (unchanged without one)."""
    if info.confidence is None or not len(pieces):
        return pieces
    conf = read_confidence(info, window)
    transform = Affine.translation(window.col_off, window.row_off)
    labels = rasterio.features.rasterize(
        zip(pieces.geoms, range(1, len(pieces) + 1), strict=True),
        out_shape=window.shape,
        transform=transform,
        fill=0,
        dtype="int32",
    )
    ok = ~np.ma.getmaskarray(conf)
    flat = labels[ok]
    n = len(pieces) + 1
    sums = np.bincount(flat, weights=np.ma.getdata(conf)[ok], minlength=n)
    counts = np.bincount(flat, minlength=n).astype(np.float64)
    return Pieces(pieces.geoms, pieces.class_ids, np.asarray(sums[1:], np.float64), counts[1:])


def touches_interior_line(
    geoms: GeomArray, window: Window, shape: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """Whether each polygon has a side on a block line inside the raster."""
    if not len(geoms):
        return np.zeros(0, bool)
    x0, y0, x1, y1 = shapely.bounds(geoms).T
    rows, cols = shape
    left = (x0 == window.col_off) & (window.col_off > 0)
    right = (x1 == window.col_end) & (window.col_end < cols)
    top = (y0 == window.row_off) & (window.row_off > 0)
    bottom = (y1 == window.row_end) & (window.row_end < rows)
    result: npt.NDArray[np.bool_] = left | right | top | bottom
    return result
