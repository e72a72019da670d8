"""``terraseg evaluate``: predicted class maps against ground truth."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from distributed import Client

    from terraseg.pipeline.baseline import PixelBaseline
    from terraseg.pipeline.classes import ClassTable
    from terraseg.pipeline.evaluation import BlockJob, BlockResult, Evaluation


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
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.errors import OutputExistsError
    from terraseg.pipeline.evaluation import (
        EvaluateConfig,
        check_compared,
        combine,
        plan_evaluation,
    )
    from terraseg.pipeline.files import check_writable, write_json
    from terraseg.pipeline.rasters import expand_inputs
    from terraseg.workflows.cluster import dask_client

    if baseline_store is not None and not images:
        raise click.UsageError(
            "--baseline needs --images, the rasters the predictions were made from"
        )
    config = resolve_config(EvaluateConfig, config_path, options)
    truth = truth.resolve()
    if out is not None:  # refused before the work when it exists or cannot be written
        out = note_output(ctx, out.resolve())
        if out.exists() and not overwrite:
            raise OutputExistsError("output exists; pass --overwrite to replace it", path=out)
        check_writable(out.parent)
    classes = read_classes(classes_path) if classes_path else None
    jobs, table = plan_evaluation(expand_inputs(predictions), truth, classes, config)
    baseline = _fit_baseline(baseline_store, table) if baseline_store is not None else None
    with dask_client(scheduler, workers=workers) as client:
        results, baseline_results = _score(client, jobs, baseline, images, show_progress(ctx))
    evaluation = combine(results, table)
    check_compared(evaluation, truth)
    click.echo(format_report(evaluation))
    report = evaluation.report()
    if baseline is not None:
        baseline_report = combine(baseline_results, table)
        click.echo(f"\nper-pixel baseline: {baseline.describe()}")
        click.echo(format_report(baseline_report))
        report["baseline"] = {"classifier": baseline.describe(), **baseline_report.report()}
    if out is not None:
        write_json(out, report)
    if run_id is not None:
        _log_to_run(evaluation, run_id, tracking_uri)


def _fit_baseline(store: Path, table: ClassTable) -> PixelBaseline:
    """The baseline of ``store``, whose classes must be the predictions'."""
    from terraseg.pipeline.baseline import fit_baseline
    from terraseg.pipeline.errors import InputError

    baseline = fit_baseline(store)
    if baseline.classes.ids != table.ids:
        raise InputError(
            f"the store's class ids ({baseline.classes.ids}) are not the predictions' "
            f"({table.ids})",
            path=store,
        )
    return baseline


def _score(
    client: Client,
    jobs: list[BlockJob],
    baseline: PixelBaseline | None,
    images: tuple[str, ...],
    progress: bool,
) -> tuple[list[BlockResult], list[BlockResult]]:
    """Block results of the predictions, and of the baseline on the same pixels (if any)."""
    from terraseg.pipeline.baseline import evaluate_baseline_block, plan_baseline
    from terraseg.pipeline.evaluation import evaluate_block
    from terraseg.pipeline.rasters import expand_inputs
    from terraseg.workflows.cluster import gather_with_progress

    def gather(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        futures: list[Any] = client.map(func, items, pure=False)
        done = gather_with_progress(
            client, futures, desc="evaluating", unit="block", enabled=progress
        )
        return list(done)

    if baseline is None:
        return gather(evaluate_block, jobs), []
    paired = plan_baseline(jobs, expand_inputs(images, what="image"), baseline)
    pairs = gather(evaluate_baseline_block, paired)
    return [p[0] for p in pairs], [p[1] for p in pairs]


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
