"""Quick-look images: the imagery, the truth and the prediction side by side, as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw
from rasterio.enums import Resampling

from terraseg.pipeline.classes import IGNORE_LABEL, ClassTable
from terraseg.pipeline.rasters import open_raster

NODATA_COLOUR = (0, 0, 0)


def _read_small(
    path: Path, size: int, bands: list[int], resampling: Resampling
) -> tuple[NDArray[Any], Any]:
    """Read ``bands`` decimated so that the longer side is at most ``size`` pixels."""
    with open_raster(path) as src:
        scale = max(src.width, src.height) / size
        shape = (
            max(1, round(src.height / max(scale, 1))),
            max(1, round(src.width / max(scale, 1))),
        )
        return src.read(bands, out_shape=(len(bands), *shape), resampling=resampling), src


def _truth_small(truth: Path, image: Path, size: int) -> NDArray[Any]:
    """Truth on the decimated grid of ``image``: a label raster, or vector labels burned onto it."""
    if truth.suffix.lower() not in {".gpkg", ".geojson", ".json", ".shp", ".fgb"}:
        labels, _ = _read_small(truth, size, [1], Resampling.nearest)
        return np.asarray(labels[0])
    import geopandas as gpd
    from rasterio.features import rasterize

    with open_raster(image) as src:
        scale = max(src.width, src.height) / size
        shape = (
            max(1, round(src.height / max(scale, 1))),
            max(1, round(src.width / max(scale, 1))),
        )
        transform = src.transform * src.transform.scale(src.width / shape[1], src.height / shape[0])
        bounds, crs = src.bounds, src.crs
    frame = gpd.read_file(truth, bbox=tuple(bounds)) if crs is None else gpd.read_file(truth)
    frame = frame.to_crs(crs.to_wkt()) if crs is not None and frame.crs is not None else frame
    frame = frame.cx[bounds.left : bounds.right, bounds.bottom : bounds.top]
    shapes = list(zip(frame.geometry, frame["class"].astype(int), strict=True))
    if not shapes:
        return np.zeros(shape, np.uint8)
    burned: NDArray[np.uint8] = rasterize(
        shapes, out_shape=shape, transform=transform, fill=0, dtype="uint8"
    )
    return burned


def natural_colour(image: NDArray[Any]) -> NDArray[np.uint8]:
    """R, G, B stretched between the 2nd and 98th percentile of non-zero pixels."""
    rgb = image[:3].astype(np.float32)
    valid = (image != 0).any(axis=0)
    out = np.zeros((*rgb.shape[1:], 3), np.uint8)
    if valid.any():
        low, high = np.percentile(rgb[:, valid], [2, 98])
        out[:] = np.moveaxis(
            np.clip((rgb - low) / max(high - low, 1e-6) * 255, 0, 255), 0, -1
        ).astype(np.uint8)
    out[~valid] = NODATA_COLOUR
    return out


def colourize(classes: NDArray[Any], table: ClassTable) -> NDArray[np.uint8]:
    """Class ids to colours; ignore/nodata is black."""
    palette = np.zeros((256, 3), np.uint8)
    for c in table.classes:
        palette[c.id] = c.color
    palette[IGNORE_LABEL] = NODATA_COLOUR
    return palette[classes.astype(np.uint8)]


def quicklook(
    image: Path, truth: Path | None, prediction: Path, table: ClassTable, out: Path, size: int = 512
) -> Path:
    """Write a PNG with the imagery, the truth (when given) and the prediction side by side."""
    pixels, _ = _read_small(image, size, [1, 2, 3], Resampling.average)
    panels = [("image", natural_colour(pixels))]
    if truth is not None:
        panels.append(("truth", colourize(_truth_small(truth, image, size), table)))
    predicted, _ = _read_small(prediction, size, [1], Resampling.nearest)
    panels.append(("prediction", colourize(predicted[0], table)))
    height = max(p.shape[0] for _, p in panels)
    gap, caption = 8, 18
    canvas = Image.new(
        "RGB",
        (sum(p.shape[1] for _, p in panels) + gap * (len(panels) - 1), height + caption),
        "white",
    )
    draw = ImageDraw.Draw(canvas)
    x = 0
    for name, panel in panels:
        canvas.paste(Image.fromarray(panel), (x, caption))
        draw.text((x + 4, 3), name, fill="black")
        x += panel.shape[1] + gap
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return out
