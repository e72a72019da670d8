"""Checks of planned scenes that refuse a tiling run before any pixel is read.

Pixel types the store and its statistics take, the memory a tiling task needs for
the tile size asked for, and whether each scene's label raster covers any of it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from terraseg.pipeline.errors import ConfigError, InputError
from terraseg.pipeline.files import human_size
from terraseg.pipeline.rasters import open_raster

if TYPE_CHECKING:
    from rasterio.crs import CRS

    from terraseg.pipeline.tiling.config import TileConfig
    from terraseg.pipeline.tiling.plan import ScenePlan

logger = logging.getLogger(__name__)

# Pixel types of images that tiling takes: integers with an exact histogram of every
# value per band (at most 65536 values), and floats (statistics from a sample).
IMAGE_DTYPES = ("uint8", "int8", "uint16", "int16", "float32", "float64")
TASK_MEMORY_SHARE = 0.5  # one task may use at most this share of the available memory


def check_image_dtypes(plans: Sequence[ScenePlan]) -> None:
    """Refuse images whose pixel type the store cannot summarize, and mixed types.

    Raises:
        InputError: A raster holds 32- or 64-bit integers, complex numbers or another
            type outside :data:`IMAGE_DTYPES`, or the rasters differ in type.
    """
    for plan in plans:
        with open_raster(plan.image) as src:
            dtypes = {src.dtypes[band - 1] for band in plan.bands}
        for dtype in sorted(dtypes - set(IMAGE_DTYPES)):
            raise InputError(f"{_unsupported(dtype)}; {_convert_hint(dtype)}", path=plan.image)
    first = plans[0] if plans else None
    for plan in plans[1:]:
        if first is not None and plan.dtype != first.dtype:
            raise InputError(
                f"raster is {plan.dtype} but {first.image.name} is {first.dtype}; one store "
                "holds one pixel type (convert with gdal_translate -ot)",
                path=plan.image,
            )


def _unsupported(dtype: str) -> str:
    return f"raster is {dtype}; tiling takes {', '.join(IMAGE_DTYPES[:-1])} or {IMAGE_DTYPES[-1]}"


def _convert_hint(dtype: str) -> str:
    if dtype.startswith("complex"):
        return "derive real bands (e.g. amplitude) first"
    return "convert it, e.g. gdal_translate -ot Float32 (or -ot UInt16 when the values fit)"


def check_tile_size(
    plans: Sequence[ScenePlan], config: TileConfig, available: int | None = None
) -> None:
    """Refuse a tile size larger than every raster, or one whose task cannot fit in memory.

    A tile size that was given (not the default) must not exceed the largest
    raster's longer side: rasters smaller than a tile are reflected up to it, and a
    tile larger than all of them holds mostly made-up pixels. (Image/mask pairs of
    small chips keep working with the default size.) A task reads a window of
    ``chunks_per_task`` x ``chunks_per_task`` tiles and writes it chunk by chunk;
    counted are the window's image, label and valid mask and one chunk of each,
    twice (the pixels read and the copy written).

    Args:
        plans: The planned scenes.
        config: The tiling settings.
        available: Bytes of memory available (default: what the machine has free now).

    Raises:
        ConfigError: A tile size given is larger than every raster, or one task would
            need more than half the available memory.
    """
    if not plans:
        return
    tile = config.tile_size
    largest = max(plans, key=lambda p: max(p.shape))
    if "tile_size" in config.model_fields_set and tile > max(largest.shape):
        rows, cols = largest.shape
        raise ConfigError(
            f"--tile-size {tile} is larger than every raster (the largest is {cols} x {rows} "
            f"pixels); choose --tile-size {max(rows, cols)} or less",
            path=largest.image,
        )
    needed = max(plans, key=lambda p: task_bytes(p, config))
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if task_bytes(needed, config) > TASK_MEMORY_SHARE * available:
        bands = f"{len(needed.bands)} bands of {needed.dtype}"
        raise ConfigError(
            f"--tile-size {tile} needs about {human_size(task_bytes(needed, config))} of memory "
            f"per task ({bands}, windows of {config.chunks_per_task} x "
            f"{config.chunks_per_task} tiles) but {human_size(available)} is available; "
            "choose a smaller --tile-size",
            path=needed.image,
        )


def task_bytes(plan: ScenePlan, config: TileConfig) -> int:
    """Bytes a tiling task of ``plan`` holds at most (see :func:`check_tile_size`)."""
    side = config.tile_size * config.chunks_per_task
    window = min(plan.shape[0], side) * min(plan.shape[1], side)
    per_pixel = len(plan.bands) * np.dtype(plan.dtype).itemsize + 2  # image, label, valid
    return 2 * per_pixel * (window + config.tile_size**2)


def check_label_coverage(plans: Sequence[ScenePlan]) -> None:
    """Refuse label rasters that cover none of their images; warn of each scene labels miss.

    Vector labels that overlap no raster at all are refused where they are read
    (:func:`terraseg.pipeline.tiling.labels.rasters_without_labels`); a scene they miss is
    warned of here.

    A label raster in another CRS is compared through its bounds in the image's CRS;
    one without a CRS (or an image without one) must share the image's grid, which
    :func:`terraseg.pipeline.tiling.plan.check_label_grids` checks.

    Raises:
        InputError: No label raster overlaps its image (every label would be ignored).
    """
    from terraseg.pipeline.tiling.labels import SceneVectorLabels

    missed = [p for p in plans if isinstance(p.labels, Path) and not _label_overlaps(p)]
    if missed and len(missed) == len([p for p in plans if isinstance(p.labels, Path)]):
        label = missed[0].labels
        names = ", ".join(p.image.name for p in missed)
        raise InputError(
            f"label raster covers none of its image ({names}): every label would be "
            "ignored; check the CRS and extent of both (open them together in QGIS)",
            path=label if isinstance(label, Path) else None,
        )
    for plan in plans:
        if isinstance(plan.labels, SceneVectorLabels) and len(plan.labels) == 0:
            logger.warning(
                "no label polygon overlaps %s: all its tiles are ignored in training", plan.image
            )
    for plan in missed:
        logger.warning(
            "labels cover nothing of %s (label raster %s): all its tiles are ignored in training",
            plan.image,
            plan.labels,
        )


def _label_overlaps(plan: ScenePlan) -> bool:
    assert isinstance(plan.labels, Path)
    return raster_overlaps(plan.labels, plan.crs, _plan_bounds(plan))


def raster_overlaps(
    path: Path, crs: str | CRS | None, bounds: tuple[float, float, float, float]
) -> bool:
    """Whether the raster ``path`` covers any of ``bounds`` (in ``crs``).

    A raster or bounds without a CRS count as overlapping: such rasters must share
    a grid, which is checked where they are paired.
    """
    from rasterio.crs import CRS
    from rasterio.warp import transform_bounds

    with open_raster(path) as src:
        own_crs, own = src.crs, tuple(src.bounds)
    if own_crs is None or crs is None:
        return True
    target = crs if isinstance(crs, CRS) else CRS.from_wkt(crs)
    if own_crs != target:
        own = transform_bounds(own_crs, target, *own, densify_pts=21)
    left, bottom, right, top = bounds
    return bool(own[0] < right and own[2] > left and own[1] < top and own[3] > bottom)


def _plan_bounds(plan: ScenePlan) -> tuple[float, float, float, float]:
    rows, cols = plan.shape
    xs, ys = [], []
    for row in (0, rows):
        for col in (0, cols):
            x, y = plan.affine @ (col, row)
            xs.append(x)
            ys.append(y)
    return min(xs), min(ys), max(xs), max(ys)


def check_plans(plans: Sequence[ScenePlan], config: TileConfig) -> None:
    """All checks of this module, in order: pixel types, tile size, label coverage.

    Raises:
        TerrasegError: The first problem found, naming the file.
    """
    check_image_dtypes(plans)
    check_tile_size(plans, config)
    check_label_coverage(plans)
