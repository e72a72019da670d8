"""``terraseg evaluate``: predicted class maps against ground truth."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from terraseg.workflows.cli.options import (
    Location,
    config_opt,
    nodata_opt,
    note_output,
    overwrite_opt,
    scheduler_opt,
    show_progress,
    tracking_uri_opt,
    workers_opt,
)

if TYPE_CHECKING:
    from terraseg.pipeline.evaluation import Evaluation


@click.command()
@click.argument("predictions", nargs=-1, required=True)
@click.option(
    "--truth",
    required=True,
    type=Location(path_type=Path),  # a glob too: found (or refused) when planning
    help="Label rasters (file, folder or glob) or a vector file with a class column.",
)
@click.option(
    "--classes",
    "classes_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Classes YAML (default: the classes stored in the predictions).",
)
@click.option(
    "--class-column", default=None, help="Column of vector truth with ids or names [class]."
)
@click.option(
    "--labels-cover",
    type=click.Choice(["complete", "partial"]),
    default=None,
    help="complete: outside truth polygons is background; partial: ignored.",
)
@nodata_opt("the truth rasters")
@click.option(
    "-o",
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the metrics and confusion matrix as JSON.",
)
@overwrite_opt
@click.option(
    "--baseline",
    "baseline_store",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Also score a per-pixel baseline fitted on this store's training tiles.",
)
@click.option(
    "--images",
    multiple=True,
    help="With --baseline: the rasters the predictions were made from (files, folders, "
    "globs; <name>_classes.tif pairs with <name>.*).",
)
@click.option("--run-id", default=None, help="Also log the metrics to this MLflow run.")
@tracking_uri_opt
@scheduler_opt
@workers_opt
@config_opt
@click.pass_context
def evaluate(
    ctx: click.Context,
    /,
    predictions: tuple[str, ...],
    truth: Path,
    classes_path: Path | None,
    out: Path | None,
    overwrite: bool,
    baseline_store: Path | None,
    images: tuple[str, ...],
    run_id: str | None,
    tracking_uri: str | None,
    scheduler: str | None,
    workers: int | None,
    config_path: Path | None,
    **options: object,
) -> None:
    """Compare class maps (PREDICTIONS: files, folders or globs) with ground truth.

    Prints per-class IoU, precision, recall and F1, boundary F-scores within 1 and
    2 pixels, their means, pixel accuracy and the confusion matrix. Nodata in the
    predictions and ignored truth pixels count for nothing. Works block by block, so
    rasters of any size fit in memory.
    """
    from terraseg.workflows.api.evaluate import evaluate as evaluate_maps

    if baseline_store is not None and not images:
        raise click.UsageError(
            "--baseline needs --images, the rasters the predictions were made from"
        )
    if out is not None:
        note_output(ctx, out.resolve())
    result = evaluate_maps(
        predictions,
        truth,
        classes=classes_path,
        out=out,
        overwrite=overwrite,
        baseline=baseline_store,
        images=images,
        run_id=run_id,
        tracking_uri=tracking_uri,
        scheduler=scheduler,
        workers=workers,
        config=config_path,
        progress=show_progress(ctx),
        **options,
    )
    click.echo(format_report(result.evaluation))
    if result.baseline is not None:
        click.echo(f"\nper-pixel baseline: {result.baseline_classifier}")
        click.echo(format_report(result.baseline))


def format_report(evaluation: Evaluation) -> str:
    """A table of per-class scores, the means and the confusion matrix."""
    report = evaluation.report()
    names = report["classes"]
    width = max(len(n) for n in [*names, "class"])

    def cell(value: float) -> str:
        return "   n/a" if value is None or math.isnan(value) else f"{value:6.3f}"

    keys = ["iou", "precision", "accuracy", "f1", "boundary_f1", "boundary_f2"]
    lines = [f"{'class':<{width}}    IoU  prec.  recall   F1  bndF1  bndF2"]
    for i, name in enumerate(names):
        lines.append(f"{name:<{width}} " + " ".join(cell(report[k][i]) for k in keys))
    lines.append(
        f"mean IoU {cell(report['mean_iou'])}   pixel accuracy {cell(report['pixel_accuracy'])}"
        f"   boundary F (1 px) {cell(report['mean_boundary_f1'])}"
        f"   (2 px) {cell(report['mean_boundary_f2'])}"
    )
    lines.append("confusion matrix (rows: truth, columns: prediction)")
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"{name:<{width}} " + " ".join(f"{v:>10d}" for v in row))
    return "\n".join(lines)
