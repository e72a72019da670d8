"""The nodata setting: a value or none, overriding what rasters declare, in every stage.

The case: a Landsat scene that declares nodata 0 where 0 is also dark sea, and
fill of -9999 it does not declare.
"""

import numpy as np
import pytest
import rasterio
import zarr
from click.testing import CliRunner
from rasterio.transform import from_origin

from terraseg.pipeline.classes import class_table
from terraseg.pipeline.errors import ConfigError, InputError
from terraseg.pipeline.evaluation import EvaluateConfig, evaluate
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.grid import Window
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.driver import predict_files
from terraseg.pipeline.prediction.inference import cached_model
from terraseg.pipeline.prediction.job import needs_work, plan_file
from terraseg.pipeline.rasters import check_nodata_fits, open_raster, read_window
from terraseg.pipeline.settings import build_config
from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_model_artifact

PROFILE = {
    "driver": "GTiff",
    "height": 32,
    "width": 32,
    "crs": "EPSG:32613",
    "transform": from_origin(336000, 4462000, 30, 30),
}
TABLE = class_table([(0, "clear", (0, 0, 0)), (1, "water", (0, 0, 200))])


def landsat_like(folder, dtype="int16", declared=0, fill=-9999):
    """Dark sea (0) in the left columns, fill in the first rows, land elsewhere."""
    image = np.full((4, 32, 32), 120, dtype)
    image[:, :, :8] = 0  # dark sea, 0 in every band
    image[:, :2, :] = fill
    path = folder / f"scene_{dtype}.tif"
    options = {"count": 4, "dtype": dtype, "nodata": declared, "photometric": "MINISBLACK"}
    with rasterio.open(path, "w", **options, **PROFILE) as dst:
        dst.write(image)
    labels = np.where(np.arange(32) < 8, 1, 0).astype(np.uint8)[None].repeat(32, axis=0)
    with rasterio.open(folder / f"scene_{dtype}_labels.tif", "w", count=1, dtype="uint8",
                       **PROFILE) as dst:  # fmt: skip
        dst.write(labels[None])
    return path, folder / f"scene_{dtype}_labels.tif"


def test_reading_with_a_value_with_none_and_as_declared(tmp_path):
    path, _ = landsat_like(tmp_path)
    with open_raster(path) as src:
        window = Window(0, 0, 32, 32)
        _, declared = read_window(src, window)
        _, fill = read_window(src, window, nodata=-9999.0)
        _, everything = read_window(src, window, nodata="none")
    assert not declared[5, :8].any() and declared[:2, 10:].all()  # sea lost, fill kept
    assert fill[5, :8].all() and not fill[:2].any()  # sea kept, fill dropped
    assert everything.all()


def test_a_value_the_type_cannot_hold_is_refused(tmp_path):
    with pytest.raises(InputError, match="nodata -9999 is not a value of this uint8 raster"):
        check_nodata_fits(-9999.0, "uint8", tmp_path / "x.tif")
    check_nodata_fits("none", "uint8", tmp_path / "x.tif")
    check_nodata_fits(float("nan"), "float32", tmp_path / "x.tif")


def test_yaml_key_and_option_values():
    assert build_config(TileConfig, {"nodata": "none"}).nodata == "none"
    assert build_config(PredictConfig, {"nodata": -9999}).nodata == -9999.0
    assert build_config(EvaluateConfig, {}).nodata is None
    with pytest.raises(ConfigError, match="nodata"):
        build_config(TileConfig, {"nodata": "zero"})
    result = CliRunner().invoke(cli, ["tile", "x.tif", "--labels", "l.tif", "--out", "s.zarr",
                                      "--nodata", "zero"])  # fmt: skip
    assert result.exit_code == 2 and "'zero': give a number (e.g. -9999) or none" in result.output


def _tile(store, image, labels, **settings):
    config = TileConfig(tile_size=16, val_fraction=0.0, **settings)
    plans, table = prepare_tiling([image], label_rasters=[labels], classes=TABLE, config=config)
    return tile_scenes(store, plans, config, table, InProcessExecutor())


def test_tiling_uses_the_setting_records_it_and_redoes_scenes_when_it_changes(tmp_path):
    image, labels = landsat_like(tmp_path)
    store = tmp_path / "store.zarr"
    _tile(store, image, labels)
    scene = zarr.open_group(str(store), mode="r")["scenes/scene_int16"]
    assert not scene["valid"][5, :8].any() and scene["label"][5, 0] == 255
    assert scene.attrs["nodata"] == 0 and "declared_nodata" not in scene.attrs

    assert _tile(store, image, labels, nodata=-9999)["skipped"] == 0  # redone
    scene = zarr.open_group(str(store), mode="r")["scenes/scene_int16"]
    assert scene["valid"][5, :8].all() and scene["label"][5, 0] == 1  # the sea is water
    assert not scene["valid"][:2].any()
    assert scene.attrs["nodata"] == -9999 and scene.attrs["declared_nodata"] == 0
    assert _tile(store, image, labels, nodata=-9999)["skipped"] == 1  # current
    _tile(store, image, labels, nodata="none")
    scene = zarr.open_group(str(store), mode="r")["scenes/scene_int16"]
    assert scene["valid"][...].all() and scene.attrs["nodata"] is None


def test_prediction_reads_with_the_setting_and_redoes_outputs_when_it_changes(tmp_path):
    image, _ = landsat_like(tmp_path, dtype="uint8", fill=0)
    model = str(tiny_model_artifact(tmp_path / "model", tile=32))

    def predicted(**settings):
        config = PredictConfig(threads=1, **settings)
        job = plan_file(model, cached_model(model), image, tmp_path / "out", config)
        current = not needs_work(job)
        (outcome,) = predict_files([job], InProcessExecutor())
        assert outcome.error is None, outcome.error
        with rasterio.open(outcome.outputs[0]) as src:
            return current, src.read(1)

    current, classes = predicted()
    assert not current and (classes[:, :8] == 255).all() and (classes[2:, 8:] != 255).all()
    current, classes = predicted(nodata="none")
    assert not current and (classes != 255).all()  # a changed setting redoes the output
    assert predicted(nodata="none")[0]  # the same setting finds it current


def test_evaluation_counts_truth_declared_nodata_with_none(tmp_path):
    _, labels = landsat_like(tmp_path)
    with rasterio.open(labels, "r+") as dst:
        dst.nodata = 0  # the truth declares 0, which is also the class "clear"
    prediction = tmp_path / "scene_int16_classes.tif"
    with rasterio.open(prediction, "w", count=1, dtype="uint8", nodata=255, **PROFILE) as dst:
        dst.write(np.zeros((1, 32, 32), np.uint8))
    declared = evaluate([prediction], labels, TABLE, EvaluateConfig(block_size=64))
    counted = evaluate([prediction], labels, TABLE, EvaluateConfig(block_size=64, nodata="none"))
    assert declared.matrix.tolist() == [[0, 0], [8 * 32, 0]]
    assert counted.matrix.tolist() == [[24 * 32, 0], [8 * 32, 0]]
