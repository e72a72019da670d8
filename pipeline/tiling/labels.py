"""Label sources for tiling and evaluation: vector polygons, label rasters, image/mask tile pairs.

Vector labels are read and checked once, reprojected to each raster's CRS, and
indexed, so that each chunk task receives only the polygons that touch its
window and rasterizes them for that window alone. Where polygons overlap, the
one later in the file wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from numpy.typing import NDArray
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import rasterize
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds

from terraseg.pipeline.classes import IGNORE_LABEL, ClassTable, class_table, ensure_ids_known
from terraseg.pipeline.errors import ConfigError, CRSError, InputError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.rasters import RASTER_SUFFIXES, NodataOverride, open_raster, valid_unless

LabelsCover = Literal["complete", "partial"]
UNDECLARED_HINT = "declare them as classes, or list them under ignore"
LABEL_RASTER_SUFFIXES = (
    "_labels",
    "_label",
    "_mask",
    "_masks",
    "_gt",
    "",
)  # in order of preference
PALETTE = [
    (176, 154, 118),
    (220, 40, 40),
    (90, 90, 90),
    (30, 100, 220),
    (40, 160, 60),
    (240, 200, 40),
    (160, 60, 200),
    (60, 200, 200),
    (250, 130, 30),
    (120, 80, 40),
]


@dataclass(frozen=True)
class VectorChunkLabels:
    """The polygons that touch one chunk, in the raster's CRS, as WKB with class ids."""

    geometries: list[bytes]
    class_ids: list[int]
    all_touched: bool
    cover: LabelsCover


@dataclass(frozen=True)
class RasterChunkLabels:
    """A label raster to read (warped onto the image grid when the grids differ)."""

    path: str
    nodata: NodataOverride = None  # overrides the raster's own nodata


ChunkLabels = VectorChunkLabels | RasterChunkLabels


def read_vector_labels(
    path: str | Path,
    class_column: str,
    classes: ClassTable | None,
    cover: LabelsCover = "complete",
) -> tuple[gpd.GeoDataFrame, ClassTable]:
    """Read label polygons and resolve their class column to ids.

    Args:
        path: A vector file GDAL reads (GeoPackage, GeoJSON, Shapefile...).
        class_column: Column holding class ids or class names.
        classes: The class table; required when the column holds names. Without
            one, ids found in the file become classes ``class_<id>`` (and, with
            ``cover`` complete, id 0 ``background``).
        cover: ``complete``: pixels outside the polygons are class 0, which the
            table must then declare; ``partial``: they are ignored.

    Returns:
        The polygons with an integer ``class_id`` column, and the class table.

    Raises:
        InputError: Unreadable file, missing column (the message lists the
            columns), or class names not in the table.
        ConfigError: Class ids not in the table (the message names the column).
        CRSError: The file has no CRS.
    """
    try:
        frame = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise InputError(f"cannot read vector labels ({exc})", path=path) from None
    if frame.crs is None:
        raise CRSError(
            "labels have no CRS; assign one (e.g. in QGIS or with ogr2ogr -a_srs)", path=path
        )
    if class_column not in frame.columns:
        columns = ", ".join(c for c in frame.columns if c != "geometry")
        raise InputError(
            f"no column {class_column!r} (columns: {columns}); pass --class-column", path=path
        )
    values = frame[class_column]
    frame = frame[frame.geometry.notna() & ~frame.geometry.is_empty].copy()
    if pd.api.types.is_integer_dtype(values.dtype):
        ids, classes = _ids_from_integers(frame[class_column], classes, path, cover)
    else:
        ids, classes = _ids_from_names(frame[class_column], classes, class_column, path)
    check_background(classes, cover, path)
    frame["class_id"] = ids.astype(np.int32).to_numpy()
    return frame[["class_id", "geometry"]], classes


def _ids_from_integers(
    column: pd.Series[Any], classes: ClassTable | None, path: str | Path, cover: LabelsCover
) -> tuple[pd.Series[Any], ClassTable]:
    """Class ids as given; without a class table, one of ``class_<id>`` for the ids found."""
    ids = column.astype(int)
    if classes is None:
        found = sorted({*([0] if cover == "complete" else []), *ids.unique().tolist()})
        classes = class_table(
            [
                (i, "background" if i == 0 else f"class_{i}", PALETTE[i % len(PALETTE)])
                for i in found
            ]
        )
    ensure_ids_known(
        classes,
        ids.unique().tolist(),
        path=path,
        what=f"class column {column.name!r}: values",
        hint=UNDECLARED_HINT,
    )
    return ids, classes


def check_background(classes: ClassTable, cover: LabelsCover, path: str | Path) -> None:
    """With complete cover, pixels outside every polygon are id 0: the table must declare it.

    Raises:
        ConfigError: Id 0 is neither a class nor ignored.
    """
    if cover == "complete" and 0 not in classes.ids and 0 not in classes.ignore:
        raise ConfigError(
            "with --labels-cover complete, pixels outside every polygon are class 0, which "
            "the classes file does not declare; declare class 0 or pass --labels-cover partial",
            path=path,
        )


def _ids_from_names(
    column: pd.Series[Any], classes: ClassTable | None, class_column: str, path: str | Path
) -> tuple[pd.Series[Any], ClassTable]:
    """Class ids of class names, which must all be in the class table."""
    if classes is None:
        raise InputError(
            f"column {class_column!r} holds names; pass --classes FILE to give them ids",
            path=path,
        )
    names = column.astype(str)
    unknown = sorted(set(names) - set(classes.names))
    if unknown:
        raise InputError(
            f"class names not in the classes file: {', '.join(unknown)} "
            f"(known: {', '.join(classes.names)})",
            path=path,
        )
    return names.map({c.name: c.id for c in classes.classes}), classes


class SceneVectorLabels:
    """Vector labels reprojected to one raster's CRS and clipped to its footprint."""

    def __init__(
        self, labels: gpd.GeoDataFrame, crs: CRS, bounds: tuple[float, float, float, float]
    ) -> None:
        footprint = shapely.box(*transform_bounds(crs, labels.crs, *bounds, densify_pts=21))
        candidates = labels.iloc[labels.sindex.query(footprint, predicate="intersects")]
        if not candidates.empty and CRS.from_user_input(labels.crs) != crs:
            candidates = candidates.set_geometry(
                candidates.geometry.segmentize(_segment_length(candidates))
            )
            candidates = candidates.to_crs(crs.to_wkt())
        candidates = candidates[candidates.intersects(shapely.box(*bounds))]
        self.geometries = candidates.geometry.to_numpy()
        self.class_ids = candidates["class_id"].to_numpy()
        self.tree = shapely.STRtree(self.geometries)

    def __len__(self) -> int:
        return len(self.geometries)

    def for_window(
        self, window: Window, transform: Affine, all_touched: bool, cover: LabelsCover
    ) -> VectorChunkLabels:
        """The polygons that touch ``window``, in file order."""
        bounds = window_bounds(window, transform)
        hits = np.sort(self.tree.query(shapely.box(*bounds), predicate="intersects"))
        return VectorChunkLabels(
            geometries=[shapely.to_wkb(g) for g in self.geometries[hits]],
            class_ids=[int(c) for c in self.class_ids[hits]],
            all_touched=all_touched,
            cover=cover,
        )


def _segment_length(frame: gpd.GeoDataFrame) -> float:
    """Densify before reprojecting so straight edges follow the target projection."""
    return 0.0001 if frame.crs.is_geographic else 10.0


def window_bounds(window: Window, transform: Affine) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a pixel window."""
    x0, y0 = transform @ (window.col_off, window.row_off)
    x1, y1 = transform @ (window.col_end, window.row_end)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


def chunk_label(
    labels: ChunkLabels,
    window: Window,
    *,
    transform: Affine,
    crs: CRS | None,
    shape: tuple[int, int],
    classes: ClassTable,
) -> NDArray[np.uint8]:
    """The label array of one window from any label source (before nodata is applied)."""
    match labels:
        case VectorChunkLabels():
            fill = 0 if labels.cover == "complete" else IGNORE_LABEL
            if not labels.geometries:
                return np.full(window.shape, fill, dtype=np.uint8)
            shapes = zip(shapely.from_wkb(labels.geometries), labels.class_ids, strict=True)
            burned: NDArray[np.uint8] = rasterize(
                shapes,
                out_shape=window.shape,
                transform=window_transform(window, transform),
                fill=fill,
                all_touched=labels.all_touched,
                dtype="uint8",
            )
            return burned
        case RasterChunkLabels():
            return read_label_raster(
                labels.path,
                window,
                transform=transform,
                crs=crs,
                shape=shape,
                classes=classes,
                nodata=labels.nodata,
            )
        case _:
            raise TypeError(f"unknown label source {labels!r}")


def window_transform(window: Window, transform: Affine) -> Affine:
    """The affine transform of a window's upper-left pixel."""
    return transform @ Affine.translation(window.col_off, window.row_off)


def read_label_raster(
    path: str,
    window: Window,
    *,
    transform: Affine,
    crs: CRS | None,
    shape: tuple[int, int],
    classes: ClassTable,
    nodata: NodataOverride = None,
) -> NDArray[np.uint8]:
    """Read a label raster over an image window, warping with nearest neighbour if needed.

    Nodata, and areas the label raster does not cover, become the ignore label.
    The values are class ids (or ignored values, or 255): the caller maps them.

    Args:
        path: The label raster.
        window: The window of the image grid.
        transform: The image's geotransform.
        crs: The image's CRS.
        shape: The image's (rows, cols).
        classes: The class table the values must be in.
        nodata: Overrides the label raster's own nodata value (``"none"``: it has none).

    Raises:
        InputError: The raster holds values outside 0-255.
        ConfigError: The raster holds values that are neither class ids nor ignored.
    """
    with open_raster(path) as src:
        same_grid = (
            (src.crs == crs or crs is None) and src.transform == transform and src.shape == shape
        )
        if not same_grid and (src.crs is None or crs is None):
            raise CRSError(
                "label raster and image grids differ and one of them has no CRS", path=path
            )
        grid = None if same_grid else (crs, transform, shape)
        data = _read_label_band(src, window, grid, nodata)
    values = np.ma.filled(data.astype(np.int64), IGNORE_LABEL)
    bad = (values < 0) | (values > IGNORE_LABEL)
    if bad.any():
        raise InputError(
            f"label values outside 0-255: {sorted(set(values[bad].tolist()))[:10]}", path=path
        )
    ensure_ids_known(
        classes, np.unique(values).tolist(), path=path, what="label values", hint=UNDECLARED_HINT
    )
    return values.astype(np.uint8)


def _read_label_band(
    src: Any,
    window: Window,
    grid: tuple[CRS | None, Affine, tuple[int, int]] | None,
    nodata: NodataOverride,
) -> np.ma.MaskedArray[Any, Any]:
    """Band 1 of ``window``, nodata masked; on another grid (crs, transform, shape) warped."""
    source_nodata = src.nodata if nodata is None else (None if nodata == "none" else nodata)
    if grid is None:
        data = src.read(1, window=window.to_rasterio())
    else:
        crs, transform, shape = grid
        options = {"crs": crs, "transform": transform, "width": shape[1], "height": shape[0]}
        with WarpedVRT(src, **options, resampling=Resampling.nearest, src_nodata=source_nodata,
                       nodata=IGNORE_LABEL) as vrt:  # fmt: skip
            covered = vrt.read_masks(1, window=window.to_rasterio()) > 0
            data = np.where(covered, vrt.read(1, window=window.to_rasterio()), IGNORE_LABEL)
            return np.ma.masked_array(data, mask=~covered)
    invalid = np.zeros(data.shape, bool)
    if source_nodata is not None:
        invalid = ~valid_unless(data[None], float(source_nodata))
    return np.ma.masked_array(data, mask=invalid)


def match_label_rasters(images: list[Path], labels: list[Path]) -> dict[Path, Path]:
    """Pair each image with its label raster.

    One label raster serves every image (it is warped onto each grid). Otherwise
    an image ``x.tif`` takes the first of ``x_labels``, ``x_label``, ``x_mask``,
    ``x_masks``, ``x_gt`` and ``x`` (another file of that name, e.g. in a masks
    folder) found among the label rasters, else the one label raster named
    ``x_<anything>`` (a band-file scene ``x`` with its ``x_fmask.tif``).

    Raises:
        InputError: An image has no matching label raster, or several ``x_*`` ones.
    """
    if len(labels) == 1:
        return dict.fromkeys(images, labels[0])
    by_stem: dict[str, list[Path]] = {}
    for path in labels:
        by_stem.setdefault(path.stem, []).append(path)
    return {image: _label_raster_of(image, labels, by_stem) for image in images}


def _label_raster_of(image: Path, labels: list[Path], by_stem: dict[str, list[Path]]) -> Path:
    for suffix in LABEL_RASTER_SUFFIXES:
        for path in by_stem.get(image.stem + suffix, []):
            if path.resolve() != image.resolve():
                return path
    prefixed = [path for path in labels if path.stem.startswith(image.stem + "_")]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        names = ", ".join(p.name for p in prefixed[:4])
        raise InputError(f"several label rasters match this image ({names})", path=image)
    raise InputError(
        f"no label raster matches this image (expected {image.stem}_labels.tif or similar)",
        path=image,
    )


def match_pairs(images_dir: Path, masks_dir: Path) -> dict[Path, Path]:
    """Pair image tiles with mask tiles of the same name (extensions may differ).

    Raises:
        InputError: A folder is missing or empty, or a tile has no partner.
    """

    def rasters(folder: Path) -> dict[str, Path]:
        if not folder.is_dir():
            raise InputError("not a directory", path=folder)
        found = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in RASTER_SUFFIXES}
        if not found:
            raise InputError("no raster tiles in this folder", path=folder)
        return found

    images, masks = rasters(images_dir), rasters(masks_dir)
    for stems, other, folder in ((images, masks, masks_dir), (masks, images, images_dir)):
        missing = sorted(set(stems) - set(other))
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(
                f"no tile of the same name for {len(missing)} tiles: {shown}", path=folder
            )
    return {images[stem]: masks[stem] for stem in images}


def rasters_without_labels(counts: dict[Path, int], labels_path: Any) -> None:
    """Raise when no raster overlaps any label polygon.

    Raises:
        InputError: The message names the label file and the rasters.
    """
    if counts and not any(counts.values()):
        names = ", ".join(p.name for p in counts)
        raise InputError(
            f"no label polygon overlaps any raster ({names}); check both CRSs and extents",
            path=labels_path,
        )
