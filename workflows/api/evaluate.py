"""Evaluation from Python: predicted class maps against ground truth."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.evaluation import EvaluateConfig, Evaluation
from terraseg.workflows.api.settings import ConfigSource, stage_config

if TYPE_CHECKING:
    from distributed import Client

    from terraseg.pipeline.baseline import PixelBaseline
    from terraseg.pipeline.classes import ClassTable
    from terraseg.pipeline.evaluation import BlockJob, BlockResult


@dataclass
class EvaluationResult:
    """The predictions' scores, and the per-pixel baseline's on the same pixels."""

    evaluation: Evaluation
    baseline: Evaluation | None = None
    baseline_classifier: str | None = None

    def report(self) -> dict[str, Any]:
        """Everything as JSON-ready data (what ``terraseg evaluate -o`` writes)."""
        report = self.evaluation.report()
        if self.baseline is not None:
            report["baseline"] = {"classifier": self.baseline_classifier,
                                  **self.baseline.report()}  # fmt: skip
        return report


def evaluate(
    predictions: Sequence[str | Path],
    truth: str | Path,
    *,
    classes: str | Path | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    baseline: str | Path | None = None,
    images: Sequence[str | Path] = (),
    run_id: str | None = None,
    tracking_uri: str | None = None,
    scheduler: str | None = None,
    workers: int | None = None,
    config: ConfigSource = None,
    progress: bool = False,
    **settings: Any,
) -> EvaluationResult:
    """Compare class maps with ground truth, block by block.

    Per class: IoU, precision, recall, F1 and boundary F-scores within 1 and 2
    pixels; their means, pixel accuracy and the confusion matrix. Nodata in the
    predictions and ignored truth pixels count for nothing.

    Args:
        predictions: Class maps: files, folders, globs or ``.txt`` lists.
        truth: Label rasters (file, folder or glob) or a vector file.
        classes: Classes YAML (default: the classes stored in the predictions).
        out: Also write the report as JSON here.
        overwrite: Replace ``out`` if it exists.
        baseline: A store: also score a per-pixel classifier fitted on its
            training tiles, on the same pixels (needs ``images``).
        images: The rasters the predictions were made from.
        run_id: Also log the metrics to this MLflow run.
        tracking_uri: The tracking store of ``run_id``.
        scheduler: A Dask scheduler address (default: a LocalCluster).
        workers: Worker processes of the LocalCluster.
        config: An evaluate YAML file or :class:`EvaluateConfig`.
        progress: Draw a progress bar on stderr.
        **settings: Evaluate settings (``class_column``, ``labels_cover``, ``nodata``).

    Returns:
        The scores, and the baseline's when asked for.
    """
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.evaluation import check_compared, combine, plan_evaluation
    from terraseg.pipeline.files import write_json
    from terraseg.pipeline.rasters import expand_inputs
    from terraseg.pipeline.remote import as_location
    from terraseg.workflows.cluster import dask_client

    if baseline is not None and not images:
        raise ConfigError("a baseline needs the images the predictions were made from")
    evaluate_config = stage_config(EvaluateConfig, config, settings)
    truth = as_location(truth)
    report_path = _check_out(out, overwrite)
    table = read_classes(Path(classes)) if classes else None
    jobs, class_table = plan_evaluation(expand_inputs(predictions), truth, table, evaluate_config)
    pixel_baseline = _fit_baseline(Path(baseline), class_table) if baseline else None
    with dask_client(scheduler, workers=workers) as client:
        scored, baseline_scored = _score(client, jobs, pixel_baseline, images, progress)
    result = EvaluationResult(combine(scored, class_table))
    check_compared(result.evaluation, truth)
    if pixel_baseline is not None:
        result.baseline = combine(baseline_scored, class_table)
        result.baseline_classifier = pixel_baseline.describe()
    if report_path is not None:
        write_json(report_path, result.report())
    if run_id is not None:
        log_to_run(result.evaluation, run_id, tracking_uri)
    return result


def _check_out(out: str | Path | None, overwrite: bool) -> Path | None:
    """Refuse a report file that exists or cannot be written, before the work."""
    from terraseg.pipeline.errors import OutputExistsError
    from terraseg.pipeline.files import check_writable
    from terraseg.pipeline.remote import local_only

    if out is None:
        return None
    path = local_only(out, "the evaluation report").resolve()
    if path.exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", path=path)
    check_writable(path.parent)
    return path


def _fit_baseline(store: Path, table: ClassTable) -> PixelBaseline:
    """The baseline of ``store``, whose classes must be the predictions'."""
    from terraseg.pipeline.baseline import fit_baseline
    from terraseg.pipeline.errors import InputError

    fitted = fit_baseline(store)
    if fitted.classes.ids != table.ids:
        raise InputError(
            f"the store's class ids ({fitted.classes.ids}) are not the predictions' ({table.ids})",
            path=store,
        )
    return fitted


def _score(
    client: Client,
    jobs: list[BlockJob],
    baseline: PixelBaseline | None,
    images: Sequence[str | Path],
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


def log_to_run(evaluation: Evaluation, run_id: str, tracking_uri: str | None) -> None:
    """Log the headline metrics of ``evaluation`` to an MLflow run (``eval_*``)."""
    from terraseg.pipeline.registry import client

    report = evaluation.report()
    mlflow_client = client(tracking_uri)
    metrics = {"eval_mean_iou": report["mean_iou"], "eval_pixel_accuracy": report["pixel_accuracy"]}
    metrics |= {f"eval_mean_boundary_f{t}": report[f"mean_boundary_f{t}"] for t in (1, 2)}
    metrics |= {f"eval_iou_{n}": v for n, v in zip(report["classes"], report["iou"], strict=True)}
    for key, value in metrics.items():
        if value is not None and not math.isnan(value):
            mlflow_client.log_metric(run_id, key, value)
