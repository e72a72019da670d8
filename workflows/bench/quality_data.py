"""Spatially split benchmark tasks for ``terraseg bench quality``: train ground and test ground.

A task is written as GeoTIFFs: the training part (image and label rasters) that is
tiled into a store, and the held-out part that the trained model and the per-pixel
baseline predict. The parts never share ground:

- ``sentinel2``: the dev set's Sentinel-2 stack (4 bands, 10 m) and its OSM land-use
  raster, split into the western half (training) and the eastern half (test).
- ``landsat``: the dev set's 105 Landsat scenes (3 bands, 30 m, 61 x 61 px) and their
  CFmask rasters, each split into its northern half (training) and southern half
  (test); the scenes share one footprint, so no test pixel's ground is trained on.
- any labelled raster with its label raster (``--image``/``--labels``): western half
  and eastern half, like ``sentinel2``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import ColorInterp
from rasterio.windows import Window, transform

from terraseg.pipeline.classes import ClassTable
from terraseg.pipeline.errors import InputError

SENTINEL2 = "sentinel2_brandenburg_osm"
LANDSAT = "landsat_fmask_timeseries"
S2_STACK = "s2_T33UUU_20170216_B02_B03_B04_B08_10m.tif"
S2_LABELS = "osm_landuse_labels_10m.tif"
S2_CLASSES = ["farm", "forest", "grass", "meadow", "residential", "scrub", "water", "wetland"]
LANDSAT_BANDS = ("b3", "b4", "b5")
LANDSAT_CLASSES = ["clear", "water", "shadow", "snow", "cloud"]  # CFmask 0..4; 255 is fill


@dataclass
class Task:
    """One benchmark task: training and test rasters, classes, and how to tile them."""

    name: str
    classes: ClassTable
    tile_size: int
    split_block: int
    train_images: list[Path] = field(default_factory=list)
    train_labels: list[Path] = field(default_factory=list)
    test_images: list[Path] = field(default_factory=list)
    test_labels: list[Path] = field(default_factory=list)
    nodata: float | None = None
    split: str = ""

    def describe(self) -> str:
        """One line: rasters, split and tiling."""
        return (
            f"{len(self.train_images)} training and {len(self.test_images)} test rasters "
            f"({self.split}); tiles of {self.tile_size} px"
        )


def write_part(
    bands: NDArray[Any],
    profile: dict[str, Any],
    window: Window,
    path: Path,
    descriptions: tuple[str | None, ...] = (),
) -> Path:
    """Write ``window`` of an array (bands, rows, cols) as a GeoTIFF with its own transform.

    Bands keep their descriptions; every band is a plain band (no alpha).
    """
    rows, cols = (
        (window.row_off, window.row_off + window.height),
        (
            window.col_off,
            window.col_off + window.width,
        ),
    )
    part = bands[:, rows[0] : rows[1], cols[0] : cols[1]]
    meta = {
        **profile,
        "driver": "GTiff",
        "count": part.shape[0],
        "height": part.shape[1],
        "width": part.shape[2],
        "transform": transform(window, profile["transform"]),
        "tiled": False,
        "photometric": "MINISBLACK",
    }
    meta.pop("blockxsize", None)
    meta.pop("blockysize", None)
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **meta) as dst:
        dst.write(part)
        dst.colorinterp = [ColorInterp.gray] * part.shape[0]
        for band, text in enumerate(descriptions, start=1):
            if text:
                dst.set_band_description(band, text)
    return path


def split_pair(
    image: Path, labels: Path, work: Path, name: str, *, north_south: bool = False
) -> tuple[Path, Path, Path, Path]:
    """Split an image and its label raster into halves: train (west/north), test (east/south).

    Raises:
        InputError: The label raster's grid is not the image's.
    """
    with rasterio.open(image) as src, rasterio.open(labels) as lab:
        if (src.width, src.height, src.transform) != (lab.width, lab.height, lab.transform):
            raise InputError("the labels' grid is not the image's; warp them first", path=labels)
        pixels, label, profile, label_profile = (
            src.read(),
            lab.read(1)[None],
            src.profile,
            lab.profile,
        )
        names = src.descriptions
    rows, cols = pixels.shape[1:]
    if north_south:
        half = (rows + 1) // 2
        first, second = Window(0, 0, cols, half), Window(0, half, cols, rows - half)
    else:
        half = cols // 2
        first, second = Window(0, 0, half, rows), Window(half, 0, cols - half, rows)
    return (
        write_part(pixels, profile, first, work / "train" / f"{name}.tif", names),
        write_part(label, label_profile, first, work / "train" / f"{name}_labels.tif"),
        write_part(pixels, profile, second, work / "test" / f"{name}.tif", names),
        write_part(label, label_profile, second, work / "test" / f"{name}_labels.tif"),
    )


def _class_table(names: list[str], first_id: int, ignore: list[int]) -> ClassTable:
    classes = [{"id": first_id + i, "name": n} for i, n in enumerate(names)]
    return ClassTable.model_validate({"classes": classes, "ignore": ignore})


def _add(task: Task, parts: tuple[Path, Path, Path, Path]) -> None:
    task.train_images.append(parts[0])
    task.train_labels.append(parts[1])
    task.test_images.append(parts[2])
    task.test_labels.append(parts[3])


def sentinel2_task(devset: Path, work: Path) -> Task:
    """The Sentinel-2 scene with OSM land use: west half for training, east half for test."""
    folder = devset / SENTINEL2
    task = Task("sentinel2", _class_table(S2_CLASSES, 1, [0]), 128, 1, split="west | east")
    _add(task, split_pair(folder / S2_STACK, folder / S2_LABELS, work / task.name, "s2"))
    return task


def landsat_task(devset: Path, work: Path) -> Task:
    """The Landsat scenes with CFmask: north half of each for training, south half for test."""
    scenes = sorted(p for p in (devset / LANDSAT).iterdir() if p.is_dir())
    if not scenes:
        raise InputError("no scene folders", path=devset / LANDSAT)
    task = Task("landsat", _class_table(LANDSAT_CLASSES, 0, []), 32, 1, nodata=-9999)
    task.split = "north | south of each scene"
    for scene in scenes:
        stack = stack_bands(scene, work / task.name / "stacks")
        labels = scene / f"{scene.name}_fmask.tif"
        _add(task, split_pair(stack, labels, work / task.name, scene.name, north_south=True))
    return task


def stack_bands(scene: Path, out: Path) -> Path:
    """One GeoTIFF of a scene's band files ``<scene>_b3.tif``, ``_b4``, ``_b5``."""
    files = [scene / f"{scene.name}_{band}.tif" for band in LANDSAT_BANDS]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise InputError("band file missing", path=missing[0])
    bands = []
    for path in files:
        with rasterio.open(path) as src:
            bands.append(src.read(1))
            profile = src.profile
    stacked = np.stack(bands)
    return write_part(
        stacked,
        profile,
        Window(0, 0, stacked.shape[2], stacked.shape[1]),
        out / f"{scene.name}.tif",
    )


def raster_task(image: Path, labels: Path, classes: ClassTable, work: Path, tile: int) -> Task:
    """Any image with a label raster: west half for training, east half for test."""
    with rasterio.open(image) as src:
        nodata = src.nodata
    task = Task("raster", classes, tile, 1, nodata=nodata, split="west | east")
    _add(task, split_pair(image, labels, work / task.name, image.stem))
    return task
