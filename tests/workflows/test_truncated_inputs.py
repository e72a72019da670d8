"""A truncated GeoTIFF fails on the cluster with a message that names the file and the read."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import tiny_model_artifact, tiny_scenes

TERRASEG = str(Path(sys.executable).parent / "terraseg")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("truncated")
    scenes = tiny_scenes(root / "scenes", scenes=1, size="1024x1024")
    whole = scenes.scenes[0].read_bytes()
    cut = root / "cut.tif"
    cut.write_bytes(whole[: len(whole) // 2])  # the header and the first tiles survive
    return root, tiny_model_artifact(root / "model"), scenes, cut


def run(*args):
    return subprocess.run([TERRASEG, "-q", *map(str, args)], capture_output=True, text=True)


def assert_names_the_file(result, cut):
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and "Compute Failed" not in result.stderr
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"Error: {cut}: cannot read rows "), result.stderr
    assert "(damaged or truncated file?)" in first


def test_predict(data):
    root, model, _, cut = data
    result = run("predict", cut, "--model", model, "--out", root / "predicted")
    assert_names_the_file(result, cut)
    assert not list((root / "predicted").glob("*.tif"))


def test_tile(data):
    root, _, scenes, cut = data
    store = root / "store.zarr"
    result = run("tile", cut, "--labels", scenes.labels[0], "--out", store, "--tile-size", "128")
    assert_names_the_file(result, cut)
    assert not store.exists()


def test_vectorize(data):
    root, _, _, cut = data
    out = root / "polygons.gpkg"
    result = run("vectorize", cut, "-o", out, "--block-size", "256")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert str(cut) in result.stderr.strip().splitlines()[0]
    assert not out.exists()
