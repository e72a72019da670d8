"""The demo: sample scenes, a small model trained, registered, applied to held-back scenes.

The chain is an ordinary workflow (see :mod:`terraseg.workflows.run_workflow`), so an
interrupted demo resumes where it stopped; ``configs/workflows/demo.yaml`` is the
same workflow as a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from terraseg.workflows.run_workflow import Step, Workflow

MODEL_NAME = "terraseg-demo"
EXPERIMENT = "terraseg-demo"
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
# The MLflow 3 UI opens an experiment as GenAI traces unless asked for the ML workflow.
UI_QUERY = "?workflowType=machine_learning"
TRAINING_SCENES = 4
SCENES = TRAINING_SCENES + 1  # the last one is held back


def demo_workflow(tracking_uri: str = "sqlite:///mlflow.db") -> Workflow:
    """Synthesize, tile, train and register, predict the held-back scene, vectorize, evaluate."""
    return Workflow(steps=[*_data_steps(), _train_step(tracking_uri), *_use_steps(tracking_uri)])


def _data_steps() -> list[Step]:
    """Synthesize the scenes and tile the training ones."""
    train_scenes = [f"data/scene_{i:03d}.tif" for i in range(TRAINING_SCENES)]
    return [
        Step(
            name="synth",
            command="synth",
            args=["data"],
            options={"scenes": SCENES, "size": 1024, "seed": 7},
            outputs=["data/classes.yaml"],
        ),
        Step(
            name="tile",
            command="tile",
            args=train_scenes,
            options={
                "labels": "data/labels.gpkg",
                "out": "dataset.zarr",
                "tile-size": 256,
                "split-block": 2,
                "val-fraction": 0.25,
            },
            outputs=["dataset.zarr"],
        ),
    ]


def _train_step(tracking_uri: str) -> Step:
    """Train a small MobileNetV2 model and register it as a candidate."""
    return Step(
        name="train",
        command="train",
        options={
            "data": "dataset.zarr",
            "out": "runs/demo",
            "backbone": "mobilenetv2",
            "width-multiplier": 0.5,
            "crop-size": 128,
            "batch-size": 8,
            "samples-per-epoch": 512,
            "epochs": 10,
            "optimizer": "adamw",
            "lr": 0.002,
            "schedule": "cosine",
            "num-workers": 1,
            "threads": 1,
            "seed": 7,
            "experiment": EXPERIMENT,
            "register": MODEL_NAME,
            "alias": "candidate",
            "tracking-uri": tracking_uri,
            "overwrite": True,
        },
        outputs=["runs/demo/summary.json"],
    )


def _use_steps(tracking_uri: str) -> list[Step]:
    """Predict the held-back scene with the registered model, vectorize and evaluate it."""
    held_back = f"data/scene_{SCENES - 1:03d}.tif"
    prediction = f"predictions/scene_{SCENES - 1:03d}_classes.tif"
    return [
        Step(
            name="predict",
            command="predict",
            args=[held_back],
            options={
                "model": f"models:/{MODEL_NAME}@candidate",
                "out": "predictions",
                "probabilities": True,
                "tracking-uri": tracking_uri,
            },
            outputs=[prediction],
        ),
        Step(
            name="vectorize",
            command="vectorize",
            args=[prediction],
            options={"out": "polygons.gpkg", "overwrite": True},
            outputs=["polygons.gpkg"],
        ),
        Step(
            name="evaluate",
            command="evaluate",
            args=[prediction],
            options={"truth": "data/labels.gpkg", "out": "metrics.json", "overwrite": True},
            outputs=["metrics.json"],
        ),
    ]


def quicklooks(out: Path) -> list[Path]:
    """A PNG per predicted scene: imagery, truth and prediction side by side."""
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.quicklook import quicklook

    table = read_classes(out / "data" / "classes.yaml")
    written = []
    for prediction in sorted((out / "predictions").glob("*_classes.tif")):
        stem = prediction.stem.removesuffix("_classes")
        image = out / "data" / f"{stem}.tif"
        written.append(
            quicklook(
                image,
                out / "data" / "labels.gpkg",
                prediction,
                table,
                out / "quicklooks" / f"{stem}.png",
            )
        )
    return written


def mlflow_ui_lines(out: Path, experiment_id: str) -> list[str]:
    """How to open the demo's runs and model in the MLflow UI.

    The store's artifact locations are relative to ``out`` (see
    :func:`terraseg.workflows.mlflow_tracking.movable_experiment`), so ``mlflow ui`` starts
    there. The links name the runs page and the ML workflow: MLflow 3's UI
    otherwise opens an experiment on its GenAI traces.
    """
    return [
        f"  MLflow: cd {out} && mlflow ui --backend-store-uri sqlite:///mlflow.db",
        f"    runs   {UI_ADDRESS}/#/experiments/{experiment_id}/runs{UI_QUERY}",
        f"    model  {UI_ADDRESS}/#/models/{MODEL_NAME}{UI_QUERY}",
    ]


def report(out: Path, quicklook_paths: list[Path], experiment_id: str) -> str:
    """The demo's closing summary: scores, polygon counts, outputs, and how to open them."""
    import geopandas as gpd

    summary: dict[str, Any] = json.loads((out / "runs" / "demo" / "summary.json").read_text())
    held_back: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    polygons = gpd.read_file(out / "polygons.gpkg", layer="polygons")
    counts = polygons.groupby("class_name").size().to_dict() if len(polygons) else {}
    lines = ["", "terraseg demo finished", ""]
    lines.append(
        f"validation mean IoU {summary['best_val_mean_iou']:.3f} (epoch {summary['best_epoch']})"
    )
    lines += [f"  {name:<11} {iou:.3f}" for name, iou in summary["val_iou"].items()]
    lines.append(
        f"held-back scene mean IoU {held_back['mean_iou']:.3f}, "
        f"pixel accuracy {held_back['pixel_accuracy']:.3f}"
    )
    lines += [
        f"  {name:<11} {_fmt(iou)}"
        for name, iou in zip(held_back["classes"], held_back["iou"], strict=True)
    ]
    lines.append("polygons per class: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    lines += [
        "",
        "outputs:",
        f"  scenes and labels  {out / 'data'}",
        f"  training store     {out / 'dataset.zarr'}",
        f"  model              {summary['model_uri']} (folder {out / 'runs' / 'demo' / 'model'})",
        f"  class maps         {out / 'predictions'}",
        f"  polygons           {out / 'polygons.gpkg'}",
        f"  metrics            {out / 'metrics.json'}",
        *[f"  quick-look         {p}" for p in quicklook_paths],
        f"  steps' output      {out / 'steps.log'}",
        "",
        "open them:",
        f"  QGIS: add {out / 'polygons.gpkg'} (styled by class) and {out / 'predictions'}/*.tif",
        *mlflow_ui_lines(out, experiment_id),
    ]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
