"""``terraseg tile``: rasters and labels into a Zarr training store."""

from __future__ import annotations

import json
from pathlib import Path

import click

from terraseg.workflows.cli.options import (
    Location,
    band_files_opts,
    config_opt,
    nodata_opt,
    note_output,
    overwrite_opt,
    scheduler_opt,
    show_progress,
    workers_opt,
)


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
    type=Location(path_type=Path),
    help="The Zarr store to write (a folder, or s3://BUCKET/PREFIX/NAME.zarr).",
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
    from terraseg.workflows.api.tile import tile as tile_stores

    _check_sources(images, labels, pairs, band_files)
    summary = tile_stores(
        images,
        note_output(ctx, out.resolve()),
        labels=labels,
        pairs=pairs,
        classes=classes_path,
        export_index=export_index,
        overwrite=overwrite,
        band_files=band_files,
        recursive=recursive,
        band_resampling=band_resampling,
        scheduler=scheduler,
        workers=workers,
        config=config_path,
        progress=show_progress(ctx),
        **options,
    )
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "statistics"}))


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
