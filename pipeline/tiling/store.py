"""Writing the training store: opening it for a run, creating scenes, writing chunks.

The layout, and reading a finished store, are in :mod:`terraseg.pipeline.store`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numpy.typing import NDArray
from zarr.codecs import ZstdCodec

from terraseg.pipeline.chunk_writer import remove_partial_files, write_region
from terraseg.pipeline.classes import ClassTable
from terraseg.pipeline.errors import IncompleteOutputError, OutputExistsError
from terraseg.pipeline.files import remove_path
from terraseg.pipeline.grid import Window
from terraseg.pipeline.store import (
    SCENES,
    STORE_FORMAT,
    attributes,
    open_root,
    scene_group,
    scene_names,
    stored_class_index,
)
from terraseg.pipeline.tiling.config import TileConfig
from terraseg.pipeline.tiling.plan import ScenePlan

logger = logging.getLogger(__name__)


def compressor(level: int = 1) -> Any:
    """The codec of every chunk: Zstandard at level 1.

    Imagery with sensor noise compresses little whatever the codec (1.5x at
    level 1, 1.7x with Blosc-Zstd level 3 and shuffle), but level 1 costs a
    quarter of the time, so writing keeps up with reading.
    """
    return ZstdCodec(level=level)


@dataclass(frozen=True)
class StoreStart:
    """What a run found in the store: the scenes it redoes and those it keeps."""

    todo: list[ScenePlan]
    kept: list[str]


def start_store(
    path: Path,
    plans: list[ScenePlan],
    config: TileConfig,
    classes: ClassTable,
    *,
    run_id: str,
    overwrite: bool = False,
) -> StoreStart:
    """Open the store for a run and (re)create the scenes still to do, marked incomplete.

    Runs in the driver before any task, never as a task, so that no retried task
    can recreate a scene over chunks of its own run. Scenes already in the store
    that are not among the inputs are kept (with a warning); an input whose scene
    is complete and unchanged (same raster, labels, settings and class table) is
    skipped. The root stays marked incomplete until
    :func:`terraseg.pipeline.tiling.finish.finish_store` runs.

    Args:
        path: The store.
        plans: The scenes of this run.
        config: Tiling settings.
        classes: The class table.
        run_id: This run's id, written into every scene it creates.
        overwrite: Replace the whole store instead of adding to it.

    Returns:
        The scenes to tile and the names of the scenes kept from earlier runs.

    Raises:
        OutputExistsError: ``path`` holds something else than a store this run can
            add to (other tile size, classes or band count).
        IncompleteOutputError: A scene that is not among the inputs was left
            incomplete by an interrupted run.
    """
    if overwrite and path.exists():
        logger.warning("replacing the store %s (--overwrite)", path)
        remove_path(path)
    root = _open_root_for_run(path)
    kept = _kept_scenes(root, path, plans, config, classes)
    same_classes = holds_classes(attributes(root), classes)
    marks: dict[str, Any] = {
        "format": STORE_FORMAT,
        "complete": False,
        "tile_size": config.tile_size,
    }
    root.attrs.update({**marks, **class_attrs(classes)})
    todo = [plan for plan in plans if _needs_tiling(root, plan, config, same_classes)]
    for plan in todo:
        create_scene(
            root,
            plan.name,
            bands=len(plan.bands),
            shape=plan.shape,
            dtype=plan.dtype,
            tile=config.tile_size,
            attrs={**plan.attrs(config), "run": run_id},
        )
    return StoreStart(todo, kept)


def class_attrs(classes: ClassTable) -> dict[str, Any]:
    """The root attributes that describe the labels: classes, ignored values, id -> index."""
    return {
        "classes": classes.to_dict()["classes"],
        "ignore": list(classes.ignore),
        "class_index": classes.class_index(),
    }


def holds_classes(attrs: dict[str, Any], classes: ClassTable) -> bool:
    """True when a store's labels were made with this class table, ids mapped alike."""
    return (
        attrs.get("classes") == classes.to_dict()["classes"]
        and attrs.get("ignore", []) == list(classes.ignore)
        and stored_class_index(attrs) == classes.class_index()
    )


def _open_root_for_run(path: Path) -> zarr.Group:
    """The store's root; a new one where nothing is, never one written into other files."""
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        try:
            return zarr.open_group(str(path), mode="r+", zarr_format=3)
        except (FileNotFoundError, FileExistsError, zarr.errors.NodeNotFoundError):
            raise _not_a_store(path) from None
    return open_root(path)


def _not_a_store(path: Path) -> OutputExistsError:
    return OutputExistsError(
        "exists and is not a terraseg training store; choose another --out, "
        "or pass --overwrite to replace it",
        path=path,
    )


def _needs_tiling(
    root: zarr.Group, plan: ScenePlan, config: TileConfig, same_classes: bool
) -> bool:
    if same_classes and scene_is_current(root, plan, config):
        logger.info("skipping %s: already tiled and unchanged", plan.image)
        return False
    if plan.name in scene_names(root):
        before = scene_group(root, plan.name).attrs.get("source")
        was = before.get("path") if isinstance(before, dict) else None
        if was != plan.source["path"]:
            logger.warning("replacing scene %s (tiled from %s) with %s", plan.name, was, plan.image)
    return True


def _kept_scenes(
    root: zarr.Group, path: Path, plans: list[ScenePlan], config: TileConfig, classes: ClassTable
) -> list[str]:
    """Scenes of earlier runs that stay; refuse a store they do not fit with this run."""
    attrs = attributes(root)
    names = scene_names(root)
    if attrs.get("format") != STORE_FORMAT and (names or attrs or list(root.array_keys())):
        raise _not_a_store(path)
    kept = [name for name in names if name not in {p.name for p in plans}]
    for name in kept:
        _check_kept_scene(attributes(scene_group(root, name)), name, path)
    if kept:
        _check_fits(attrs, path, plans, config, classes)
        logger.warning(
            "adding to %s, which keeps %d scene(s) that are not among the inputs: %s "
            "(pass --overwrite to replace the store)",
            path,
            len(kept),
            ", ".join(kept),
        )
    return kept


def _check_kept_scene(attrs: dict[str, Any], name: str, path: Path) -> None:
    if not attrs.get("complete"):
        source = attrs.get("source", {}).get("path", "its raster")
        raise IncompleteOutputError(
            f"scene {name} was left incomplete by an interrupted run and is not among the "
            f"inputs; tile it again (add {source}), or pass --overwrite to replace the store",
            path=path,
        )


def _check_fits(
    attrs: dict[str, Any],
    path: Path,
    plans: list[ScenePlan],
    config: TileConfig,
    classes: ClassTable,
) -> None:
    """Refuse to add scenes of another tile size, class table or band count."""
    problems = []
    if attrs.get("tile_size") != config.tile_size:
        problems.append(f"tile size {attrs.get('tile_size')}, not {config.tile_size}")
    if not holds_classes(attrs, classes):
        problems.append("other classes")
    stored_bands = len(attrs.get("band_names", []))
    if plans and stored_bands and stored_bands != len(plans[0].bands):
        problems.append(f"{stored_bands} bands, not {len(plans[0].bands)}")
    if problems:
        raise OutputExistsError(
            f"holds scenes tiled with {', '.join(problems)}; choose another --out, "
            "or pass --overwrite to replace the store",
            path=path,
        )


def scene_is_current(root: zarr.Group, plan: ScenePlan, config: TileConfig) -> bool:
    """True when the scene is complete and was made from the same raster and labels.

    Same means the same files (path, size, modification time) and the same
    settings; the caller checks that the class table is the store's.
    """
    if plan.name not in scene_names(root):
        return False
    attrs = attributes(scene_group(root, plan.name))
    return (
        bool(attrs.get("complete"))
        and attrs.get("source") == plan.source
        and attrs.get("labels") == plan.label_source
        and attrs.get("settings") == config.identity()
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

    The chunks go straight to their files (see :mod:`terraseg.pipeline.chunk_writer`).
    """
    corner = (window.row_off, window.col_off)
    write_region(store, f"{SCENES}/{scene}/image", (0, *corner), image)
    write_region(store, f"{SCENES}/{scene}/label", corner, label)
    write_region(store, f"{SCENES}/{scene}/valid", corner, valid)


def remove_partial_chunks(store: Path, scenes: list[str]) -> None:
    """Delete chunk files that workers killed mid-write left in ``scenes`` (local stores)."""
    for scene in scenes:
        folder = store / SCENES / scene
        if folder.is_dir() and (removed := remove_partial_files(folder)):
            logger.info("removed %d partly written chunk files of scene %s", removed, scene)


def scene_run(store: str | Path, scene: str) -> str | None:
    """The id of the run that created a scene; ``None`` when there is no such scene."""
    meta = Path(store) / SCENES / scene / "zarr.json"
    if meta.is_file():  # a local store: one small read, no zarr round trip
        try:
            run = json.loads(meta.read_text()).get("attributes", {}).get("run")
        except (OSError, ValueError):
            return None
        return run if isinstance(run, str) else None
    try:
        run = zarr.open_group(str(store), path=f"{SCENES}/{scene}", mode="r").attrs.get("run")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        return None
    return run if isinstance(run, str) else None
