import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import yaml
import zarr
from click.testing import CliRunner

from terraseg.pipeline.errors import ConfigError
from terraseg.workflows.cli.main import cli
from terraseg.workflows.demo import demo_workflow
from terraseg.workflows.run_workflow import Step, command_line, load_workflow

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "workflows"

TINY_TRAIN = {
    "data": "dataset.zarr",
    "out": "runs/tiny",
    "backbone": "mobilenetv2",
    "width-multiplier": 0.25,
    "members": 1,
    "crop-size": 32,
    "batch-size": 2,
    "samples-per-epoch": 4,
    "epochs": 1,
    "num-workers": 0,
    "threads": 1,
    "seed": 3,
    "accelerator": "cpu",
    "register": "tiny",
    "alias": "candidate",
    "tracking-uri": "sqlite:///mlflow.db",
    "overwrite": True,
}


def tiny_workflow(scheduler=None):
    steps = [
        {
            "name": "synth",
            "command": "synth",
            "args": ["data"],
            "options": {
                "scenes": 2,
                "size": "256x192",
                "resolution": 2.0,
                "seed": 11,
                "workers": 1,
            },
            "outputs": ["data/classes.yaml"],
        },
        {
            "name": "tile",
            "command": "tile",
            "args": ["data/scene_000.tif"],
            "options": {
                "labels": "data/labels.gpkg",
                "out": "dataset.zarr",
                "tile-size": 64,
                "split-block": 1,
                "workers": 1,
            },
            "outputs": ["dataset.zarr"],
        },
        {
            "name": "train",
            "command": "train",
            "options": TINY_TRAIN,
            "outputs": ["runs/tiny/summary.json"],
        },
        {
            "name": "predict",
            "command": "predict",
            "args": ["data/scene_001.tif"],
            "options": {
                "model": "models:/tiny@candidate",
                "out": "predictions",
                "threads": 1,
                "tracking-uri": "sqlite:///mlflow.db",
            },
            "outputs": ["predictions/scene_001_classes.tif"],
        },
        {
            "name": "vectorize",
            "command": "vectorize",
            "args": ["predictions/scene_001_classes.tif"],
            "options": {"out": "polygons.gpkg", "overwrite": True},
            "outputs": ["polygons.gpkg"],
        },
        {
            "name": "evaluate",
            "command": "evaluate",
            "args": ["predictions/scene_001_classes.tif"],
            "options": {"truth": "data/labels.gpkg", "out": "metrics.json", "workers": 1},
            "outputs": ["metrics.json"],
        },
    ]
    return {"scheduler": scheduler, "steps": steps}


def run_file(folder, workflow, *extra):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "workflow.yaml"
    path.write_text(yaml.safe_dump(workflow))
    result = CliRunner().invoke(cli, ["-q", "run", str(path), *extra])
    return result, [
        json.loads(line) for line in result.output.splitlines() if line.startswith('{"step"')
    ]


DEMO_SMALL = [
    "synth.size=256x192", "synth.resolution=2", "synth.workers=1", "tile.tile-size=64",
    "tile.split-block=1", "tile.workers=1", "predict.threads=1", "evaluate.workers=1",
    *(f"train.{setting}" for setting in [
        "width-multiplier=0.25", "members=1", "crop-size=32", "batch-size=2",
        "samples-per-epoch=4", "epochs=1", "num-workers=0", "threads=1", "accelerator=cpu"]),
]  # fmt: skip


def run_demo(folder, *extra):
    """configs/workflows/demo.yaml in ``folder`` at small sizes (``--set``)."""
    args = ["-q", "run", str(CONFIGS / "demo.yaml"), "--workdir", str(folder), *extra]
    for setting in DEMO_SMALL:
        args += ["--set", setting]
    result = CliRunner().invoke(cli, args)
    return result, [
        json.loads(line) for line in result.output.splitlines() if line.startswith('{"step"')
    ]


def outputs_of(folder):
    store = zarr.open_group(str(folder / "dataset.zarr"), path="scenes/scene_000", mode="r")
    with rasterio.open(folder / "predictions" / "scene_004_classes.tif") as src:
        classes = src.read()
    polygons = gpd.read_file(folder / "polygons.gpkg", layer="polygons")
    return {
        "label": store["label"][...],
        "image": store["image"][...],
        "classes": classes,
        "polygons": sorted(polygons.geometry.to_wkb()),
        "metrics": json.loads((folder / "metrics.json").read_text()),
    }


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The demo workflow file, end to end on a LocalCluster."""
    folder = tmp_path_factory.mktemp("local")
    result, steps = run_demo(folder)
    assert result.exit_code == 0, result.output
    assert [s["skipped"] for s in steps] == [False] * 6
    return folder


def test_demo_workflow_file(local_run):
    """demo.yaml: synth, tile, train and register, predict, vectorize, evaluate."""
    assert len(gpd.read_file(local_run / "polygons.gpkg", layer="polygons")) > 0
    assert "mean_iou" in json.loads((local_run / "metrics.json").read_text())
    summary = json.loads((local_run / "runs" / "demo" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["model_uri"].startswith("models:/terraseg-demo/")


def test_workflow_on_real_scheduler_equals_local_cluster(
    local_run, dask_scheduler_address, tmp_path
):
    result, _ = run_demo(tmp_path, "--scheduler", dask_scheduler_address)
    assert result.exit_code == 0, result.output
    local, remote = outputs_of(local_run), outputs_of(tmp_path)
    for key in ("label", "image", "classes"):
        np.testing.assert_array_equal(local[key], remote[key])
    assert local["polygons"] == remote["polygons"]
    assert local["metrics"]["confusion_matrix"] == remote["metrics"]["confusion_matrix"]


def test_rerun_skips_and_interrupted_workflow_resumes(local_run, tmp_path):
    _, steps = run_demo(local_run)
    assert all(s["skipped"] for s in steps)
    # a workflow that stops at a failing step, then is fixed and run again
    broken = tiny_workflow()
    broken["steps"][2]["options"] = {**TINY_TRAIN, "data": "missing.zarr"}
    result, _ = run_file(tmp_path, broken)
    assert result.exit_code != 0 and "missing.zarr" in result.output
    assert (tmp_path / "dataset.zarr").exists() and not (tmp_path / "predictions").exists()
    result, steps = run_file(tmp_path, tiny_workflow())
    assert result.exit_code == 0, result.output
    assert [s["skipped"] for s in steps] == [True, True, False, False, False, False]


def test_command_lines():
    step = Step(
        name="s",
        command="predict",
        args=["a.tif"],
        options={"model": "m", "probabilities": True, "tta": None, "bands": [1, 2, 3]},
    )
    assert command_line(step, "tcp://h:1", True) == [
        "predict",
        "a.tif",
        "--model",
        "m",
        "--probabilities",
        "--bands",
        "1,2,3",
        "--scheduler",
        "tcp://h:1",
    ]
    pairs = Step(
        name="p", command="tile", options={"pairs": ["images", "masks"], "all_touched": False}
    )
    assert command_line(pairs, None, True) == [
        "tile",
        "--pairs",
        "images",
        "masks",
        "--no-all-touched",
    ]


def test_example_workflows_are_valid_and_demo_file_is_the_demo():
    for path in CONFIGS.glob("*.yaml"):
        load_workflow(path)
    assert load_workflow(CONFIGS / "demo.yaml") == demo_workflow()


def test_bad_workflow_file(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("steps:\n  - {name: a, command: tile, option: {}}\n")
    with pytest.raises(ConfigError, match=r"steps\.0\.option: unknown key"):
        load_workflow(path)


def test_a_step_name_cannot_reach_outside_the_work_folder(tmp_path):
    from click.testing import CliRunner

    from terraseg.workflows.cli.main import cli

    workflow = tmp_path / "wf.yaml"
    workflow.write_text("steps:\n  - name: ../../x\n    command: synth\n    args: [data]\n")
    result = CliRunner().invoke(cli, ["run", str(workflow)])
    assert result.exit_code == 1
    assert "steps.0.name" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path.parent.parent / "x.json").exists()
