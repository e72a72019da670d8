"""Writing the training store: opening it for a run, creating scenes, writing chunks.

The layout, and reading a finished store, are in :mod:`pipeline.store`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec

from pipeline.chunk_writer import write_region
from pipeline.classes import ClassTable
from pipeline.grid import Window
from pipeline.store import SCENES, STORE_FORMAT, open_root, scene_group, scene_names
from pipeline.tiling.config import TileConfig
from pipeline.tiling.plan import ScenePlan

logger = logging.getLogger(__name__)


def compressor(level: int = 1) -> Any:
    """The codec of every chunk: Zstandard at level 1.

    Imagery with sensor noise compresses little whatever the codec (1.5x at
    level 1, 1.7x with Blosc-Zstd level 3 and shuffle), but level 1 costs a
    quarter of the time, so writing keeps up with reading.
    """
    return ZstdCodec(level=level)


def start_store(
    path: Path, plans: list[ScenePlan], config: TileConfig, classes: ClassTable
) -> list[ScenePlan]:
    """Open the store, drop scenes that are not inputs, and return the plans still to do.

    The root is marked incomplete until :func:`pipeline.tiling.finish.finish_store` runs.
    """
    root = open_root(path)
    root.attrs.update(
        {
            "format": STORE_FORMAT,
            "complete": False,
            "tile_size": config.tile_size,
            **classes.to_dict(),
        }
    )
    wanted = {p.name for p in plans}
    for stale in set(scene_names(root)) - wanted:
        logger.info("removing scene %s: not among the inputs", stale)
        del root[f"{SCENES}/{stale}"]
    todo = []
    for plan in plans:
        if scene_is_current(root, plan.name, plan.source, config.identity()):
            logger.info("skipping %s: already tiled and unchanged", plan.image)
            continue
        create_scene(
            root,
            plan.name,
            bands=len(plan.bands),
            shape=plan.shape,
            dtype=plan.dtype,
            tile=config.tile_size,
            attrs=plan.attrs(config),
        )
        todo.append(plan)
    return todo


def scene_is_current(
    root: zarr.Group, name: str, source: dict[str, Any], settings: dict[str, Any]
) -> bool:
    """True when the scene is complete and was made from the same file with the same settings."""
    if name not in scene_names(root):
        return False
    attrs = scene_group(root, name).attrs.asdict()
    return (
        bool(attrs.get("complete"))
        and attrs.get("source") == source
        and attrs.get("settings") == settings
    )


def create_scene(
    root: zarr.Group,
    name: str,
    *,
    bands: int,
    shape: tuple[int, int],
    dtype: str,
    tile: int,
    attrs: dict[str, Any],
) -> None:
    """(Re)create a scene group with empty arrays, marked incomplete."""
    scenes = root.require_group(SCENES)
    if name in scenes:
        del scenes[name]
    group = scenes.create_group(name)
    group.attrs.update({**attrs, "complete": False})
    codec = compressor()
    arrays: dict[str, tuple[tuple[int, ...], tuple[int, ...], str, Any, tuple[str, ...]]] = {
        "image": ((bands, *shape), (bands, tile, tile), dtype, 0, ("band", "y", "x")),
        "label": (shape, (tile, tile), "uint8", 255, ("y", "x")),
        "valid": (shape, (tile, tile), "bool", False, ("y", "x")),
    }
    for array_name, (array_shape, chunks, array_dtype, fill, dims) in arrays.items():
        group.create_array(
            array_name,
            shape=array_shape,
            chunks=chunks,
            dtype=array_dtype,
            compressors=codec,
            fill_value=fill,
            dimension_names=dims,
        )


def write_chunk(
    store: str | Path,
    scene: str,
    window: Window,
    image: NDArray[Any],
    label: NDArray[np.uint8],
    valid: NDArray[np.bool_],
) -> None:
    """Write one chunk-aligned window of a scene.

    The chunks go straight to their files (see :mod:`pipeline.chunk_writer`).
    """
    corner = (window.row_off, window.col_off)
    write_region(store, f"{SCENES}/{scene}/image", (0, *corner), image)
    write_region(store, f"{SCENES}/{scene}/label", corner, label)
    write_region(store, f"{SCENES}/{scene}/valid", corner, valid)
