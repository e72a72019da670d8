import dataclasses

import torch
from click.testing import CliRunner

from terraseg.pipeline.artifact import load_artifact, save_artifact
from terraseg.pipeline.model.inference import inference_network
from terraseg.pipeline.model.quantization import quantize_backbone
from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_model_artifact


def test_model_calibrate_stores_ranges_that_fit_in_a_copy(store, tmp_path):
    model = tiny_model_artifact(tmp_path / "model")
    out = tmp_path / "calibrated"
    result = CliRunner().invoke(
        cli, ["model", "calibrate", str(model), "--data", str(store), "--out", str(out),
              "--tiles", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert load_artifact(model).calibration is None  # the original is left as it was
    calibrated = load_artifact(out)
    assert calibrated.calibration
    network = inference_network(calibrated.build_model(), "cpu")
    quantize_backbone(network, calibrated.calibration, torch.float32)  # raises if unfit


def test_model_calibrate_refuses_a_store_with_other_bands(store, tmp_path):
    artifact = load_artifact(tiny_model_artifact(tmp_path / "model"))
    other = save_artifact(
        dataclasses.replace(artifact, band_names=["b1", "b2", "b3", "b4"]), tmp_path / "other"
    )
    result = CliRunner().invoke(
        cli, ["model", "calibrate", str(other), "--data", str(store), "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 1
    assert f"{store}: the store has bands" in result.output and "'b1'" in result.output
    assert not (tmp_path / "x").exists()
