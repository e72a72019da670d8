"""A damaged or inconsistent model folder is one line naming the file, before any work."""

import json
import shutil

import pytest
from click.testing import CliRunner

from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_model_artifact, tiny_scenes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return tiny_model_artifact(root / "model"), tiny_scenes(root / "scenes", scenes=1).scenes[0]


def manifest_edit(change):
    def apply(folder):
        path = folder / "terraseg_model.json"
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))
        return path

    return apply


def truncate(name):
    def apply(folder):
        path = folder / name
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return apply


def write(name, text):
    def apply(folder):
        (folder / name).write_text(text)
        return folder / name

    return apply


def add_class(manifest):
    manifest["classes"].append({"id": 9, "name": "extra"})
    if "class_index" in manifest:
        manifest["class_index"]["9"] = len(manifest["class_index"])


CASES = {
    "truncated weights": (truncate("weights.pt"), "cannot load tensors"),
    "weights not a state dict": (write("weights.pt", "hello"), "cannot load tensors"),
    "malformed description": (write("terraseg_model.json", "{not json"), "not valid JSON"),
    "description without tile_size": (
        manifest_edit(lambda d: d.pop("tile_size")), "no 'tile_size'"),
    "more classes than outputs": (manifest_edit(add_class), "the model has 5 outputs but"),
    "foreign format": (manifest_edit(lambda d: d.update(format="x/1")), "unsupported model format"),
    "weights of another architecture": (
        manifest_edit(lambda d: d["model_config"].update(width_multiplier=0.5)),
        "the weights do not fit the architecture",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_bad_model_is_one_line(data, tmp_path, case):
    model, scene = data
    damage, expected = CASES[case]
    folder = tmp_path / "model"
    shutil.copytree(model, folder)
    damage(folder)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["predict", str(scene), "--model", str(folder), "--out", str(out)]
    )
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and expected in lines[0] and str(folder) in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())
