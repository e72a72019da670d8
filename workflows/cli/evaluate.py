"""``terraseg evaluate``: predicted class maps against ground truth."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import click

from terraseg.workflows.cli.options import (
    config_opt,
    nodata_opt,
    note_output,
    overwrite_opt,
    resolve_config,
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
    type=click.Path(path_type=Path),  # a glob too: found (or refused) when planning
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
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.errors import OutputExistsError
    from terraseg.pipeline.evaluation import (
        EvaluateConfig,
        check_compared,
        combine,
        evaluate_block,
        plan_evaluation,
    )
    from terraseg.pipeline.files import check_writable
    from terraseg.pipeline.rasters import expand_inputs
    from terraseg.workflows.cluster import dask_client, gather_with_progress

    config = resolve_config(EvaluateConfig, config_path, options)
    truth = truth.resolve()
    if out is not None:  # refused before the work when it exists or cannot be written
        out = note_output(ctx, out.resolve())
        if out.exists() and not overwrite:
            raise OutputExistsError("output exists; pass --overwrite to replace it", path=out)
        check_writable(out.parent)
    classes = read_classes(classes_path) if classes_path else None
    jobs, table = plan_evaluation(expand_inputs(predictions), truth, classes, config)
    with dask_client(scheduler, workers=workers) as client:
        futures = client.map(evaluate_block, jobs, pure=False)
        results = gather_with_progress(
            client, futures, desc="evaluating", unit="block", enabled=show_progress(ctx)
        )
    evaluation = combine(results, table)
    check_compared(evaluation, truth)
    click.echo(format_report(evaluation))
    if out is not None:
        evaluation.write_json(out)
    if run_id is not None:
        _log_to_run(evaluation, run_id, tracking_uri)


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


def _log_to_run(evaluation: Evaluation, run_id: str, tracking_uri: str | None) -> None:
    from terraseg.pipeline.registry import client

    report = evaluation.report()
    mlflow_client = client(tracking_uri)
    metrics = {"eval_mean_iou": report["mean_iou"], "eval_pixel_accuracy": report["pixel_accuracy"]}
    metrics |= {f"eval_mean_boundary_f{t}": report[f"mean_boundary_f{t}"] for t in (1, 2)}
    metrics |= {f"eval_iou_{n}": v for n, v in zip(report["classes"], report["iou"], strict=True)}
    for key, value in metrics.items():
        if value is not None and not math.isnan(value):
            mlflow_client.log_metric(run_id, key, value)
