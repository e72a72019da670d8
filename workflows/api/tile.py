"""Tiling from Python: rasters and labels into a Zarr training store."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg.pipeline.errors import ConfigError, InputError
from terraseg.pipeline.tiling import TileConfig
from terraseg.workflows.api.settings import ConfigSource, counting_bar, stage_config

if TYPE_CHECKING:
    from terraseg.pipeline.classes import ClassTable
    from terraseg.pipeline.tiling import ScenePlan

logger = logging.getLogger(__name__)
BAND_STACKS = ".band-stacks"  # beside the store: the VRTs of band-file scenes
VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".gml", ".kml"}


def tile(
    images: Sequence[str | Path],
    store: str | Path,
    *,
    labels: str | Path | None = None,
    pairs: tuple[str | Path, str | Path] | None = None,
    classes: str | Path | None = None,
    export_index: str | Path | None = None,
    overwrite: bool = False,
    band_files: list[str] | None = None,
    recursive: bool = False,
    band_resampling: str = "bilinear",
    scheduler: str | None = None,
    workers: int | None = None,
    config: ConfigSource = None,
    progress: bool = False,
    **settings: Any,
) -> dict[str, Any]:
    """Tile rasters and their labels into a Zarr store for training.

    Each scene is stored as image (bands, rows, cols), label and valid arrays
    chunked by tile, with its CRS and transform; the store holds the classes,
    per-band statistics and a tile index with a split by ground. Scenes already
    complete and unchanged are skipped; other scenes in the store are kept
    unless ``overwrite``. One run at a time writes a store.

    Args:
        images: Rasters, folders, globs or ``.txt`` lists (scene folders with
            ``band_files``); empty with ``pairs``.
        store: The Zarr store to write.
        labels: Vector labels (GeoPackage, GeoJSON, Shapefile...) or label rasters
            (a file, folder or glob).
        pairs: Already-cut image and mask tile folders, matched by file name.
        classes: Classes YAML (default: ``classes.yaml`` beside the labels).
        export_index: Also write the tile footprints and their split here (GeoPackage).
        overwrite: Replace the whole store.
        band_files: Band file names to stack per scene folder, in order.
        recursive: Look for band-file scenes in sub-folders too.
        band_resampling: Resampling of coarser band files onto the finest grid.
        scheduler: A Dask scheduler address (default: a LocalCluster).
        workers: Worker processes of the LocalCluster.
        config: A tile YAML file or :class:`TileConfig`.
        progress: Draw a progress bar on stderr.
        **settings: Tile settings as in ``configs/tile.yaml`` (``tile_size``,
            ``val_fraction``, ``labels_cover``, ``nodata``...).

    Returns:
        The summary: ``scenes``, ``skipped``, ``tiles``, ``train``/``val`` counts,
        per-band ``statistics``.
    """
    from terraseg.pipeline.locks import output_lock
    from terraseg.pipeline.remote import as_location, local_folder, local_only
    from terraseg.pipeline.store import export_tile_index
    from terraseg.pipeline.tiling import tile_scenes
    from terraseg.workflows.api.inputs import scene_inputs
    from terraseg.workflows.cluster import dask_client
    from terraseg.workflows.executor import DaskExecutor

    check_sources(images, labels, pairs, band_files)
    tile_config = stage_config(TileConfig, config, settings)
    out = as_location(store)  # s3://: written in a staging folder, uploaded when complete
    index = local_only(export_index, "the tile index") if export_index is not None else None
    pair_dirs = (Path(pairs[0]), Path(pairs[1])) if pairs else None
    with output_lock(out) as lock:  # taken first: a second run on the store refuses at once
        stacks = local_folder(out.parent) / BAND_STACKS / out.name
        inputs = scene_inputs(images, band_files, recursive, band_resampling, stacks)
        plans, table = _plan(inputs, labels, pair_dirs, classes, tile_config)
        with (
            dask_client(scheduler, workers=workers, threads_per_worker=2) as client,
            counting_bar(progress, "tiling", "window") as update,
        ):
            summary = tile_scenes(out, plans, tile_config, table, DaskExecutor(client),
                                  progress=update, overwrite=overwrite, lock=lock)  # fmt: skip
        if index is not None:
            export_tile_index(out, index)
    logger.info("tiled %d scenes (%d skipped) into %s", summary["scenes"], summary["skipped"], out)
    return {"store": str(out), **summary}


def check_sources(
    images: Sequence[str | Path],
    labels: str | Path | None,
    pairs: object | None,
    band_files: list[str] | None,
) -> None:
    """Refuse combinations of inputs that name no labels, no images or both label kinds.

    Raises:
        ConfigError: One line saying what to give instead.
    """
    if (labels is None) == (pairs is None):
        raise ConfigError("give exactly one of labels and pairs (IMAGES_DIR, MASKS_DIR)")
    if labels is not None and not images:
        raise ConfigError("give the rasters to tile (files, folders or globs)")
    if band_files is not None and pairs is not None:
        raise ConfigError("band files take scene folders, not pairs of tile folders")


def _plan(
    images: list[Path],
    labels: str | Path | None,
    pairs: tuple[Path, Path] | None,
    classes_path: str | Path | None,
    config: TileConfig,
) -> tuple[list[ScenePlan], ClassTable]:
    """Read the classes and plan every scene of ``images`` (see ``prepare_tiling``)."""
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.tiling import prepare_tiling

    vector, label_rasters = _label_sources(labels)
    classes_path = classes_path or _classes_beside(labels or (pairs[1] if pairs else None))
    table = read_classes(Path(classes_path)) if classes_path else None
    return prepare_tiling(
        images,
        vector_labels=vector,
        label_rasters=label_rasters,
        pairs=pairs,
        classes=table,
        config=config,
    )


def _label_sources(labels: str | Path | None) -> tuple[Path | None, list[Path] | None]:
    """``labels`` as a vector file or as label rasters (a file, folder or glob)."""
    from terraseg.pipeline.rasters import expand_inputs
    from terraseg.pipeline.remote import as_input, is_remote

    if labels is None:
        return None, None
    if is_remote(labels) and as_input(labels).suffix.lower() in VECTOR_SUFFIXES:
        return as_input(labels), None  # read by GDAL's /vsi...; a missing one fails there
    if Path(labels).suffix.lower() in VECTOR_SUFFIXES:
        if not Path(labels).exists():
            raise InputError("labels file does not exist", path=labels)
        return Path(labels), None
    return None, expand_inputs([labels], what="label raster")


def _classes_beside(path: str | Path | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    candidate = folder / "classes.yaml"
    if candidate.exists():
        logger.info("using classes from %s", candidate)
        return candidate
    return None
