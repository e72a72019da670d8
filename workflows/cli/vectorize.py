"""``terraseg vectorize``: class-map rasters to GeoPackage polygons."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from terraseg.workflows.cli.options import (
    config_opt,
    note_output,
    overwrite_opt,
    resolve_config,
    scheduler_opt,
    show_progress,
    workers_opt,
)

if TYPE_CHECKING:
    from terraseg.pipeline.vectorize.rasters import RasterInfo

raster_path = click.Path(exists=True, dir_okay=False, path_type=Path)


class BlockBars:
    """One progress bar per raster, fed by the driver's block progress calls."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, info: RasterInfo, done: int, total: int) -> None:
        """Start a bar at a raster's first call, advance it, close it at its last block."""
        from tqdm import tqdm

        if done == 0 or self.bar is None:
            self.close()
            label = f"vectorize {info.source}"
            self.bar = tqdm(total=total, desc=label, unit="block", disable=not self.enabled)
        self.bar.update(done - self.bar.n)
        if done == total:
            self.close()

    def close(self) -> None:
        """Close the open bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> BlockBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raster_pairs(
    rasters: tuple[str, ...], confidences: tuple[str, ...]
) -> list[tuple[Path, Path | None]]:
    """Class rasters with their probability rasters, from files, folders, globs or lists.

    Each argument is expanded on its own (folders and globs in name order), so the
    n-th probability raster goes with the n-th class raster.

    Returns:
        ``(class raster, probability raster or None)`` pairs, absolute paths:
        Dask workers do not share this process's working directory.

    Raises:
        click.UsageError: ``--confidence`` names another number of rasters.
        InputError: An argument matches no file.
    """
    from terraseg.pipeline.rasters import expand_inputs

    paths = [p for item in rasters for p in expand_inputs([item], what="class raster")]
    probs = [p for item in confidences for p in expand_inputs([item], what="probability raster")]
    if not probs:
        return [(path, None) for path in paths]
    if len(probs) != len(paths):
        raise click.UsageError(
            f"--confidence names {len(probs)} rasters for {len(paths)} class rasters; "
            "give one per raster, in the same order"
        )
    return list(zip(paths, probs, strict=True))


@click.command(short_help="Polygonize class maps into one GeoPackage.")
@click.argument("rasters", nargs=-1, required=True)
@click.option(
    "-o", "--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
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
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.vectorize.config import VectorizeConfig
    from terraseg.pipeline.vectorize.driver import check_output, vectorize_rasters
    from terraseg.pipeline.vectorize.layers import check_class_layers
    from terraseg.pipeline.vectorize.rasters import read_raster_info
    from terraseg.workflows.cluster import dask_client
    from terraseg.workflows.executor import DaskExecutor

    pairs = raster_pairs(rasters, confidences)
    overrides = {
        "block_size": block_size, "min_area": min_area, "simplify": simplify,
        "fill_holes": fill_holes, "layer_per_class": layer_per_class,
        "drop_background": drop_background, "background_id": background_id,
    }  # fmt: skip
    out = note_output(ctx, out.resolve())
    check_output(out, overwrite=overwrite)  # before a cluster starts
    config = resolve_config(VectorizeConfig, config_path, overrides)
    table = read_classes(classes) if classes else None
    infos = [read_raster_info(raster, table, prob) for raster, prob in pairs]
    check_class_layers(infos, config, classes)  # before a cluster starts
    with dask_client(scheduler, workers=workers) as client, BlockBars(show_progress(ctx)) as bars:
        summary = vectorize_rasters(
            infos, out, config, DaskExecutor(client), overwrite=overwrite, progress=bars
        )
    counts = ", ".join(f"{name}: {n}" for name, n in summary.per_class.items()) or "none"
    click.echo(
        f"{summary.path}: {summary.polygons} polygons in {len(summary.layers)} layer(s) ({counts})"
    )
