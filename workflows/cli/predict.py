"""``terraseg predict``: tiled, blended inference over rasters into class-map COGs."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.workflows.cli.options import (
    Location,
    band_files_opts,
    choices_of,
    config_opt,
    nodata_opt,
    note_output,
    scheduler_opt,
    show_progress,
    tracking_uri_opt,
)

if TYPE_CHECKING:
    from terraseg.pipeline.prediction.driver import FileOutcome

logger = logging.getLogger(__name__)


def _bands(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return [int(b) for b in value.split(",")]
    except ValueError:
        raise click.BadParameter(
            "give 1-based band numbers separated by commas, e.g. 1,2,3,4"
        ) from None


@click.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option(
    "--model",
    "model",
    required=True,
    metavar="URI",
    help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, or a model folder.",
)
@click.option(
    "-o",
    "--out",
    "out_dir",
    required=True,
    type=Location(file_okay=False, path_type=Path),
    help="Output folder for <name>_classes.tif (and <name>_probabilities.tif).",
)
@click.option(
    "--overlap",
    type=click.FloatRange(0, 0.5, max_open=True),
    default=None,
    help="Tile overlap as a fraction of the tile [0.25].",
)
@click.option(
    "--window",
    type=choices_of(PredictConfig, "window"),
    default=None,
    help="Blending window [spline].",
)
@click.option(
    "--tta",
    type=choices_of(PredictConfig, "tta"),
    default=None,
    help="Test-time augmentation [none].",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Tiles per forward pass [1 on CPU, 8 on CUDA].",
)
@click.option(
    "--block-size", type=click.IntRange(min=64), default=None, help="Pixels per Dask block [1024]."
)
@click.option(
    "--probabilities/--no-probabilities", default=None, help="Also write class probabilities."
)
@click.option(
    "--bands",
    callback=_bands,
    default=None,
    metavar="1,2,3,4",
    help="Raster bands to use, in order.",
)
@nodata_opt("the rasters")
@click.option(
    "--device",
    type=choices_of(PredictConfig, "device"),
    default=None,
    help="Where to run [auto].",
)
@click.option(
    "--precision",
    type=choices_of(PredictConfig, "precision"),
    default=None,
    help="Inference precision [auto: bf16 on CUDA and on CPUs with native bf16, else fp32]; "
    "int8: the backbone in int8 on x86 CPUs, with the calibration stored at training.",
)
@click.option(
    "--devices",
    type=click.IntRange(min=1),
    default=None,
    help="Local workers: one per GPU on CUDA, processes on CPU [1].",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Torch threads per CPU inference stream [1; one stream per core].",
)
@click.option(
    "--overwrite", is_flag=True, default=None, help="Redo outputs that are already current."
)
@band_files_opts
@tracking_uri_opt
@scheduler_opt
@config_opt
@click.pass_context
def predict(
    ctx: click.Context,
    /,
    inputs: tuple[str, ...],
    model: str,
    out_dir: Path,
    devices: int | None,
    scheduler: str | None,
    tracking_uri: str | None,
    config_path: Path | None,
    band_files: list[str] | None,
    recursive: bool,
    band_resampling: str,
    **options: object,
) -> None:
    """Predict class maps for INPUTS: files, folders, globs or a .txt list of paths.

    With --band-files, INPUTS are scene folders holding one file per band (as
    Sentinel-2 and Landsat deliver them), stacked virtually in the given order.

    Each raster is cut into overlapping tiles on one grid, the softmax of every
    tile is blended with a window that fades towards its neighbours, and the
    result is written as a COG with the input's grid, CRS and nodata. Outputs
    that are complete and made by the same model from the same input are skipped.

    A model URI is resolved once: a model on this machine's disk is read where
    it is, one in a remote store is downloaded once into OUT/.models; local
    workers load that folder, workers of a --scheduler the exact version.
    """
    from terraseg.workflows.api.predict import predict_files

    outcomes = predict_files(
        inputs,
        model,
        note_output(ctx, out_dir.resolve()),
        band_files=band_files,
        recursive=recursive,
        band_resampling=band_resampling,
        devices=devices,
        scheduler=scheduler,
        tracking_uri=tracking_uri,
        config=config_path,
        progress=show_progress(ctx),
        **options,
    )
    _report(outcomes)


def _report(outcomes: Sequence[FileOutcome]) -> None:
    """One JSON line per input on stdout; errors on stderr; exit 1 when any failed.

    Each failed input's error is one line; with more than one input a last line
    counts the failures.
    """
    from terraseg.pipeline.errors import TerrasegError

    failed = [o for o in outcomes if o.error]
    for outcome in outcomes:
        record = {
            "input": str(outcome.path),
            "outputs": [str(p) for p in outcome.outputs],
            "skipped": outcome.skipped,
            "error": outcome.error,
        }
        click.echo(json.dumps(record))
    if failed and len(outcomes) == 1:
        raise TerrasegError(str(failed[0].error))  # the one input's error is the one line
    for outcome in failed:
        click.echo(f"Error: {outcome.error}", err=True)
    if failed:
        raise TerrasegError(
            f"{len(failed)} of {len(outcomes)} inputs failed; the others are written"
        )
