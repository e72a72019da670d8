"""Scenes as band files: found by name, stacked on the finest grid, predicted without GDAL steps."""

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner

from terraseg.pipeline.bandfiles import find_band_scenes, write_stack_vrt
from terraseg.pipeline.errors import InputError
from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_model_artifact

CRS = "EPSG:32633"
ORIGIN = (400000.0, 5800000.0)


def write_band(path: Path, data: np.ndarray, resolution: float, nodata=None):
    transform = Affine(resolution, 0, ORIGIN[0], 0, -resolution, ORIGIN[1])
    height, width = data.shape
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1, "crs": CRS,
               "dtype": str(data.dtype), "nodata": nodata, "transform": transform}  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def make_scene(folder: Path, name: str, size: int = 96, seed: int = 0):
    """Bands 2, 3, 4 at 10 m and band 11 at 20 m, as Sentinel-2 delivers them."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    fine = {
        band: rng.integers(0, 250, (size, size), dtype=np.uint8) for band in ("B02", "B03", "B04")
    }
    for band, data in fine.items():
        write_band(folder / f"{name}_{band}.tif", data, 10.0)
    coarse = rng.integers(0, 250, (size // 2, size // 2), dtype=np.uint8)
    write_band(folder / f"{name}_B11.tif", coarse, 20.0)
    (folder / "notes.txt").write_text("not a band")
    return fine, coarse


def test_a_scene_stacks_in_band_order_on_the_finest_grid(tmp_path):
    fine, coarse = make_scene(tmp_path / "T33_a", "T33_20170216")
    (scene,) = find_band_scenes([tmp_path / "T33_a"], ["B04", "B03", "B02", "B11"])
    assert scene.name == "T33_20170216"
    vrt = write_stack_vrt(scene, tmp_path / "stacks", resampling="nearest")
    with rasterio.open(vrt) as src:
        assert src.count == 4 and src.res == (10.0, 10.0) and src.shape == (96, 96)
        np.testing.assert_array_equal(src.read(1), fine["B04"])
        np.testing.assert_array_equal(src.read(3), fine["B02"])
        np.testing.assert_array_equal(src.read(4), np.repeat(np.repeat(coarse, 2, 0), 2, 1))
    mtime = vrt.stat().st_mtime_ns
    write_stack_vrt(scene, tmp_path / "stacks", resampling="nearest")
    assert vrt.stat().st_mtime_ns == mtime  # unchanged: a re-run sees the same input


def test_a_folder_of_scene_folders_and_recursion(tmp_path):
    make_scene(tmp_path / "all" / "LE7_001", "LE7_001", seed=1)
    make_scene(tmp_path / "all" / "LE7_002", "LE7_002", seed=2)
    make_scene(tmp_path / "deep" / "2009" / "LE7_003", "LE7_003", seed=3)
    bands = ["B02", "B03", "B04"]
    assert [s.name for s in find_band_scenes([tmp_path / "all"], bands)] == ["LE7_001", "LE7_002"]
    with pytest.raises(InputError, match="try --recursive"):
        find_band_scenes([tmp_path / "deep"], bands)
    assert [s.name for s in find_band_scenes([tmp_path / "deep"], bands, recursive=True)] == [
        "LE7_003"
    ]
    with pytest.raises(InputError, match="no folder here holds a file for every band"):
        find_band_scenes([tmp_path / "all"], [*bands, "B12"])


def test_bands_on_other_ground_are_refused(tmp_path):
    make_scene(tmp_path / "s", "S")
    write_band(tmp_path / "s" / "S_B03.tif", np.zeros((10, 10), np.uint8), 10.0)
    (scene,) = find_band_scenes([tmp_path / "s"], ["B02", "B03"])
    with pytest.raises(InputError, match="does not cover the same ground"):
        write_stack_vrt(scene, tmp_path / "stacks")


def test_predict_from_band_files(tmp_path):
    make_scene(tmp_path / "scenes" / "A", "T33_A", seed=4)
    make_scene(tmp_path / "scenes" / "B", "T33_B", seed=5)
    model = tiny_model_artifact(tmp_path / "model")
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, ["-q", "predict", str(tmp_path / "scenes"), "--model",
                                      str(model), "--out", str(out), "--band-files",
                                      "B02,B03,B04,B11", "--threads", "1"])  # fmt: skip
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [Path(r["outputs"][0]).name for r in records] == [
        "T33_A_classes.tif",
        "T33_B_classes.tif",
    ]
    with rasterio.open(out / "T33_A_classes.tif") as src:
        assert src.shape == (96, 96) and src.res == (10.0, 10.0)
