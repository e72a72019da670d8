"""The workflow files of configs/workflows run end to end, at small sizes set with --set."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import geopandas as gpd
import pytest
import rasterio
import yaml
from click.testing import CliRunner

from terraseg.pipeline.errors import ConfigError
from terraseg.workflows.cli.main import cli
from terraseg.workflows.run_workflow import Step, Workflow, apply_overrides, input_files
from tests.helpers import tiny_model_artifact, tiny_scenes
from tests.pipeline.training.test_resume import assert_same_run, kill_when

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "workflows"
SMALL_TRAIN = [
    "width-multiplier=0.25", "members=1", "crop-size=32", "batch-size=2",
    "samples-per-epoch=4", "epochs=1", "num-workers=0", "threads=1", "accelerator=cpu",
]  # fmt: skip


def run(workflow: Path, workdir: Path, *settings: str) -> tuple[int, str, list[dict]]:
    """``terraseg -q run WORKFLOW --workdir WORKDIR --set ...``: exit code, output, step lines."""
    args = ["-q", "run", str(workflow), "--workdir", str(workdir)]
    for setting in settings:
        args += ["--set", setting]
    result = CliRunner().invoke(cli, args)
    steps = [json.loads(ln) for ln in result.output.splitlines() if ln.startswith('{"step"')]
    return result.exit_code, result.output, steps


def skipped(steps: list[dict]) -> list[bool]:
    return [step["skipped"] for step in steps]


def test_every_workflow_file_has_a_test():
    """demo.yaml runs in tests/workflows/test_run.py (test_demo_workflow_file), the others here."""
    tested = {"demo.yaml", "predict-folder.yaml", "train-tiles.yaml"}
    assert {path.name for path in CONFIGS.glob("*.yaml")} == tested


def test_predict_folder_workflow_file_and_a_raster_added_to_the_folder(tmp_path):
    """predict-folder.yaml: a folder predicted, then a glob of its class maps vectorized.

    A raster added to the folder makes both steps stale: a re-run predicts it and
    vectorizes all class maps again; a third run skips both.
    """
    scenes = tiny_scenes(tmp_path / "synth").scenes
    (tmp_path / "imagery").mkdir()
    shutil.copy(scenes[0], tmp_path / "imagery" / "a.tif")
    model = tiny_model_artifact(tmp_path / "model")
    settings = [f"predict.model={model}", "predict.threads=1", "vectorize.workers=1"]
    code, output, steps = run(CONFIGS / "predict-folder.yaml", tmp_path, *settings)
    assert code == 0, output
    assert skipped(steps) == [False, False]
    assert sources(tmp_path / "polygons.gpkg") == {"a_classes.tif"}
    shutil.copy(scenes[1], tmp_path / "imagery" / "b.tif")
    code, output, steps = run(CONFIGS / "predict-folder.yaml", tmp_path, *settings)
    assert code == 0, output
    assert skipped(steps) == [False, False]
    assert (tmp_path / "predictions" / "b_classes.tif").is_file()
    assert sources(tmp_path / "polygons.gpkg") == {"a_classes.tif", "b_classes.tif"}
    code, output, steps = run(CONFIGS / "predict-folder.yaml", tmp_path, *settings)
    assert code == 0 and skipped(steps) == [True, True]


def sources(gpkg: Path) -> set[str]:
    polygons = gpd.read_file(gpkg, layer="polygons")
    return {Path(source).name for source in polygons["source"]}


def image_mask_tiles(folder: Path) -> None:
    """images/, masks/ (label rasters of the same names) and classes.yaml, as a user has them."""
    synth = tiny_scenes(folder / "synth", labels="raster", size="128x128")
    for name in ("images", "masks"):
        (folder / name).mkdir()
    for index, (scene, label) in enumerate(zip(synth.scenes, synth.labels, strict=True)):
        shutil.copy(scene, folder / "images" / f"tile_{index}.tif")
        shutil.copy(label, folder / "masks" / f"tile_{index}.tif")
    shutil.copy(synth.classes, folder / "classes.yaml")


def test_train_tiles_workflow_file(tmp_path):
    """train-tiles.yaml: image and mask tiles to a store, trained and registered."""
    image_mask_tiles(tmp_path)
    config = yaml.safe_load((CONFIGS.parents[1] / "configs" / "train.yaml").read_text())
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    small = ["tile.tile-size=64", "tile.workers=1", *(f"train.{s}" for s in SMALL_TRAIN)]
    code, output, steps = run(CONFIGS / "train-tiles.yaml", tmp_path, *small)
    assert code == 0, output
    assert skipped(steps) == [False, False]
    summary = json.loads((tmp_path / "runs" / "my-model" / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["model_uri"].startswith("models:/my-model/")
    with rasterio.open(tmp_path / "images" / "tile_0.tif") as src:
        assert src.count == 4  # the tiles are the synthetic scenes' 4 bands


def resumable_workflow() -> dict:
    """Synth, tile and a 3-epoch training with two loader workers and dropout."""
    train = {"data": "dataset.zarr", "out": "runs/tiny", "backbone": "mobilenetv2",
             "width-multiplier": 0.25, "members": 1, "crop-size": 32, "batch-size": 2,
             "samples-per-epoch": 8, "epochs": 3, "num-workers": 2, "threads": 1,
             "accelerator": "cpu", "track": False, "overwrite": True}  # fmt: skip
    steps = [
        {"name": "synth", "command": "synth", "args": ["data"], "outputs": ["data/classes.yaml"],
         "options": {"scenes": 2, "size": "256x192", "resolution": 2.0, "seed": 11,
                     "workers": 1}},
        {"name": "tile", "command": "tile", "args": ["data/"], "outputs": ["dataset.zarr"],
         "options": {"labels": "data/labels.gpkg", "out": "dataset.zarr", "tile-size": 64,
                     "split-block": 1, "workers": 1}},
        {"name": "train", "command": "train", "options": train,
         "outputs": ["runs/tiny/summary.json"]},
    ]  # fmt: skip
    return {"steps": steps}


def test_workflow_killed_in_its_train_step_resumes_it(tmp_path):
    """``terraseg run`` SIGKILLed once the train step's first checkpoint is written.

    The re-run skips the finished steps and continues training from the last
    checkpoint (``--resume`` in place of ``--overwrite``); the trained weights,
    optimizer state and metrics equal those of a workflow that was never stopped.
    """
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    for folder in (straight, killed):
        folder.mkdir()
        (folder / "wf.yaml").write_text(yaml.safe_dump(resumable_workflow()))
    code, output, _ = run(straight / "wf.yaml", straight)
    assert code == 0, output
    last = killed / "runs" / "tiny" / "checkpoints" / "last.pt"
    kill_when(last, ["run", str(killed / "wf.yaml"), "--workdir", str(killed)])
    assert not (killed / "runs" / "tiny" / "summary.json").exists()
    code, output, steps = run(killed / "wf.yaml", killed)
    assert code == 0, output
    assert skipped(steps) == [True, True, False]
    command = json.loads((killed / ".terraseg-run" / "train.json").read_text())["command"]
    assert "--resume" in command and "--overwrite" not in command
    assert_same_run(straight / "runs" / "tiny", killed / "runs" / "tiny")


def test_set_overrides_options_and_arguments():
    workflow = Workflow(steps=[Step(name="t", command="tile", args=["a.tif"],
                                    options={"tile-size": 512, "workers": 2})])  # fmt: skip
    changed = apply_overrides(workflow, ["t.tile_size=64", "t.args=[b.tif, c/]", "t.workers=null"])
    assert changed.steps[0].options == {"tile-size": 64, "workers": None}
    assert changed.steps[0].args == ["b.tif", "c/"]
    assert workflow.steps[0].options["tile-size"] == 512  # the loaded workflow is unchanged
    with pytest.raises(ConfigError, match="no step 'x'; steps: t"):
        apply_overrides(workflow, ["x.epochs=1"])
    with pytest.raises(ConfigError, match=r"write STEP\.OPTION=VALUE"):
        apply_overrides(workflow, ["t=1"])


def test_stamps_see_the_files_of_folders_globs_and_lists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("in/a.tif", "in/b.tif", "in/.hidden.tif", "in/out/made.tif", "c.tif"):
        Path(name).parent.mkdir(parents=True, exist_ok=True)
        Path(name).write_bytes(b"x")
    Path("list.txt").write_text("# rasters\nc.tif\n")
    step = Step(name="p", command="predict", args=["in", "in/*.tif", "list.txt"],
                options={"out": "in/out", "tracking-uri": "sqlite:///c.tif"})  # fmt: skip
    line = ["predict", "in", "in/*.tif", "list.txt", "--out", "in/out"]
    files = [entry[0] for entry in input_files(step, line)]
    assert files == ["c.tif", "in/a.tif", "in/b.tif", "list.txt"]
    before = input_files(step, line)
    Path("in/new.tif").write_bytes(b"y")
    assert input_files(step, line) != before
