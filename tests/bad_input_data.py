"""Bad inputs for every stage, generated once: rasters, labels, stores and models gone wrong."""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile
from rasterio.shutil import copy

from tests.helpers import tiny_model_artifact, tiny_scenes


@dataclass
class BadInputs:
    """Paths of the generated inputs; ``root`` holds them all."""

    root: Path
    scene: Path  # 256 x 192, four uint8 bands, EPSG:32633, 2 m
    labels: Path  # vector labels of the scene (column ``class``)
    classes: Path
    label_raster: Path  # the scene's labels as a raster (uint8, nodata 255)
    store: Path  # the scene tiled at 64 px
    model: Path  # an untrained model for 4-band uint8 rasters, tile 64

    def path(self, name: str) -> Path:
        """A generated input by file name (see :func:`make_bad_inputs`)."""
        return self.root / name


def _profile(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as src:
        return dict(src.profile)


def write_like(source: Path, target: Path, change: Any = None, **profile: Any) -> Path:
    """Write ``source``'s pixels (through ``change``) with ``profile`` changes to ``target``."""
    with rasterio.open(source) as src:
        data = src.read()
        base = dict(src.profile)
        interpretation = src.colorinterp
    data = data if change is None else change(data)
    count, height, width = data.shape
    base.update(count=count, height=height, width=width, dtype=str(data.dtype), **profile)
    target.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(target, "w", **base) as dst:
        if count == len(interpretation) and count > 1:
            dst.colorinterp = interpretation  # a fourth band stays NIR, not alpha
        dst.write(data)
    return target


def shifted(transform: Affine, metres: float) -> Affine:
    """``transform`` moved ``metres`` east: the same grid on other ground."""
    return Affine(
        transform.a, transform.b, transform.c + metres, transform.d, transform.e, transform.f
    )


def _rasters(d: BadInputs) -> None:
    """Images and class maps of types, band counts, grids and CRSs that are refused."""
    scene, labels = d.scene, d.label_raster
    transform = _profile(scene)["transform"]
    for dtype in ("int64", "complex64", "uint16"):
        write_like(scene, d.path(f"{dtype}.tif"), lambda a, t=dtype: a.astype(t), nodata=None)
    write_like(scene, d.path("three_bands.tif"), lambda a: a[:3])
    write_like(scene, d.path("same/a/scene.tif"))
    write_like(scene, d.path("same/b/scene.tif"))
    write_like(scene, d.path("no_crs.tif"), crs=None)
    write_like(scene, d.path("far_scene.tif"), transform=shifted(transform, 1e5))
    write_like(labels, d.path("far_labels.tif"), transform=shifted(transform, 1e5))
    write_like(labels, d.path("maps/scene_classes.tif"))
    write_like(labels, d.path("complex_classes.tif"), lambda a: a.astype("complex64"), nodata=None)
    write_like(labels, d.path("float_classes.tif"), lambda a: a.astype("float32"))
    write_like(labels, d.path("no_crs_classes.tif"), crs=None)
    write_like(labels, d.path("utm34_classes.tif"), crs="EPSG:32634")
    write_like(labels, d.path("small_confidence.tif"), lambda a: a[:, :64, :64])
    write_like(labels, d.path("far_truth/scene_labels.tif"), transform=shifted(transform, 1e5))
    write_like(labels, d.path("ignored_truth/scene_labels.tif"), lambda a: np.full_like(a, 255))
    write_like(labels, d.path("truth/scene_labels.tif"))
    _truncated(d.path("truncated.tif"), bands=4)
    _truncated(d.path("truncated_classes.tif"), bands=1)
    _huge(scene, d.path("huge.tif"))


def _truncated(target: Path, bands: int) -> None:
    """A GeoTIFF cut in half: its header and first tiles survive, the rest is gone."""
    pixels = np.random.default_rng(0).integers(0, 5, (bands, 512, 512), dtype=np.uint8)
    profile = {
        "driver": "GTiff", "width": 512, "height": 512, "count": bands, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": Affine(2, 0, 500000, 0, -2, 4650000),
        "tiled": True, "blockxsize": 128, "blockysize": 128, "photometric": "MINISBLACK",
    }  # fmt: skip
    whole = target.with_name(f"whole-{target.name}")
    with MemoryFile() as memory:
        with memory.open(**profile) as dst:
            dst.colorinterp = [ColorInterp.gray] * bands
            dst.write(pixels)
        copy(memory.name, whole, driver="GTiff", tiled=True, blockxsize=128, blockysize=128,
             photometric="MINISBLACK")  # fmt: skip
    data = whole.read_bytes()  # copied: the header comes first, the tiles after it
    target.write_bytes(data[: len(data) // 2])


def _huge(scene: Path, target: Path) -> None:
    """A sparse 1 000 000 x 1 000 000 GeoTIFF over the scene: tiny on disk, vast in memory."""
    profile = _profile(scene)
    profile.update(
        width=1_000_000, height=1_000_000, tiled=True, blockxsize=4096, blockysize=4096,
        sparse_ok=True, BIGTIFF="YES", photometric="MINISBLACK",
    )  # fmt: skip
    with rasterio.open(target, "w", **profile) as dst:
        dst.colorinterp = [ColorInterp.gray] * profile["count"]  # four bands, none alpha


def _vectors(d: BadInputs) -> None:
    """Vector labels without a CRS, elsewhere, without the class column, with unknown names."""
    frame = gpd.read_file(d.labels)
    with warnings.catch_warnings():  # that the file has no CRS is the point
        warnings.filterwarnings("ignore", message="'crs' was not provided")
        frame.set_crs(None, allow_override=True).to_file(d.path("labels_no_crs.gpkg"))
    far = frame.copy()
    far.geometry = far.geometry.translate(xoff=1e5)
    far.to_file(d.path("labels_far.gpkg"))
    frame.rename(columns={"class": "kind"}).to_file(d.path("labels_no_class.gpkg"))
    names = frame.copy()
    names["class"] = "lava"
    names.to_file(d.path("labels_unknown_names.gpkg"))


def _classes(d: BadInputs) -> None:
    """Class tables whose names cannot name GeoPackage layers."""
    table = [
        {"id": 0, "name": "background", "color": [0, 0, 0]},
        {"id": 1, "name": "gpkg_building", "color": [200, 0, 0]},
        {"id": 2, "name": "road", "color": [90, 90, 90]},
        {"id": 3, "name": "water", "color": [0, 0, 200]},
        {"id": 4, "name": "vegetation", "color": [0, 200, 0]},
    ]
    d.path("reserved_classes.yaml").write_text(json.dumps({"classes": table}))
    d.path("gpkg_layer.yaml").write_text("layer: gpkg_polygons\n")


def _stores_and_models(d: BadInputs) -> None:
    """A store whose tiling did not finish, a run folder in use, a damaged model."""
    unfinished = d.path("unfinished.zarr")
    shutil.copytree(d.store, unfinished)
    meta = unfinished / "zarr.json"
    data = json.loads(meta.read_text())
    data["attributes"]["complete"] = False
    meta.write_text(json.dumps(data))
    (d.path("used_run") / "checkpoints").mkdir(parents=True)
    (d.path("used_run") / "config.yaml").write_text("epochs: 1\n")
    damaged = d.path("damaged_model")
    shutil.copytree(d.model, damaged)
    weights = damaged / "weights.pt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    d.path("a_file").write_text("not a store\n")


def make_bad_inputs(root: Path, tile: Any) -> BadInputs:
    """Generate every input of the bad-input table under ``root``.

    Args:
        root: An empty folder.
        tile: Tiles ``(image, labels, store)`` into a store at 64 px (through the CLI).
    """
    vector = tiny_scenes(root / "synth", scenes=1)
    raster = tiny_scenes(root / "synth-raster", scenes=1, labels="raster")
    scene = shutil.copy(vector.scenes[0], root / "scene.tif")
    inputs = BadInputs(
        root=root,
        scene=Path(scene),
        labels=vector.labels[0],
        classes=vector.classes,
        label_raster=raster.labels[0],
        store=root / "store.zarr",
        model=tiny_model_artifact(root / "model"),
    )
    tile(inputs.scene, inputs.labels, inputs.store)
    _rasters(inputs)
    _vectors(inputs)
    _classes(inputs)
    _stores_and_models(inputs)
    return inputs
