"""Writing synthetic scenes: tiled GeoTIFFs painted block by block, and their labels."""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import CRSError as RasterioCRSError
from rasterio.transform import from_origin
from shapely import affinity

from terraseg.pipeline.classes import default_class_table, write_classes
from terraseg.pipeline.errors import CRSError
from terraseg.pipeline.files import atomic_output
from terraseg.pipeline.grid import Window, plan_blocks
from terraseg.pipeline.synth.config import TIFF_TILE, SynthConfig
from terraseg.pipeline.synth.layout import SceneSpec
from terraseg.pipeline.synth.paint import NODATA, ScenePainter

BAND_NAMES = ("red", "green", "blue", "nir")
BAND_COLORINTERP = (ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.undefined)
LABELS_LAYER = "labels"
SCENE_GAP_M = 1000.0  # ground distance between neighbouring scenes


@dataclass(frozen=True)
class SynthOutputs:
    """Paths written by :func:`synthesize`."""

    scenes: list[Path]
    labels: list[Path]  # one GeoPackage, or one label raster per scene
    classes: Path


def projected_crs(text: str) -> CRS:
    """Parse a CRS and insist that it is projected, in metres.

    Raises:
        CRSError: The CRS cannot be parsed or is geographic.
    """
    try:
        crs = CRS.from_user_input(text)
    except RasterioCRSError as exc:
        raise CRSError(f"cannot parse CRS {text!r}: {exc}") from None
    if not crs.is_projected:
        raise CRSError(
            f"CRS {text!r} is geographic; synthetic scenes need a projected CRS in metres"
        )
    return crs


def scene_origin(crs: CRS) -> tuple[float, float]:
    """A plausible upper-left corner: the centre of the CRS's area of use, rounded to 1 km."""
    import pyproj
    from pyproj import Transformer

    area = pyproj.CRS.from_user_input(crs.to_string()).area_of_use
    if area is None:
        return (0.0, 0.0)
    lon, lat = (area.west + area.east) / 2, (area.south + area.north) / 2
    x, y = Transformer.from_crs("EPSG:4326", crs.to_string(), always_xy=True).transform(lon, lat)
    return (round(x / 1000) * 1000.0, round(y / 1000) * 1000.0)


def scene_specs(config: SynthConfig) -> list[SceneSpec]:
    """The scenes ``config`` describes."""
    width, height = config.size
    return [
        SceneSpec(config.seed, index, width, height, config.resolution, config.nodata)
        for index in range(config.scenes)
    ]


def synthesize(
    config: SynthConfig, out_dir: str | Path, *, progress: Callable[[int], None] | None = None
) -> SynthOutputs:
    """Write ``config.scenes`` scenes, their labels and a classes file into ``out_dir``.

    Args:
        config: What to generate.
        out_dir: Output directory (created when missing).
        progress: Called with a number of pixels rows x cols whenever a block is written.

    Returns:
        The paths written.

    Raises:
        CRSError: ``config.crs`` or ``config.labels_crs`` is unusable.
    """
    out = Path(out_dir)
    crs = projected_crs(config.crs)
    labels_crs = CRS.from_user_input(config.labels_crs) if config.labels_crs else crs
    origin = scene_origin(crs)
    specs = scene_specs(config)
    workers = config.workers or os.cpu_count() or 1
    table = default_class_table()
    scenes: list[Path] = []
    labels: list[Path] = []
    with _executor(workers) as pool:
        for spec in specs:
            transform = from_origin(
                origin[0] + spec.index * (spec.width_m + SCENE_GAP_M),
                origin[1],
                spec.resolution,
                spec.resolution,
            )
            path = out / f"scene_{spec.index:03d}.tif"
            label_path = (
                out / f"scene_{spec.index:03d}_labels.tif" if config.labels == "raster" else None
            )
            write_scene(pool, spec, path, crs, transform, config, label_path, progress)
            scenes.append(path)
            if label_path is not None:
                labels.append(label_path)
        if config.labels == "vector":
            gpkg = out / "labels.gpkg"
            with atomic_output(gpkg) as tmp:
                for spec, scene in zip(specs, scenes, strict=True):
                    frame = label_frame(pool, spec, origin, crs, scene.name)
                    frame = frame.to_crs(labels_crs) if labels_crs != crs else frame
                    frame.to_file(
                        tmp,
                        layer=LABELS_LAYER,
                        driver="GPKG",
                        engine="pyogrio",
                        append=tmp.exists(),
                    )
            labels.append(gpkg)
    classes = out / "classes.yaml"
    with atomic_output(classes) as tmp:
        write_classes(table, tmp)
    return SynthOutputs(scenes, labels, classes)


def write_scene(
    pool: Executor | None,
    spec: SceneSpec,
    path: Path,
    crs: CRS,
    transform: Any,
    config: SynthConfig,
    label_path: Path | None,
    progress: Callable[[int], None] | None,
) -> None:
    """Paint one scene block by block into a tiled, compressed GeoTIFF (and label raster)."""
    profile = {
        "driver": "GTiff",
        "width": spec.width,
        "height": spec.height,
        "count": 4,
        "dtype": config.dtype,
        "crs": crs,
        "transform": transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": TIFF_TILE,
        "blockysize": TIFF_TILE,
        "compress": "deflate",
        "predictor": 2,
        "interleave": "pixel",
        "BIGTIFF": "IF_SAFER",
    }
    windows = plan_blocks((spec.height, spec.width), config.block_size)
    tasks = ((_paint_task, (spec, w, config.dtype)) for w in windows)
    with ExitStack() as stack:
        dst = stack.enter_context(
            rasterio.open(stack.enter_context(atomic_output(path)), "w", **profile)
        )
        dst.descriptions = BAND_NAMES
        dst.colorinterp = BAND_COLORINTERP  # the fourth band is NIR, not alpha
        dst.update_tags(TERRASEG_SYNTH=f"seed={spec.seed} scene={spec.index}")
        label_dst = None
        if label_path is not None:
            label_profile = {**profile, "count": 1, "dtype": "uint8", "nodata": 255, "predictor": 1}
            label_tmp = stack.enter_context(atomic_output(label_path))
            label_dst = stack.enter_context(rasterio.open(label_tmp, "w", **label_profile))
            label_dst.write_colormap(1, default_class_table().colormap())
            label_dst.descriptions = ("class",)
        for window, (image, classes) in zip(windows, _ordered(pool, tasks), strict=True):
            dst.write(image, window=window.to_rasterio())
            if label_dst is not None:
                label_dst.write(classes[None], window=window.to_rasterio())
            if progress:
                progress(window.height * window.width)


def label_frame(
    pool: Executor | None, spec: SceneSpec, origin: tuple[float, float], crs: CRS, scene_name: str
) -> gpd.GeoDataFrame:
    """All label polygons of a scene in ``crs`` coordinates, one row per polygon."""
    rows, cols = spec.cells
    tasks = ((_label_task, (spec, ci, cj)) for ci in range(rows) for cj in range(cols))
    x0 = origin[0] + spec.index * (spec.width_m + SCENE_GAP_M)
    to_crs = [1.0, 0.0, 0.0, -1.0, x0, origin[1]]
    geometries, classes = [], []
    for wkbs, ids in _ordered(pool, tasks):
        geometries += [affinity.affine_transform(g, to_crs) for g in shapely.from_wkb(wkbs)]
        classes += ids
    names = default_class_table()
    return gpd.GeoDataFrame(
        {
            "class": np.asarray(classes, dtype=np.int32),
            "class_name": [names.name_of(c) for c in classes],
            "scene": scene_name,
        },
        geometry=geometries,
        crs=crs.to_wkt(),
    )


# Worker side ----------------------------------------------------------------

_PAINTERS: dict[SceneSpec, ScenePainter] = {}


def _painter(spec: SceneSpec) -> ScenePainter:
    if spec not in _PAINTERS:
        _PAINTERS.clear()  # one scene at a time bounds the cell cache
        _PAINTERS[spec] = ScenePainter(spec)
    return _PAINTERS[spec]


def _paint_task(spec: SceneSpec, window: Window, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    block = _painter(spec).paint(window, dtype)
    return block.image, block.classes


def _label_task(spec: SceneSpec, ci: int, cj: int) -> tuple[list[bytes], list[int]]:
    content = _painter(spec).content(ci, cj)
    return [shapely.to_wkb(g) for g, _ in content.labels], [c for _, c in content.labels]


def _executor(workers: int) -> Any:
    if workers <= 1:
        return _Inline()
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"))


class _Inline:
    """Stands in for a pool when painting in this process."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        _PAINTERS.clear()


def _ordered(
    pool: Executor | None, tasks: Iterator[tuple[Callable[..., Any], tuple[Any, ...]]]
) -> Iterator[Any]:
    """Run tasks on ``pool`` (or inline), yielding results in order with bounded look-ahead."""
    if pool is None:
        for func, args in tasks:
            yield func(*args)
        return
    ahead = 2 * getattr(pool, "_max_workers", 2) + 1
    pending: deque[Future[Any]] = deque()
    for func, args in tasks:
        pending.append(pool.submit(func, *args))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def pixel_count(config: SynthConfig) -> int:
    """Pixels to paint for ``config`` (for progress bars)."""
    return config.scenes * math.prod(config.size)
