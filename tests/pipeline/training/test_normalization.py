"""Per-band normalization: percentiles or mean/std, nodata read as the band centre, old runs."""

import numpy as np
import pytest

from terraseg.pipeline.artifact import Normalization
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.session import as_checkpointed

STATS = [
    {"mean": 500.0, "std": 900.0, "p2": 100.0, "p98": 300.0},  # a band with bright clouds
    {"mean": 10.0, "std": 2.0, "p2": 6.0, "p98": 14.0},
]


def test_percentile_scaling_ignores_the_tails():
    norm = Normalization.from_statistics(STATS, "percentile")
    assert norm.mean == [200.0, 10.0] and norm.std == [50.0, 2.0]
    image = np.array([100.0, 300.0, 5000.0])[None, :, None].repeat(2, axis=0)
    out = norm.apply(image)[0, :, 0]
    np.testing.assert_allclose(out, [-2.0, 2.0, 96.0])  # the bulk spans +-2


def test_mean_std_and_missing_percentiles_fall_back():
    assert Normalization.from_statistics(STATS, "mean_std").std == [900.0, 2.0]
    no_percentiles = [{**s, "p2": float("nan")} for s in STATS]
    assert Normalization.from_statistics(no_percentiles, "percentile").mean == [500.0, 10.0]


def test_a_flat_band_keeps_its_std():
    flat = [{"mean": 3.0, "std": 0.5, "p2": 3.0, "p98": 3.0}]
    assert Normalization.from_statistics(flat, "percentile").std == [0.5]


@pytest.mark.parametrize(
    ("saved_model", "saved_data", "full", "layers", "method"),
    [({}, {}, False, 1, "mean_std"),
     ({"full_resolution": True}, {"normalization": "percentile"}, True, 1, "percentile"),
     ({"full_resolution": True, "pixel_layers": 2}, {}, True, 2, "mean_std")],
)  # fmt: skip
def test_a_resumed_run_keeps_what_its_checkpoint_was_trained_with(
    saved_model, saved_data, full, layers, method
):
    checkpoint = {"model_config": {"backbone": "mobilenetv2", **saved_model},
                  "config": {"data": saved_data}}  # fmt: skip
    config = as_checkpointed(TrainConfig(), checkpoint)
    assert config.model.full_resolution is full and config.model.pixel_layers == layers
    assert config.data.normalization == method


def test_training_reads_nodata_as_the_band_centre(tmp_path):
    import zarr

    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.executor import InProcessExecutor
    from terraseg.pipeline.store import array
    from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
    from terraseg.pipeline.training.dataset import StoreReader, read_store_info
    from tests.helpers import tiny_scenes

    scenes = tiny_scenes(tmp_path / "scenes", labels="raster", nodata="border")
    config = TileConfig.model_validate({"tile_size": 64, "split_block": 1})
    plans, table = prepare_tiling(
        scenes.scenes, label_rasters=scenes.labels, classes=read_classes(scenes.classes),
        config=config,
    )  # fmt: skip
    tile_scenes(tmp_path / "s.zarr", plans, config, table, InProcessExecutor())
    info = read_store_info(tmp_path / "s.zarr")
    name = info.train[0].scene
    group = zarr.open_group(str(tmp_path / "s.zarr"), path=f"scenes/{name}", mode="r")
    valid = np.asarray(array(group, "valid")[:])
    assert not valid.all()  # the border is nodata
    image, _ = StoreReader(info.path, info.normalization).read(name, 0, 0, *valid.shape)
    assert (image.numpy()[:, ~valid] == 0).all()
    assert (image.numpy()[:, valid] != 0).any()
