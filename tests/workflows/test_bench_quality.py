"""terraseg bench quality: a generated labelled raster end to end in one epoch, and its refusals.

The dev-set run itself is slow (minutes per task) and marked so.
"""

import json
import os
from pathlib import Path

import pytest
import rasterio
from click.testing import CliRunner

from terraseg.pipeline.artifact import Normalization, load_artifact
from terraseg.pipeline.store import attributes, open_existing
from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_scenes

TINY_TRAINING = """
model: {backbone: mobilenetv2, width_multiplier: 0.25, members: 1}
data: {crop_size: 32, batch_size: 4, samples_per_epoch: 8, num_workers: 0, val_batch_size: 4}
int8_calibration: 0
threads: 1
"""
DEVSET = Path(os.environ.get("TERRASEG_DEVSET", "/tmp/devset"))


def test_a_labelled_raster_end_to_end(tmp_path):
    scenes = tiny_scenes(tmp_path / "scenes", labels="raster")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_TRAINING)
    args = ["bench", "quality", "--image", scenes.scenes[0], "--labels", scenes.labels[0]]
    args += ["--classes", scenes.classes, "--tile-size", 32, "--config", config, "--epochs", 1]
    result = CliRunner().invoke(cli, [*map(str, args), "-o", str(tmp_path / "work"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    assert "torch_cpu_capability" in report["cpu"]
    (task,) = report["tasks"]
    model, baseline = task["terraseg"], task["baseline"]
    assert model["pixels"] == baseline["pixels"] > 0  # scored on the same pixels
    assert 0 <= model["mean_iou"] <= 1 and 0 < baseline["mean_iou"] <= 1
    assert set(model["iou"]) == set(baseline["iou"]) and "boundary" not in model["iou"]
    assert model["train_seconds"] > 0 and "HistGradientBoosting" in baseline["classifier"]
    assert task["settings"]["epochs"] == 1 and task["settings"]["crop_size"] == 32
    assert task["settings"]["steps_per_epoch"] == 2  # 8 crops in batches of 4, as asked
    with rasterio.open(scenes.scenes[0]) as src:  # the test ground is the eastern half
        assert model["pixels"] <= src.height * (src.width - src.width // 2)
    stats = attributes(open_existing(tmp_path / "work" / "raster" / "train.zarr"))["statistics"]
    trained = load_artifact(tmp_path / "work" / "raster" / "run" / "model").normalization
    assert trained == Normalization.from_statistics(stats, "mean_std")  # the default


def test_refusals(tmp_path):
    scenes = tiny_scenes(tmp_path / "scenes", labels="raster")
    result = CliRunner().invoke(cli, ["bench", "quality"])
    assert result.exit_code == 2 and "give DEVSET, or --image" in result.output
    result = CliRunner().invoke(cli, ["bench", "quality", "--image", str(scenes.scenes[0])])
    assert result.exit_code == 2 and "--image needs --labels and --classes" in result.output


@pytest.mark.slow
@pytest.mark.skipif(not DEVSET.is_dir(), reason=f"no dev set at {DEVSET}")
def test_dev_set_with_defaults(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "quality", str(DEVSET), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{") :])
    for task in report["tasks"]:
        assert task["terraseg"]["train_seconds"] < 15 * 60
        assert task["terraseg"]["mean_iou"] > 0 and task["baseline"]["mean_iou"] > 0
