from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from terraseg.pipeline.model import ModelConfig
from terraseg.pipeline.settings import load_yaml
from terraseg.workflows.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def test_describe_prints_parameters_and_multiply_adds() -> None:
    args = ["model", "describe", "--backbone", "resnet101", "--output-stride", "16"]
    args += ["--num-bands", "4", "--num-classes", "6", "--tile-size", "512"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("DeepLabV3+ resnet101, output stride 16, decoder")
    assert "4 bands, 6 classes; tile 512 x 512" in lines[0]
    # The paper's ResNet-101 DeepLabV3+ (45,687,542 for 4 bands and 6 classes) and the
    # full-resolution head (model.full_resolution, on by default): 26,624 more, and
    # its three pixel layers (model.pixel_layers) 9,344 more than one.
    assert lines[-1].split()[:2] == ["total", "45,723,510"]


def test_describe_json_with_config_file_and_overrides(tmp_path: Path) -> None:
    config = tmp_path / "model.yaml"
    config.write_text("backbone: xception65\nwidth_multiplier: 0.25\nnum_classes: 3\n")
    args = ["model", "describe", "--config", str(config), "--no-decoder", "--num-classes", "5"]
    result = CliRunner().invoke(cli, [*args, "--tile-size", "64", "--json", "--time-runs", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["config"]["backbone"] == "xception65"
    assert data["config"]["num_classes"] == 5  # the option wins over the file
    assert data["config"]["decoder"] is False and "decoder" not in data["parts"]
    assert data["multiply_adds"] > 0 and data["forward_ms"] > 0


def test_describe_bad_values(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["model", "describe", "--backbone", "vgg16"])
    assert result.exit_code == 2 and "resnet50" in result.output
    config = tmp_path / "bad.yaml"
    config.write_text("backbone: resnet50\nbands: 4\n")
    result = CliRunner().invoke(cli, ["model", "describe", "--config", str(config)])
    assert result.exit_code == 1
    assert "bands: unknown key (allowed keys:" in result.output and str(config) in result.output


def test_shipped_model_yaml_holds_the_defaults() -> None:
    assert ModelConfig.model_validate(load_yaml(ROOT / "configs" / "model.yaml")) == ModelConfig()


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys; from click.testing import CliRunner; "
        "from terraseg.workflows.cli.main import cli; "
        "r = CliRunner().invoke(cli, ['model', 'describe', '--help']); "
        "assert r.exit_code == 0, r.output; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
