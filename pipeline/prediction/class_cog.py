"""Class-map COGs from the scratch store, with mode overviews computed on the way.

The class map is read from the scratch store in strips and written uncompressed
to a raw file; each strip is halved into every overview level as it passes
(:mod:`terraseg.pipeline.prediction.overviews`), each level into a raw file of its own.
A VRT ties the files together with the georeferencing, nodata, colour table,
band description and tags, and declares the levels as its overviews, so GDAL's
COG driver only encodes: it neither computes overviews nor stages them in a
temporary file. Memory stays at a few strips whatever the raster's size; the
raw files are read and written with plain file I/O, not mapped, so their pages
never count towards the process's resident memory.
"""

from __future__ import annotations

import math
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil

from terraseg.pipeline.errors import DiskSpaceError
from terraseg.pipeline.files import atomic_output, human_size, partial_path, remove_path
from terraseg.pipeline.prediction.overviews import ByteArray, halve_mode, overview_factors

COG_BLOCK = 512  # pixels per side of a COG tile; overviews stop once a level fits in one
# raw bands are what the VRTs are made of, whatever the environment says of them
RAW_VRT_SETTINGS = {
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "YES",
    "GDAL_VRT_RAWRASTERBAND_ALLOWED_SOURCE": "SIBLING_OR_CHILD_OF_VRT_PATH",
}
STRIP_ROWS = 512  # full-resolution rows read at a time (rounded to the coarsest factor)


def write_class_cog(
    path: Path,
    read_rows: Callable[[int, int], ByteArray],
    profile: dict[str, Any],
    *,
    classes: int,
    nodata: int,
    colormap: dict[int, tuple[int, int, int, int]],
    tags: dict[str, str],
    description: str,
    options: dict[str, str | int],
) -> None:
    """Write a uint8 class map as a COG with mode overviews, under ``path`` when complete.

    Args:
        path: The final COG.
        read_rows: Rows ``[start, stop)`` of the class map, as a (rows, width) array.
        profile: ``height``, ``width``, ``crs`` and ``transform`` of the map.
        classes: One more than the largest class id in the map.
        nodata: The value of pixels with no class.
        colormap: RGBA colour per class id.
        tags: Dataset tags.
        description: The band's description.
        options: Creation options of GDAL's COG driver.
    """
    height, width = profile["height"], profile["width"]
    factors = overview_factors(height, width, COG_BLOCK)
    staging = partial_path(path.with_name(path.stem + "_levels"))
    remove_path(staging)
    staging.mkdir(parents=True)
    try:
        staged = sum(math.ceil(height / f) * math.ceil(width / f) for f in [1, *factors])
        _check_free_space(path.parent, staged)
        levels = _stage_levels(staging, read_rows, height, factors, nodata, classes)
        dataset = _raw_dataset(levels[0], (height, width))
        band = dataset[0]
        _georeference(dataset, profile)
        _describe_band(band, nodata, colormap, description)
        for factor, level in zip(factors, levels[1:], strict=True):
            shape = (math.ceil(height / factor), math.ceil(width / factor))
            _write_vrt(level.with_suffix(".vrt"), _raw_dataset(level, shape))
            overview = ET.SubElement(band, "Overview")
            source = ET.SubElement(overview, "SourceFilename", relativeToVRT="1")
            source.text = level.with_suffix(".vrt").name
            ET.SubElement(overview, "SourceBand").text = "1"
        metadata = ET.SubElement(dataset, "Metadata")
        for key, value in tags.items():
            ET.SubElement(metadata, "MDI", key=key).text = value
        _write_vrt(staging / "classes.vrt", dataset)
        with atomic_output(path) as tmp, rasterio.Env(**RAW_VRT_SETTINGS):
            rasterio.shutil.copy(
                staging / "classes.vrt",
                tmp,
                driver="COG",
                overviews="force_use_existing",
                **options,
            )
    finally:
        remove_path(staging)


def _stage_levels(
    staging: Path,
    read_rows: Callable[[int, int], ByteArray],
    height: int,
    factors: list[int],
    nodata: int,
    classes: int,
) -> list[Path]:
    """Raw files of the map and of each overview level, halving every strip as it passes.

    A strip's rows are a multiple of the coarsest factor, so only the last strip
    of each level has an odd number of rows.
    """
    coarsest = 2 ** len(factors)
    strip = coarsest * math.ceil(STRIP_ROWS / coarsest)
    levels = [staging / f"level_{f}.raw" for f in [1, *factors]]
    files = [level.open("wb") for level in levels]
    try:
        for start in range(0, height, strip):
            pixels = np.ascontiguousarray(read_rows(start, min(start + strip, height)))
            files[0].write(pixels.data)  # not tofile: a full disk is an OSError with errno
            for file in files[1:]:
                pixels = np.ascontiguousarray(halve_mode(pixels, nodata, classes))
                file.write(pixels.data)
    finally:
        for file in files:
            file.close()
    return levels


def _check_free_space(folder: Path, staged: int) -> None:
    """Refuse before writing when the staging files could not fit beside the output.

    Raises:
        DiskSpaceError: ``folder`` has less free space than the staged bytes
            plus their compressed copy (counted as half as large again).
    """
    needed = staged + staged // 2
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(
            f"{human_size(needed)} needed to stage and write the class map, "
            f"{human_size(free)} free; free space or predict into another --out folder",
            path=folder,
        )


def _raw_dataset(raw: Path, shape: tuple[int, int]) -> ET.Element:
    """A one-band VRT over a raw file of uint8 rows in the same folder."""
    dataset = ET.Element("VRTDataset", rasterXSize=str(shape[1]), rasterYSize=str(shape[0]))
    band = ET.SubElement(
        dataset, "VRTRasterBand", dataType="Byte", band="1", subClass="VRTRawRasterBand"
    )
    ET.SubElement(band, "SourceFilename", relativeToVRT="1").text = raw.name
    for name, value in (("ImageOffset", 0), ("PixelOffset", 1), ("LineOffset", shape[1])):
        ET.SubElement(band, name).text = str(value)
    return dataset


def _georeference(dataset: ET.Element, profile: dict[str, Any]) -> None:
    """The CRS (if any) and the geotransform of ``profile``."""
    transform = ET.Element("GeoTransform")
    transform.text = ", ".join(repr(float(v)) for v in profile["transform"].to_gdal())
    dataset.insert(0, transform)
    if profile.get("crs") is not None:
        srs = ET.Element("SRS", dataAxisToSRSAxisMapping="1,2")
        srs.text = profile["crs"].to_wkt()
        dataset.insert(0, srs)


def _describe_band(
    band: ET.Element,
    nodata: int,
    colormap: dict[int, tuple[int, int, int, int]],
    description: str,
) -> None:
    """Description, nodata and a palette of every id up to the largest in ``colormap``."""
    ET.SubElement(band, "Description").text = description
    ET.SubElement(band, "NoDataValue").text = str(nodata)
    ET.SubElement(band, "ColorInterp").text = "Palette"
    table = ET.SubElement(band, "ColorTable")
    for value in range(max(colormap, default=0) + 1):
        rgba = colormap.get(value, (0, 0, 0, 255))
        ET.SubElement(table, "Entry", {f"c{i + 1}": str(c) for i, c in enumerate(rgba)})


def _write_vrt(path: Path, dataset: ET.Element) -> None:
    ET.ElementTree(dataset).write(path, encoding="utf-8", xml_declaration=False)
