"""Features ready to write: CRS geometries, attribute columns, and their scratch files.

Scratch files are Arrow IPC files of plain columns (WKB geometry and numbers), so
reading one back never runs code; they are written under a temporary name and
renamed, so a file that exists is complete.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely

from terraseg.pipeline.errors import InputError
from terraseg.pipeline.files import named_os_errors
from terraseg.pipeline.vectorize.geometry import remove_collinear, to_crs
from terraseg.pipeline.vectorize.measure import area_perimeter
from terraseg.pipeline.vectorize.pieces import Pieces
from terraseg.pipeline.vectorize.rasters import RasterInfo


def finalize(pieces: Pieces, info: RasterInfo, *, simplified: bool) -> dict[str, Any]:
    """Features ready to write: CRS geometries as WKB and the attribute columns.

    Args:
        pieces: Polygons in pixel coordinates.
        info: Their raster.
        simplified: Whether they were simplified (their collinear vertices are removed).

    Returns:
        Columns ``wkb``, ``class_id``, ``area_m2`` and ``perimeter_m`` (true square
        metres and metres, see :mod:`terraseg.pipeline.vectorize.measure`), ``confidence``
        (NaN without a confidence raster) and ``anchor`` (a point inside each polygon,
        pixel coordinates, two columns).
    """
    pixel_geoms = remove_collinear(pieces.geoms) if simplified else pieces.geoms
    geoms = to_crs(pixel_geoms, info.affine)
    area, perimeter = area_perimeter(pixel_geoms, info)  # on the ellipsoid, any CRS
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


SCRATCH_SUFFIX = ".arrow"
SCRATCH_SCHEMA = pa.schema(
    [
        pa.field("wkb", pa.binary()),
        pa.field("class_id", pa.int32()),
        pa.field("area_m2", pa.float64()),
        pa.field("perimeter_m", pa.float64()),
        pa.field("confidence", pa.float64()),  # NaN without a confidence raster
        pa.field("anchor_x", pa.float64()),  # pixel coordinates
        pa.field("anchor_y", pa.float64()),
    ]
)


def save_features(path: str | Path, features: dict[str, Any]) -> None:
    """Write finalized features (see :func:`finalize`) to a scratch file.

    Args:
        path: The file, replaced if it exists.
        features: The columns of :func:`finalize`.
    """
    anchor = np.asarray(features["anchor"], np.float64).reshape(-1, 2)
    columns = [
        pa.array(list(features["wkb"]), pa.binary()),
        pa.array(np.asarray(features["class_id"], np.int32)),
        pa.array(np.asarray(features["area_m2"], np.float64)),
        pa.array(np.asarray(features["perimeter_m"], np.float64)),
        pa.array(np.asarray(features["confidence"], np.float64)),  # NaN stays NaN, not null
        pa.array(anchor[:, 0]),
        pa.array(anchor[:, 1]),
    ]
    table = pa.table(columns, schema=SCRATCH_SCHEMA)
    temporary = Path(f"{path}.tmp")
    try:
        with (
            named_os_errors(path),  # Arrow's errors of a full disk name no file
            pa.OSFile(str(temporary), "wb") as sink,
            pa.ipc.new_file(sink, SCRATCH_SCHEMA) as writer,
        ):
            writer.write_table(table)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)


def load_features(path: str | Path) -> dict[str, Any]:
    """Read features written by :func:`save_features`.

    Args:
        path: The scratch file.

    Returns:
        The columns of :func:`finalize`, as numpy arrays.

    Raises:
        InputError: The file is not an Arrow IPC file with the columns of a scratch file.
    """
    try:
        with pa.OSFile(str(path), "rb") as source:
            table = pa.ipc.open_file(source).read_all()
    except pa.ArrowInvalid:
        raise InputError("not a vectorize scratch file (not Arrow IPC)", path=path) from None
    if not table.schema.equals(SCRATCH_SCHEMA):
        raise InputError("not a vectorize scratch file (unexpected columns)", path=path)
    column = {name: table.column(name).to_numpy() for name in SCRATCH_SCHEMA.names[1:]}
    return {
        "wkb": np.asarray(table.column("wkb").to_pylist(), dtype=object),
        "class_id": column["class_id"],
        "area_m2": column["area_m2"],
        "perimeter_m": column["perimeter_m"],
        "confidence": column["confidence"],
        "anchor": np.column_stack([column["anchor_x"], column["anchor_y"]]),
    }
