"""Vectorization of class maps: block-wise polygonization, merged exactly across block lines.

Every block is polygonized on its own (``rasterio.features.shapes`` with 4-connectivity,
as a whole-raster pass would use) in global *pixel* coordinates, where every vertex is
an integer and every comparison is exact. Polygons that do not touch an interior block
line are final. The others ("edge pieces") are merged in the driver: two pieces of the
same class on either side of a block line belong to one polygon when they share a
stretch of that line of positive length (pieces meeting only at a corner are distinct
polygons under 4-connectivity). Each group is dissolved with a union (OverlayNG, exact
on integer coordinates) and its collinear vertices are removed, which gives exactly the
polygon that one pass over the whole raster would give.

Post-processing follows one-pass semantics:

- ``fill_holes``: interior rings smaller than the area are removed and whatever lay
  inside them is dropped (the surrounding polygon absorbs it, so nothing overlaps).
- ``min_area``: polygons smaller than the area (after hole filling) are dropped.
- ``simplify``: coverage simplification of each block with the block outline kept
  fixed, so neighbouring polygons keep sharing their edges inside a block and across
  block lines. Points where boundaries cross block lines stay where they are, so the
  simplified result depends (slightly) on the block size; no gaps or overlaps open.
"""

from __future__ import annotations

import json
import math
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
import shapely
from affine import Affine
from pydantic import Field

from pipeline.classes import CLASSES_TAG, IGNORE_LABEL, ClassTable
from pipeline.errors import CRSError, InputError, RasterReadError
from pipeline.grid import Window, plan_blocks
from pipeline.settings import StrictModel

OUTSIDE = -1  # pseudo class of masked pixels while a block is simplified as a coverage
SHAPES_DTYPES = {"uint8", "int16", "uint16", "int32", "float32"}

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
GeomArray = npt.NDArray[np.object_]


class VectorizeConfig(StrictModel):
    """Settings of ``terraseg vectorize`` (see ``configs/vectorize.yaml``)."""

    block_size: int = Field(2048, ge=16)
    min_area: float = Field(0.0, ge=0)
    fill_holes: float = Field(0.0, ge=0)
    simplify: float = Field(0.0, ge=0)
    drop_background: bool = False
    background_id: int = Field(0, ge=0, lt=IGNORE_LABEL)
    layer_per_class: bool = False
    layer: str = Field("polygons", min_length=1)


@dataclass(frozen=True)
class RasterInfo:
    """What a block task needs to know about one class-map raster (picklable)."""

    path: str
    shape: tuple[int, int]
    transform: tuple[float, ...]
    crs_wkt: str
    geographic: bool
    nodata: float | None
    is_float: bool
    pixel_area_m2: float
    pixel_size: float
    metre_factor: float  # CRS linear unit in metres (1 when geographic: lengths come from LAEA)
    classes: ClassTable | None
    confidence: str | None = None

    @property
    def source(self) -> str:
        """The raster's file name, written to the ``source`` column."""
        return Path(self.path).name

    @property
    def affine(self) -> Affine:
        """The pixel-to-CRS transform."""
        return Affine(*self.transform[:6])


@dataclass
class Pieces:
    """Polygons in global pixel coordinates with per-polygon pixel statistics."""

    geoms: GeomArray
    class_ids: IntArray
    conf_sum: FloatArray
    conf_count: FloatArray

    def __len__(self) -> int:
        return len(self.geoms)

    def take(self, index: npt.ArrayLike) -> Pieces:
        """Return the subset at ``index`` (an index array or boolean mask)."""
        idx = np.asarray(index)
        return Pieces(
            self.geoms[idx], self.class_ids[idx], self.conf_sum[idx], self.conf_count[idx]
        )

    @staticmethod
    def concat(parts: Sequence[Pieces]) -> Pieces:
        """All pieces of ``parts`` in order."""
        if not parts:
            return empty_pieces()
        return Pieces(
            np.concatenate([p.geoms for p in parts]),
            np.concatenate([p.class_ids for p in parts]),
            np.concatenate([p.conf_sum for p in parts]),
            np.concatenate([p.conf_count for p in parts]),
        )


def empty_pieces() -> Pieces:
    """No pieces."""
    return Pieces(np.empty(0, object), np.empty(0, np.int64), np.empty(0), np.empty(0))


@dataclass
class BlockResult:
    """What a block task returns to the driver: edge pieces and a summary of the rest."""

    window: Window
    edges: Pieces
    final_file: str | None
    final_count: int
    values: list[int] = field(default_factory=list)
    final_tops: tuple[float, float] = (0.0, 0.0)  # first and last top pixel row of the finals


# --------------------------------------------------------------------------- raster


def read_raster_info(
    path: str | Path, classes: ClassTable | None = None, confidence: str | Path | None = None
) -> RasterInfo:
    """Read the grid, CRS and class table of a class-map raster.

    The class table is ``classes`` when given, else the ``TERRASEG_CLASSES`` tag,
    else the colour table (ids named ``class_<id>``), else none.

    Raises:
        RasterReadError: The raster cannot be opened.
        InputError: The raster holds floats and no class table is known, or the
            confidence raster is on another grid.
        CRSError: The raster has no CRS.

    """
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot open raster ({exc})", path=path) from None
    with src:
        table = classes or _tagged_classes(src) or _colortable_classes(src)
        is_float = np.dtype(src.dtypes[0]).kind == "f"
        if is_float and table is None:
            raise InputError(
                "float raster without a classes file; pass --classes FILE to name its ids",
                path=path,
            )
        if src.crs is None:
            raise CRSError("raster has no CRS; assign one (e.g. gdal_edit.py -a_srs)", path=path)
        if confidence is not None:
            _check_same_grid(src, confidence)
        geographic = bool(src.crs.is_geographic)
        metre = 1.0 if geographic else float(src.crs.linear_units_factor[1])
        pixel_area = _pixel_area_m2(src, metre)
        return RasterInfo(
            path=str(path),
            shape=(src.height, src.width),
            transform=tuple(src.transform)[:6],
            crs_wkt=src.crs.to_wkt(),
            geographic=geographic,
            nodata=src.nodata,
            is_float=is_float,
            pixel_area_m2=pixel_area,
            pixel_size=math.sqrt(abs(src.transform.determinant)),
            metre_factor=metre,
            classes=table,
            confidence=None if confidence is None else str(confidence),
        )


def _tagged_classes(src: Any) -> ClassTable | None:
    text = src.tags().get(CLASSES_TAG)
    if not text:
        return None
    try:
        return ClassTable.model_validate(json.loads(text))
    except ValueError:
        raise InputError(f"tag {CLASSES_TAG} is not a valid class table", path=src.name) from None


def _colortable_classes(src: Any) -> ClassTable | None:
    from pipeline.classes import class_table

    try:
        cmap = src.colormap(1)
    except ValueError:
        return None
    entries = [(i, f"class_{i}", tuple(rgba[:3])) for i, rgba in cmap.items() if i < IGNORE_LABEL]
    # GDAL pads colour tables to 256 entries; keep ids with a non-black colour or id 0.
    entries = [e for e in entries if e[0] == 0 or e[2] != (0, 0, 0)]
    return class_table(entries) if entries else None


def _check_same_grid(src: Any, confidence: str | Path) -> None:
    try:
        with rasterio.open(confidence) as conf:
            same = conf.shape == src.shape and conf.transform.almost_equals(src.transform)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot open confidence raster ({exc})", path=confidence) from None
    if not same:
        raise InputError(
            f"confidence raster is not on the grid of {Path(src.name).name}", path=confidence
        )


def _pixel_area_m2(src: Any, metre: float) -> float:
    """Area of one pixel in m²; at the raster centre, in an equal-area CRS, if geographic."""
    if not src.crs.is_geographic:
        return float(abs(src.transform.determinant)) * metre * metre
    row, col = src.height // 2, src.width // 2
    pixel = shapely.box(col, row, col + 1, row + 1)
    (geom,) = to_crs(np.array([pixel], object), src.transform)
    (projected,) = _equal_area(np.array([geom], object), src.crs.to_wkt(), src.bounds)
    return float(shapely.area(projected))


# --------------------------------------------------------------------------- blocks


def polygonize_block(
    info: RasterInfo, window: Window, config: VectorizeConfig, workdir: str
) -> BlockResult:
    """Polygonize one block; write its final polygons to ``workdir``, return edge pieces.

    Args:
        info: The raster.
        window: The block (one of :func:`pipeline.grid.plan_blocks`).
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
    pieces = _add_confidence(pieces, info, window)
    pieces = fill_small_holes(pieces, config.fill_holes / info.pixel_area_m2)
    if simplify_px > 0:
        pieces = simplify_block(pieces, simplify_px)
    pieces = pieces.take(pieces.class_ids != OUTSIDE)
    on_edge = touches_interior_line(pieces.geoms, window, info.shape)
    finals = pieces.take(~on_edge)
    finals = finals.take(shapely.area(finals.geoms) >= config.min_area / info.pixel_area_m2)
    final_file, tops = None, (0.0, 0.0)
    if len(finals):
        final_file = str(Path(workdir) / f"block-{window.row_off}-{window.col_off}.pkl")
        save_features(final_file, finalize(finals, info, simplified=simplify_px > 0))
        tops = top_range(finals.geoms)
    return BlockResult(window, pieces.take(on_edge), final_file, len(finals), values, tops)


def read_block(info: RasterInfo, window: Window) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Read the block's class ids and the mask of pixels that belong to a class.

    Raises:
        InputError: A float raster holds values that are not whole numbers.

    """
    with rasterio.open(info.path) as src:
        raw = src.read(1, window=window.to_rasterio())
    valid = raw != IGNORE_LABEL
    if info.nodata is not None and not math.isnan(info.nodata):
        valid &= raw != info.nodata
    if info.is_float:
        valid &= np.isfinite(raw)
        if np.any(raw[valid] != np.round(raw[valid])):
            raise InputError("float raster holds values that are not class ids", path=info.path)
        valid &= (raw >= 0) & (raw < IGNORE_LABEL)
        raw = np.where(valid, raw, 0)
    data = raw if raw.dtype.name in SHAPES_DTYPES and not info.is_float else raw.astype(np.int32)
    return data, valid


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


def _add_confidence(pieces: Pieces, info: RasterInfo, window: Window) -> Pieces:
    """Per-piece sum and count of the confidence raster's pixels."""
    if info.confidence is None or not len(pieces):
        return pieces
    with rasterio.open(info.confidence) as src:
        conf = src.read(1, window=window.to_rasterio(), masked=True)
        scale = 255.0 if np.dtype(src.dtypes[0]) == np.uint8 else 1.0
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
    sums = np.bincount(
        flat, weights=np.ma.getdata(conf)[ok].astype(np.float64) / scale, minlength=n
    )
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


# --------------------------------------------------------------------------- post-processing


def fill_small_holes(pieces: Pieces, max_area_px: float) -> Pieces:
    """Remove holes smaller than ``max_area_px`` and drop the pieces inside them."""
    if max_area_px <= 0 or not len(pieces):
        return pieces
    owners = pieces.class_ids != OUTSIDE  # the pseudo class never absorbs anything
    pieces_before = pieces.geoms
    geoms = pieces.geoms.copy()
    geoms[owners], filled = fill_holes(pieces.geoms[owners], max_area_px)
    pieces = Pieces(geoms, pieces.class_ids, pieces.conf_sum, pieces.conf_count)
    if not len(filled):
        return pieces
    # Anchors from the unfilled polygons: a filled polygon may cover its own anchor.
    return pieces.take(~inside_any(shapely.point_on_surface(pieces_before), filled))


def fill_holes(geoms: GeomArray, max_area_px: float) -> tuple[GeomArray, GeomArray]:
    """Polygons without their holes smaller than ``max_area_px``, and those holes as polygons."""
    rings, owner = shapely.get_rings(geoms, return_index=True)
    is_shell = np.r_[True, owner[1:] != owner[:-1]] if len(owner) else np.zeros(0, bool)
    ring_polys = shapely.polygons(rings)
    small = ~is_shell & (shapely.area(ring_polys) < max_area_px)
    if not small.any():
        return geoms, np.empty(0, object)
    changed = np.unique(owner[small])
    out = geoms.copy()
    for index in changed:
        own = owner == index
        kept = rings[own & ~small]
        out[index] = shapely.Polygon(kept[0], list(kept[1:]))
    return out, ring_polys[small]


def inside_any(points: GeomArray, areas: GeomArray) -> npt.NDArray[np.bool_]:
    """Whether each point lies inside one of ``areas``."""
    result = np.zeros(len(points), bool)
    if len(points) and len(areas):
        hits = shapely.STRtree(areas).query(points, predicate="within")
        result[np.unique(hits[0])] = True
    return result


def simplify_block(pieces: Pieces, tolerance_px: float) -> Pieces:
    """Coverage-simplify a block's pieces with the block outline fixed.

    The pieces are first densified to one vertex per pixel corner so that
    neighbours share their edges vertex by vertex, as coverage simplification needs.
    """
    dense = shapely.segmentize(pieces.geoms, 1.0)
    simple = shapely.coverage_simplify(dense, tolerance_px, simplify_boundary=False)
    return Pieces(simple, pieces.class_ids, pieces.conf_sum, pieces.conf_count)


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


# --------------------------------------------------------------------------- merge


def group_roots(
    pairs: Iterable[tuple[int, int]], size: int, roots: IntArray | None = None
) -> IntArray:
    """The first (lowest) index of each piece's group after joining ``pairs``.

    Args:
        pairs: Index pairs of pieces that belong to one polygon.
        size: Number of pieces.
        roots: Groups known before (each entry the lowest index of its group); by
            default every piece is a group of its own.

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


def post_process_merged(
    merged: Pieces, info: RasterInfo, config: VectorizeConfig
) -> tuple[Pieces, FloatArray | None, GeomArray]:
    """Fill small holes of merged polygons and drop those below the minimum area.

    Returns:
        The kept polygons (pixel coordinates); with hole filling, their anchor points
        before filling (the points that decide whether a polygon lies in a filled
        hole; ``None`` without it); and the holes filled (pixel coordinates): every
        polygon inside one of them is to be dropped.

    """
    if config.fill_holes <= 0 or not len(merged):
        keep = shapely.area(merged.geoms) >= config.min_area / info.pixel_area_m2
        return merged.take(keep), None, np.empty(0, object)
    anchors = shapely.get_coordinates(shapely.point_on_surface(merged.geoms))  # before filling
    geoms, filled = fill_holes(merged.geoms, config.fill_holes / info.pixel_area_m2)
    keep = shapely.area(geoms) >= config.min_area / info.pixel_area_m2
    merged = Pieces(geoms, merged.class_ids, merged.conf_sum, merged.conf_count)
    return merged.take(keep), anchors[keep], filled


def top_range(geoms: GeomArray) -> tuple[float, float]:
    """The smallest and the largest top (minimum y) of ``geoms``."""
    tops = shapely.bounds(geoms)[:, 1]
    return float(tops.min()), float(tops.max())


def block_plan(info: RasterInfo, config: VectorizeConfig) -> list[Window]:
    """Plan the blocks of a raster (:func:`pipeline.grid.plan_blocks`)."""
    return plan_blocks(info.shape, config.block_size)


# --------------------------------------------------------------------------- attributes


def to_crs(geoms: GeomArray, transform: Affine) -> GeomArray:
    """Pixel-coordinate geometries in the raster's CRS (GDAL's arithmetic order)."""
    a, b, c, d, e, f = tuple(transform)[:6]

    def apply(xy: FloatArray) -> FloatArray:
        col, row = xy[:, 0], xy[:, 1]
        return np.column_stack([c + col * a + row * b, f + col * d + row * e])

    return np.asarray(shapely.transform(geoms, apply), dtype=object)


def _equal_area(geoms: GeomArray, crs_wkt: str, bounds: Any) -> GeomArray:
    """Geographic geometries in a Lambert azimuthal equal-area CRS centred on ``bounds``."""
    from pyproj import CRS, Transformer

    lon = (bounds[0] + bounds[2]) / 2
    lat = (bounds[1] + bounds[3]) / 2
    laea = CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m")
    transformer = Transformer.from_crs(CRS.from_wkt(crs_wkt), laea, always_xy=True)

    def apply(xy: FloatArray) -> FloatArray:
        x, y = transformer.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return np.asarray(shapely.transform(geoms, apply), dtype=object)


def finalize(pieces: Pieces, info: RasterInfo, *, simplified: bool) -> dict[str, Any]:
    """Features ready to write: CRS geometries as WKB and the attribute columns."""
    pixel_geoms = remove_collinear(pieces.geoms) if simplified else pieces.geoms
    geoms = to_crs(pixel_geoms, info.affine)
    if info.geographic:
        bounds = _bounds_of(info)
        measured = _equal_area(shapely.segmentize(geoms, info.pixel_size), info.crs_wkt, bounds)
        area, perimeter = shapely.area(measured), shapely.length(measured)
    else:
        area = shapely.area(pixel_geoms) * info.pixel_area_m2
        perimeter = shapely.length(geoms) * info.metre_factor
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.where(pieces.conf_count > 0, pieces.conf_sum / pieces.conf_count, np.nan)
    return {
        "wkb": shapely.to_wkb(geoms),
        "class_id": pieces.class_ids.astype(np.int32),
        "area_m2": np.asarray(area, np.float64),
        "perimeter_m": np.asarray(perimeter, np.float64),
        "confidence": confidence,
        "anchor": shapely.get_coordinates(shapely.point_on_surface(pieces.geoms)),
    }


def _bounds_of(info: RasterInfo) -> tuple[float, float, float, float]:
    rows, cols = info.shape
    a, b, c, d, e, f = info.transform[:6]
    xs = [c + col * a + row * b for row in (0, rows) for col in (0, cols)]
    ys = [f + col * d + row * e for row in (0, rows) for col in (0, cols)]
    return min(xs), min(ys), max(xs), max(ys)


def save_features(path: str | Path, features: dict[str, Any]) -> None:
    """Write finalized features to a scratch file."""
    with open(path, "wb") as fh:
        pickle.dump(features, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_features(path: str | Path) -> dict[str, Any]:
    """Read features written by :func:`save_features`."""
    with open(path, "rb") as fh:
        features: dict[str, Any] = pickle.load(fh)
    return features
