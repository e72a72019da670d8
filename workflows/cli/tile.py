"""``terraseg tile``: rasters and labels into a Zarr training store."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from terraseg.workflows.cli.options import (
    band_files_opts,
    config_opt,
    nodata_opt,
    note_output,
    overwrite_opt,
    resolve_config,
    scheduler_opt,
    show_progress,
    workers_opt,
)

if TYPE_CHECKING:
    from terraseg.pipeline.classes import ClassTable
    from terraseg.pipeline.tiling import ScenePlan, TileConfig

logger = logging.getLogger(__name__)
BAND_STACKS = ".band-stacks"  # beside the store: the VRTs of band-file scenes
VECTOR_SUFFIXES = {".gpkg", ".geojson", ".json", ".shp", ".fgb", ".parquet", ".gml", ".kml"}


@click.command()
@click.argument("images", nargs=-1)
@click.option(
    "--labels",
    "labels",
    default=None,
    metavar="PATH",
    help="Vector labels (GeoPackage, GeoJSON, Shapefile) or label rasters (file, folder or glob).",
)
@click.option(
    "--pairs",
    nargs=2,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    metavar="IMAGES_DIR MASKS_DIR",
    help="Already-cut image and mask tiles, matched by file name.",
)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(path_type=Path),
    help="The Zarr store to write.",
)
@click.option(
    "--classes",
    "classes_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Classes YAML (default: classes.yaml beside the labels, if any).",
)
@click.option(
    "--class-column", default=None, help="Column of the vector labels holding ids or names [class]."
)
@click.option(
    "--tile-size", type=click.IntRange(min=16), default=None, help="Tile and chunk size [512]."
)
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    help="Share of spatial blocks held out for validation [0.2].",
)
@click.option(
    "--split-block", type=click.IntRange(min=1), default=None, help="Split block side in tiles [4]."
)
@click.option(
    "--split-buffer/--no-split-buffer",
    default=None,
    help="Leave training tiles within one tile width of validation ground out [on].",
)
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed of the split [0].")
@click.option(
    "--all-touched/--no-all-touched", default=None, help="Burn all pixels polygons touch."
)
@click.option(
    "--labels-cover",
    type=click.Choice(["complete", "partial"]),
    default=None,
    help="complete: pixels outside polygons are background; partial: they are ignored.",
)
@nodata_opt("the images")
@click.option(
    "--export-index",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the tile footprints with their split as a GeoPackage.",
)
@band_files_opts
@overwrite_opt
@scheduler_opt
@workers_opt
@config_opt
@click.pass_context
def tile(
    ctx: click.Context,
    /,
    images: tuple[str, ...],
    labels: str | None,
    pairs: tuple[Path, Path] | None,
    out: Path,
    classes_path: Path | None,
    export_index: Path | None,
    overwrite: bool,
    scheduler: str | None,
    workers: int | None,
    config_path: Path | None,
    band_files: list[str] | None,
    recursive: bool,
    band_resampling: str,
    **options: object,
) -> None:
    """Tile IMAGES (files, folders or globs) and their labels into a Zarr store.

    With --band-files, IMAGES are scene folders holding one file per band (as
    Sentinel-2 and Landsat deliver them), stacked virtually in the given order into
    VRTs in .band-stacks/<store name> beside the store.

    Each scene is stored as image (bands, rows, cols), label and valid arrays
    chunked by tile, with its CRS and transform; the store holds the classes,
    per-band statistics and a tile index with a spatially blocked split.
    Re-running skips scenes that are complete and unchanged. Scenes already in
    the store that are not among IMAGES are kept (a warning names them);
    --overwrite replaces the whole store. One run at a time writes a store: a
    second refuses at once, naming the first.
    """
    from terraseg.pipeline.locks import output_lock
    from terraseg.pipeline.store import export_tile_index
    from terraseg.pipeline.tiling import TileConfig, tile_scenes
    from terraseg.workflows.api.inputs import scene_inputs
    from terraseg.workflows.cluster import dask_client
    from terraseg.workflows.executor import DaskExecutor

    _check_sources(images, labels, pairs, band_files)
    config = resolve_config(TileConfig, config_path, options)
    out = note_output(ctx, out.resolve())
    with output_lock(out) as lock:  # taken first: a second run on the store refuses at once
        stacks = out.parent / BAND_STACKS / out.name
        inputs = scene_inputs(images, band_files, recursive, band_resampling, stacks)
        plans, table = _plan(inputs, labels, pairs, classes_path, config)
        with (
            dask_client(scheduler, workers=workers, threads_per_worker=2) as client,
            progress_bar(show_progress(ctx)) as progress,
        ):
            summary = tile_scenes(out, plans, config, table, DaskExecutor(client),
                                  progress=progress, overwrite=overwrite, lock=lock)  # fmt: skip
        if export_index is not None:
            export_tile_index(out, export_index)
    logger.info("tiled %d scenes (%d skipped) into %s", summary["scenes"], summary["skipped"], out)
    click.echo(
        json.dumps({"store": str(out), **{k: v for k, v in summary.items() if k != "statistics"}})
    )


def _check_sources(
    images: tuple[str, ...],
    labels: str | None,
    pairs: tuple[Path, Path] | None,
    band_files: list[str] | None,
) -> None:
    """Refuse combinations of inputs that name no labels, no images or both label kinds."""
    if (labels is None) == (pairs is None):
        raise click.UsageError("give exactly one of --labels PATH and --pairs IMAGES_DIR MASKS_DIR")
    if labels is not None and not images:
        raise click.UsageError("give the rasters to tile (files, folders or globs)")
    if band_files is not None and pairs is not None:
        raise click.UsageError("--band-files takes scene folders, not --pairs")


def _plan(
    images: list[Path],
    labels: str | None,
    pairs: tuple[Path, Path] | None,
    classes_path: Path | None,
    config: TileConfig,
) -> tuple[list[ScenePlan], ClassTable]:
    """Read the classes and plan every scene of ``images`` (see ``prepare_tiling``)."""
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.tiling import prepare_tiling

    vector, label_rasters = _label_sources(labels)
    classes_path = classes_path or _classes_beside(labels or (pairs[1] if pairs else None))
    classes = read_classes(classes_path) if classes_path else None
    return prepare_tiling(
        images,
        vector_labels=vector,
        label_rasters=label_rasters,
        pairs=pairs,
        classes=classes,
        config=config,
    )


def _label_sources(labels: str | None) -> tuple[Path | None, list[Path] | None]:
    """``--labels`` as a vector file or as label rasters (a file, folder or glob)."""
    from terraseg.pipeline.rasters import expand_inputs

    if labels is None:
        return None, None
    if Path(labels).suffix.lower() in VECTOR_SUFFIXES:
        if not Path(labels).exists():
            raise click.BadParameter("file does not exist", param_hint="--labels")
        return Path(labels), None
    return None, expand_inputs([labels], what="label raster")


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress callback of :func:`terraseg.pipeline.tiling.tile_scenes` that draws a tqdm bar."""
    from tqdm import tqdm

    bar: tqdm[Any] | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc="tiling", unit="window", disable=not enabled, leave=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()


def _classes_beside(path: str | Path | None) -> Path | None:
    if path is None:
        return None
    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    candidate = folder / "classes.yaml"
    if candidate.exists():
        logger.info("using classes from %s", candidate)
        return candidate
    return None
