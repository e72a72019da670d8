"""``terraseg synth``: write realistic synthetic aerial scenes and their labels."""

from __future__ import annotations

from pathlib import Path

import click

from terraseg.workflows.cli.options import config_opt, renamed_opt, show_progress


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--scenes", type=click.IntRange(min=1), default=None, help="Number of scenes [2].")
@click.option("--size", default=None, metavar="N|WxH", help="Scene size in pixels [2048].")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed [0].")
@click.option("--crs", default=None, help="Projected CRS of the imagery [EPSG:32633].")
@click.option("--resolution", type=float, default=None, help="Metres per pixel [0.5].")
@click.option(
    "--nodata-areas",
    "nodata",
    type=click.Choice(["none", "border", "holes", "both"]),
    default=None,
    help="Add nodata areas: a rotated-swath border, cloud holes, or both [none].",
)
@click.option(
    "--label-format",
    "labels",
    type=click.Choice(["vector", "raster"]),
    default=None,
    help="One GeoPackage of polygons, or a label raster per scene [vector].",
)
@renamed_opt("--nodata", "--nodata-areas", "the nodata areas to paint")
@renamed_opt("--labels", "--label-format", "how to write the labels")
@click.option("--labels-crs", default=None, help="Write label polygons in this CRS [imagery CRS].")
@click.option(
    "--dtype", type=click.Choice(["uint8", "uint16"]), default=None, help="Pixel type [uint8]."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None, help="Painting processes [cores]."
)
@config_opt
@click.pass_context
def synth(
    ctx: click.Context, /, out_dir: Path, config_path: Path | None, **options: object
) -> None:
    """Write synthetic aerial scenes (R, G, B, NIR GeoTIFFs) and their labels to OUT_DIR.

    Scenes show a road network, buildings with cast shadows, rivers, lakes,
    forests and fields. Labels are the polygons the imagery was painted from
    (labels.gpkg, column `class`), and classes.yaml names and colours them.
    The same seed always gives the same files.
    """
    from terraseg.workflows.api.synth import synth as synthesize

    outputs = synthesize(out_dir, config=config_path, progress=show_progress(ctx), **options)
    for path in [*outputs.scenes, *outputs.labels, outputs.classes]:
        click.echo(path)
