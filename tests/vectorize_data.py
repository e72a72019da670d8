"""Small class-map rasters with a real CRS, generated in code, for the vectorize tests."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pyogrio
import rasterio
from rasterio.transform import from_origin
from scipy import ndimage

CRS = "EPSG:32633"
TRANSFORM = from_origin(500000.0, 5000000.0, 0.5, 0.5)


def write_classmap(
    path: Path, data: np.ndarray, *, nodata: float | None = None, **tags: str
) -> Path:
    """Write ``data`` as a single-band GeoTIFF in EPSG:32633 with 0.5 m pixels."""
    with rasterio.open(
        path, "w", driver="GTiff", height=data.shape[0], width=data.shape[1], count=1,
        dtype=data.dtype, crs=CRS, transform=TRANSFORM, nodata=nodata,
    ) as dst:  # fmt: skip
        dst.write(data, 1)
        if tags:
            dst.update_tags(**tags)
    return path


def blobs(shape: tuple[int, int], classes: int, seed: int, scale: float = 3.0) -> np.ndarray:
    """Smooth random blobs: argmax of ``classes`` blurred noise fields (uint8)."""
    rng = np.random.default_rng(seed)
    fields = ndimage.gaussian_filter(rng.random((classes, *shape)), sigma=(0, scale, scale))
    return np.argmax(fields, axis=0).astype(np.uint8)


def rings(shape: tuple[int, int]) -> np.ndarray:
    """Concentric square rings (polygons with holes spanning many blocks) and a checkerboard."""
    rows, cols = np.indices(shape)
    centre = (shape[0] // 2, shape[1] // 2)
    ring = np.maximum(abs(rows - centre[0]), abs(cols - centre[1])) // 4 % 3
    checker = ((rows // 3 + cols // 3) % 2 + 3) * (rows < shape[0] // 4)
    return np.where(checker > 0, checker, ring).astype(np.uint8)


def gpkg_content(path: Path) -> dict[str, object]:
    """Every polygon layer's rows (attributes and WKB, in order) and the stored styles."""
    layers = {}
    for name, kind in pyogrio.list_layers(path):
        if kind is not None:
            table = pyogrio.read_arrow(path, layer=name)[1]
            layers[name] = table.to_pylist()
    with sqlite3.connect(path) as db:
        styles = db.execute("SELECT f_table_name, styleQML FROM layer_styles").fetchall()
    return {"layers": layers, "styles": styles}
