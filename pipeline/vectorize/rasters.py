"""Class-map rasters: what a block task needs to know about one, and reading its blocks."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import shapely
from affine import Affine

from terraseg.pipeline.classes import CLASSES_TAG, IGNORE_LABEL, ClassTable
from terraseg.pipeline.errors import CRSError, InputError, RasterReadError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.rasters import read_band
from terraseg.pipeline.vectorize.measure import DENSIFY_M, area_m2, equal_area_crs

logger = logging.getLogger(__name__)

CONFIDENCE_BAND = "confidence"  # description of the band averaged per polygon
SHAPES_DTYPES = {"uint8", "int16", "uint16", "int32", "float32"}  # rasterio.features.shapes


@dataclass(frozen=True)
class RasterInfo:
    """What a block task needs to know about one class-map raster (picklable)."""

    path: str
    shape: tuple[int, int]
    transform: tuple[float, ...]
    crs_wkt: str
    nodata: float | None
    is_float: bool
    pixel_size: float  # in CRS units
    area_crs: str  # WKT of the equal-area CRS areas and perimeters are measured in
    densify_px: float  # edges longer than this (pixels) are split before they are measured
    classes: ClassTable | None
    confidence: str | None = None  # probability raster on the same grid
    confidence_band: int = 1  # its band described "confidence" (else its last band)

    @property
    def source(self) -> str:
        """The raster's file name, written to the ``source`` column."""
        return Path(self.path).name

    @property
    def affine(self) -> Affine:
        """The pixel-to-CRS transform."""
        return Affine(*self.transform[:6])

    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the raster in its CRS."""
        rows, cols = self.shape
        a, b, c, d, e, f = self.transform[:6]
        xs = [c + col * a + row * b for row in (0, rows) for col in (0, cols)]
        ys = [f + col * d + row * e for row in (0, rows) for col in (0, cols)]
        return min(xs), min(ys), max(xs), max(ys)


def read_raster_info(
    path: str | Path, classes: ClassTable | None = None, confidence: str | Path | None = None
) -> RasterInfo:
    """Read the grid, CRS and class table of a class-map raster.

    The class table is ``classes`` when given, else the ``TERRASEG_CLASSES`` tag,
    else the colour table (ids named ``class_<id>``), else none.

    Args:
        path: The class map.
        classes: Its class table, when known from elsewhere.
        confidence: A probability raster on the same grid, for mean confidence.

    Returns:
        The raster's description.

    Raises:
        RasterReadError: The raster cannot be opened.
        InputError: The raster is not one band of class ids, holds floats and no
            class table is known, or the confidence raster is on another grid.
        CRSError: The raster has no CRS.
    """
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot open raster ({exc})", path=path) from None
    with src:
        check_class_map(src, path)
        table = classes or _tagged_classes(src) or _colortable_classes(src)
        is_float = np.dtype(src.dtypes[0]).kind == "f"
        if is_float and table is None:
            raise InputError(
                "float raster without a classes file; pass --classes FILE to name its ids",
                path=path,
            )
        if src.crs is None:
            raise CRSError("raster has no CRS; assign one (e.g. gdal_edit.py -a_srs)", path=path)
        band = 1 if confidence is None else _confidence_band(src, confidence)
        crs_wkt = src.crs.to_wkt()
        info = RasterInfo(
            path=str(path),
            shape=(src.height, src.width),
            transform=tuple(src.transform)[:6],
            crs_wkt=crs_wkt,
            nodata=src.nodata,
            is_float=is_float,
            pixel_size=math.sqrt(abs(src.transform.determinant)),
            area_crs=equal_area_crs(crs_wkt, tuple(src.bounds), str(path)),
            densify_px=math.inf,
            classes=table,
            confidence=None if confidence is None else str(confidence),
            confidence_band=band,
        )
    return replace(info, densify_px=DENSIFY_M / math.sqrt(_pixel_area_m2(info)))


def check_class_map(src: Any, path: str | Path) -> None:
    """Refuse a raster that is not a class map: one band of class ids (integers, or floats).

    Raises:
        InputError: The raster has several bands (an image, or probabilities), or
            complex values.
    """
    if src.count != 1:
        raise InputError(
            f"raster has {src.count} bands, but a class map is one band of class ids; "
            "vectorize the <name>_classes.tif that terraseg predict writes",
            path=path,
        )
    if src.dtypes[0].startswith("complex"):
        raise InputError(
            f"raster is {src.dtypes[0]}, but a class map holds class ids (integers)", path=path
        )


def unique_rasters(infos: Sequence[RasterInfo]) -> list[RasterInfo]:
    """``infos`` without repeats of a raster (the same resolved path), first ones kept.

    Raises:
        InputError: A raster is given twice with different confidence rasters.
    """
    seen: dict[Path, RasterInfo] = {}
    for info in infos:
        first = seen.setdefault(Path(info.path).resolve(), info)
        if first is info:
            continue
        if _resolved(first.confidence) != _resolved(info.confidence):
            raise InputError(
                f"given twice with different confidence rasters ({first.confidence}, "
                f"{info.confidence}); give each raster once",
                path=info.path,
            )
        logger.warning("%s is given more than once; it is vectorized once", info.path)
    return list(seen.values())


def _resolved(path: str | None) -> Path | None:
    return None if path is None else Path(path).resolve()


def _tagged_classes(src: Any) -> ClassTable | None:
    text = src.tags().get(CLASSES_TAG)
    if not text:
        return None
    try:
        return ClassTable.model_validate(json.loads(text))
    except ValueError:
        raise InputError(f"tag {CLASSES_TAG} is not a valid class table", path=src.name) from None


def _colortable_classes(src: Any) -> ClassTable | None:
    from terraseg.pipeline.classes import class_table

    try:
        cmap = src.colormap(1)
    except ValueError:
        return None
    entries = [(i, f"class_{i}", tuple(rgba[:3])) for i, rgba in cmap.items() if i < IGNORE_LABEL]
    # GDAL pads colour tables to 256 entries; keep ids with a non-black colour or id 0.
    entries = [e for e in entries if e[0] == 0 or e[2] != (0, 0, 0)]
    return class_table(entries) if entries else None


def _confidence_band(src: Any, confidence: str | Path) -> int:
    """The band of ``confidence`` to average: the one described ``confidence``, else the last.

    A probability raster of ``terraseg predict`` holds one ``p_<class>`` band per class,
    then the ``confidence`` band (the highest class probability).
    """
    try:
        with rasterio.open(confidence) as conf:
            same = conf.shape == src.shape and conf.transform.almost_equals(src.transform)
            descriptions = list(conf.descriptions)
    except rasterio.errors.RasterioIOError as exc:
        raise RasterReadError(f"cannot open confidence raster ({exc})", path=confidence) from None
    if not same:
        raise InputError(
            f"confidence raster is not on the grid of {Path(src.name).name}", path=confidence
        )
    named = [i for i, text in enumerate(descriptions, 1) if text == CONFIDENCE_BAND]
    return named[0] if named else len(descriptions)


def _pixel_area_m2(info: RasterInfo) -> float:
    """Area of the raster's centre pixel in m²."""
    row, col = info.shape[0] // 2, info.shape[1] // 2
    return float(area_m2(np.array([shapely.box(col, row, col + 1, row + 1)], object), info)[0])


def read_block(info: RasterInfo, window: Window) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """Read the block's class ids and the mask of pixels that belong to a class.

    Args:
        info: The raster.
        window: The block.

    Returns:
        The class ids (in a dtype that ``rasterio.features.shapes`` takes) and the
        mask of pixels that hold a class.

    Raises:
        InputError: A float raster holds values that are not whole numbers.
    """
    with rasterio.open(info.path) as src:
        raw = read_band(src, 1, window)
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


def read_confidence(info: RasterInfo, window: Window) -> np.ma.MaskedArray[Any, Any]:
    """Read the block's confidence (0-1) from the probability raster, masked where unknown.

    Args:
        info: The raster; ``info.confidence`` must be set.
        window: The block.

    Returns:
        The band ``info.confidence_band`` as float64 in 0-1 (uint8 rasters hold it
        scaled to 0-255).
    """
    assert info.confidence is not None
    band = info.confidence_band
    with rasterio.open(info.confidence) as src:
        conf = read_band(src, band, window, masked=True)
        scale = 255.0 if np.dtype(src.dtypes[band - 1]) == np.uint8 else 1.0
    result: np.ma.MaskedArray[Any, Any] = conf.astype(np.float64) / scale
    return result
