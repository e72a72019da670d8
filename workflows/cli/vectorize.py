"""``terraseg vectorize``: class-map rasters to GeoPackage polygons."""

from __future__ import annotations

from pathlib import Path

import click

from terraseg.workflows.cli.options import (
    Location,
    config_opt,
    note_output,
    overwrite_opt,
    scheduler_opt,
    show_progress,
    workers_opt,
)

raster_path = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command(short_help="Polygonize class maps into one GeoPackage.")
@click.argument("rasters", nargs=-1, required=True)
@click.option(
    "-o", "--out", required=True, type=Location(dir_okay=False, path_type=Path),
    help="GeoPackage to write.",
)  # fmt: skip
@click.option("--classes", type=raster_path, help="Classes YAML (ids, names, colours).")
@click.option("--min-area", type=click.FloatRange(min=0), help="Drop polygons below M2 m².")
@click.option(
    "--simplify", type=click.FloatRange(min=0), metavar="TOLERANCE",
    help="Coverage simplification tolerance in CRS units (neighbours keep shared edges).",
)  # fmt: skip
@click.option(
    "--fill-holes", type=click.FloatRange(min=0), metavar="M2",
    help="Fill holes below M2 m² (what lies inside is absorbed).",
)  # fmt: skip
@click.option("--layer-per-class", is_flag=True, default=None, help="One layer per class.")
@click.option("--drop-background", is_flag=True, default=None, help="Leave out background.")
@click.option("--background-id", type=click.IntRange(0, 254), help="Id of the background class.")
@click.option(
    "--confidence", "confidences", multiple=True, metavar="PROB.tif",
    help="Probability raster on the same grid (one per input raster, in order; files, "
    "folders, globs or lists like RASTERS): mean of its 'confidence' band (else its last "
    "band) per polygon.",
)  # fmt: skip
@click.option("--block-size", type=click.IntRange(min=16), help="Block size in pixels.")
@config_opt
@scheduler_opt
@workers_opt
@overwrite_opt
@click.pass_context
def vectorize(
    ctx: click.Context,
    rasters: tuple[str, ...],
    out: Path,
    classes: Path | None,
    min_area: float | None,
    simplify: float | None,
    fill_holes: float | None,
    layer_per_class: bool | None,
    drop_background: bool | None,
    background_id: int | None,
    confidences: tuple[str, ...],
    block_size: int | None,
    config_path: Path | None,
    scheduler: str | None,
    workers: int | None,
    overwrite: bool,
) -> None:
    """Polygonize class-map RASTERS into one GeoPackage with class, area and source.

    RASTERS are files, folders (their rasters), glob patterns (quoted, expanded here)
    or .txt files listing paths, as for predict.

    Blocks run as Dask tasks; polygons cut by block lines are merged, so the result
    equals one pass over the whole raster. A raster given twice is vectorized once;
    a second run writing the same GeoPackage is refused while the first one runs.
    """
    from terraseg.workflows.api.vectorize import vectorize as vectorize_rasters

    summary = vectorize_rasters(
        rasters,
        note_output(ctx, out.resolve()),
        classes=classes,
        confidence=confidences,
        overwrite=overwrite,
        scheduler=scheduler,
        workers=workers,
        config=config_path,
        progress=show_progress(ctx),
        block_size=block_size,
        min_area=min_area,
        simplify=simplify,
        fill_holes=fill_holes,
        layer_per_class=layer_per_class,
        drop_background=drop_background,
        background_id=background_id,
    )
    counts = ", ".join(f"{name}: {n}" for name, n in summary.per_class.items()) or "none"
    click.echo(
        f"{summary.path}: {summary.polygons} polygons in {len(summary.layers)} layer(s) ({counts})"
    )
