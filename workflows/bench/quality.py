"""``terraseg bench quality``: terraseg against a per-pixel baseline on spatially split real data.

For each task (see :mod:`terraseg.workflows.bench.quality_data`) the training ground
is tiled into a store, terraseg trains on it (its own train/validation split picks
the best epoch), and the per-pixel baseline (:mod:`terraseg.pipeline.baseline`) is
fitted on the same store's training pixels. Both then predict the held-out ground,
and both are scored on the same pixels: mean IoU, per-class IoU and boundary F
within 1 and 2 pixels, with their wall times.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Any, get_args

import click

from terraseg.pipeline.baseline import BaselineKind
from terraseg.workflows.bench.quality_data import Task

TASKS = ("sentinel2", "landsat")
MODEL_KEYS_LEFT_OUT = ("in_channels", "num_classes", "pretrained_weights", "strict_weights")


FOLDER = click.Path(exists=True, file_okay=False, path_type=Path)
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command("quality")
@click.argument("devset", required=False, type=FOLDER)
@click.option(
    "--task", "tasks", multiple=True, type=click.Choice(TASKS), help="Dev-set tasks [both]."
)
@click.option("--image", type=FILE, default=None, help="A labelled raster instead of DEVSET.")
@click.option("--labels", default=None, help="The label raster of --image (same grid).")
@click.option("--classes", "classes_path", type=FILE, default=None, help="Classes of --labels.")
@click.option(
    "--tile-size",
    type=click.IntRange(min=16),
    default=128,
    show_default=True,
    help="Tile size of the --image store.",
)
@click.option(
    "--config",
    "config_path",
    type=FILE,
    default=None,
    help="Training settings YAML [terraseg train's defaults].",
)
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Override epochs.")
@click.option(
    "--classifier",
    "baseline_kind",
    type=click.Choice(get_args(BaselineKind)),
    default="hgb",
    show_default=True,
    help="Per-pixel classifier: gradient boosting or random forest.",
)
@click.option(
    "-o",
    "--out",
    "work",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep the splits, stores and runs here [a temporary folder].",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def bench_quality(
    devset: Path | None,
    tasks: tuple[str, ...],
    image: Path | None,
    labels: str | None,
    classes_path: Path | None,
    tile_size: int,
    config_path: Path | None,
    epochs: int | None,
    baseline_kind: BaselineKind,
    work: Path | None,
    as_json: bool,
) -> None:
    """Mean IoU, per-class IoU and boundary F of terraseg and a per-pixel baseline.

    DEVSET is the folder written by build_devset.py (Sentinel-2 with OSM land use,
    Landsat with CFmask); or give --image, --labels and --classes. Each task is split
    by ground, trained on one part and scored on the other; the baseline is fitted
    on the same training pixels. Slow: minutes per task on a CPU.
    """
    from terraseg.workflows.bench_utils import bench_workdir

    if (devset is None) == (image is None):
        raise click.UsageError("give DEVSET, or --image with --labels and --classes")
    if image is not None and (labels is None or classes_path is None):
        raise click.UsageError("--image needs --labels and --classes")
    if labels is not None and not Path(labels).is_file():
        raise click.BadParameter(f"{labels} is not a file", param_hint="--labels")
    overrides = {"epochs": epochs} if epochs else {}
    results = []
    with bench_workdir(work) as folder:
        label_path = Path(labels) if labels else None
        for task in _tasks(devset, tasks, image, label_path, classes_path, tile_size, folder):
            click.echo(f"{task.name}: {task.describe()}", err=True)
            results.append(run_task(task, folder, config_path, overrides, baseline_kind))
    report = {"cpu": cpu_description(), "tasks": results}
    click.echo(json.dumps(report, indent=2) if as_json else format_quality(report))


def _tasks(
    devset: Path | None,
    names: tuple[str, ...],
    image: Path | None,
    labels: Path | None,
    classes_path: Path | None,
    tile_size: int,
    folder: Path,
) -> list[Task]:
    from terraseg.pipeline.classes import read_classes
    from terraseg.workflows.bench.quality_data import landsat_task, raster_task, sentinel2_task

    if image is not None:
        assert labels is not None and classes_path is not None
        return [raster_task(image, labels, read_classes(classes_path), folder, tile_size)]
    assert devset is not None
    makers = {"sentinel2": sentinel2_task, "landsat": landsat_task}
    return [makers[name](devset, folder) for name in names or TASKS]


def build_store(task: Task, folder: Path) -> Path:
    """Tile the task's training rasters (in this process) into a store with a ground split."""
    from terraseg.pipeline.executor import InProcessExecutor
    from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes

    config = TileConfig.model_validate(
        {
            "tile_size": task.tile_size,
            "split_block": task.split_block,
            "val_fraction": 0.2,
            "split_buffer": False,
            "nodata": task.nodata,
        }
    )
    plans, table = prepare_tiling(
        task.train_images, label_rasters=task.train_labels, classes=task.classes, config=config
    )
    store = folder / task.name / "train.zarr"
    tile_scenes(store, plans, config, table, InProcessExecutor(), overwrite=True)
    return store


def train_config(config_path: Path | None, overrides: dict[str, Any]) -> Any:
    """Settings of terraseg train: the YAML over the defaults; no tracking, one process."""
    from terraseg.pipeline.settings import build_config, load_yaml
    from terraseg.pipeline.training.config import TrainConfig

    data = load_yaml(config_path) if config_path else {}
    fixed = {**overrides, "tracking.enabled": False, "devices": 1, "overlays": 0}
    return build_config(TrainConfig, data, fixed, source=config_path)


def run_task(
    task: Task,
    folder: Path,
    config_path: Path | None,
    overrides: dict[str, Any],
    kind: BaselineKind,
) -> dict[str, Any]:
    """Tile, train, fit the baseline, predict the test ground with both, and score both."""
    from terraseg.pipeline.artifact import load_artifact
    from terraseg.pipeline.baseline import fit_baseline
    from terraseg.workflows.train_run import launch

    store = build_store(task, folder)
    config = train_config(config_path, overrides)
    start = time.perf_counter()
    summary = launch(config, store, folder / task.name / "run", overwrite=True, progress=False)
    train_seconds = time.perf_counter() - start
    artifact = load_artifact(summary["model"])
    baseline = fit_baseline(store, kind=kind)
    model_scores, baseline_scores = score_test(task, artifact, baseline)
    return {
        "task": task.name,
        "data": task.describe(),
        "settings": settings_used(config, artifact, summary["steps_per_epoch"]),
        "terraseg": {**model_scores, "train_seconds": round(train_seconds, 1)},
        "baseline": {
            **baseline_scores,
            "classifier": baseline.describe(),
            "train_seconds": round(baseline.fit_seconds, 1),
        },
    }


def score_test(task: Task, artifact: Any, baseline: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scores of the model and the baseline on the test rasters, on the same pixels."""
    import numpy as np
    import rasterio

    from terraseg.pipeline.baseline import valid_pixels
    from terraseg.pipeline.classes import IGNORE_LABEL
    from terraseg.pipeline.evaluation import combine, compare
    from terraseg.pipeline.prediction.arrays import predict_array

    table = task.classes
    every = (slice(None), slice(None))
    model_parts, baseline_parts = [], []
    for image_path, label_path in zip(task.test_images, task.test_labels, strict=True):
        with rasterio.open(image_path) as src, rasterio.open(label_path) as lab:
            image, truth = src.read(), lab.read(1)
        pred = predict_array(artifact, image, nodata=task.nodata).classes
        valid = valid_pixels(image, task.nodata)
        base = table.id_lut()[baseline.predict_indices(image, valid)]
        missing = (pred == IGNORE_LABEL) | (base == IGNORE_LABEL)
        pred, base = np.where(missing, IGNORE_LABEL, pred), np.where(missing, IGNORE_LABEL, base)
        model_parts.append((str(image_path), *compare(pred, truth, table, every)))
        baseline_parts.append((str(image_path), *compare(base, truth, table, every)))
    return _summary(combine(model_parts, table)), _summary(combine(baseline_parts, table))


def _summary(evaluation: Any) -> dict[str, Any]:
    report = evaluation.report()
    keep = ["mean_iou", "pixel_accuracy", "mean_boundary_f1", "mean_boundary_f2"]
    return {
        **{key: report[key] for key in keep},
        "iou": dict(zip(report["classes"], report["iou"], strict=True)),
        "pixels": int(evaluation.matrix.sum()),
    }


def settings_used(config: Any, artifact: Any, steps_per_epoch: int) -> dict[str, Any]:
    """The training settings that shape the result, as trained (automatic choices resolved)."""
    model = artifact.model_config
    return {
        "model": {k: v for k, v in model.items() if k not in MODEL_KEYS_LEFT_OUT},
        "crop_size": min(config.data.crop_size, artifact.tile_size),  # as the loader cuts them
        "batch_size": config.data.batch_size,
        "samples_per_epoch": config.data.samples_per_epoch,
        "steps_per_epoch": steps_per_epoch,
        "epochs": config.epochs,
        "optimizer": f"{config.optimizer.name} lr {config.optimizer.lr}",
        "schedule": config.schedule.name,
        "augment": config.augment.model_dump(),
        "loss": config.loss.model_dump(),
        "threads": config.threads,
        "tile_size": artifact.tile_size,
        "normalization": config.data.normalization,
    }


def cpu_description() -> dict[str, Any]:
    """The CPU: model name, cores, and the vector instruction sets torch can use."""
    import os

    import torch

    flags = ""
    model = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name") and not flags:
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line.split(":", 1)[1]
                break
    wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma")
    return {
        "model": model,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "features": [f for f in wanted if f in flags.split()],
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def format_quality(report: dict[str, Any]) -> str:
    """Tables per task: terraseg beside the baseline, then settings and the CPU."""
    cpu = report["cpu"]
    lines = [
        f"cpu: {cpu['model']}, {cpu['cores']} cores, torch threads {cpu['torch_threads']}, "
        f"{cpu['torch_cpu_capability']} ({', '.join(cpu['features']) or 'no AVX'})"
    ]
    for task in report["tasks"]:
        lines += ["", f"{task['task']}: {task['data']}"]
        lines.append(f"{'':24s} {'terraseg':>9s} {'baseline':>9s}")
        model, base = task["terraseg"], task["baseline"]
        rows = [("mean IoU", "mean_iou"), ("boundary F 1 px", "mean_boundary_f1"),
                ("boundary F 2 px", "mean_boundary_f2"), ("pixel accuracy", "pixel_accuracy"),
                ("train seconds", "train_seconds")]  # fmt: skip
        lines += [f"{label:24s} {_cell(model[k])} {_cell(base[k])}" for label, k in rows]
        for name in model["iou"]:
            lines.append(
                f"{'IoU ' + name:24s} {_cell(model['iou'][name])} {_cell(base['iou'][name])}"
            )
        lines.append(f"margin (mean IoU)        {model['mean_iou'] - base['mean_iou']:+9.3f}")
        lines.append(f"baseline: {base['classifier']}")
        lines.append(f"settings: {json.dumps(task['settings'])}")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    return "      n/a" if value is None or value != value else f"{value:9.3f}"
