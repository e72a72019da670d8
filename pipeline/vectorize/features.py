"""Features ready to write: CRS geometries, attribute columns, and their scratch files."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import shapely

from pipeline.vectorize.geometry import equal_area, remove_collinear, to_crs
from pipeline.vectorize.pieces import Pieces
from pipeline.vectorize.rasters import RasterInfo


def finalize(pieces: Pieces, info: RasterInfo, *, simplified: bool) -> dict[str, Any]:
    """Features ready to write: CRS geometries as WKB and the attribute columns.

    Args:
        pieces: Polygons in pixel coordinates.
        info: Their raster.
        simplified: Whether they were simplified (their collinear vertices are removed).

    Returns:
        Columns ``wkb``, ``class_id``, ``area_m2``, ``perimeter_m``, ``confidence``
        (NaN without a confidence raster) and ``anchor`` (a point inside each polygon,
        pixel coordinates, two columns).
    """
    pixel_geoms = remove_collinear(pieces.geoms) if simplified else pieces.geoms
    geoms = to_crs(pixel_geoms, info.affine)
    if info.geographic:
        dense = shapely.segmentize(geoms, info.pixel_size)
        measured = equal_area(dense, info.crs_wkt, info.bounds())
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


def save_features(path: str | Path, features: dict[str, Any]) -> None:
    """Write finalized features to a scratch file."""
    with open(path, "wb") as fh:
        pickle.dump(features, fh, protocol=pickle.HIGHEST_PROTOCOL)


def load_features(path: str | Path) -> dict[str, Any]:
    """Read features written by :func:`save_features`."""
    with open(path, "rb") as fh:
        features: dict[str, Any] = pickle.load(fh)
    return features
