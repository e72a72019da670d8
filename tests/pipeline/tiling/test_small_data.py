"""Small data: tile chooses a split whose validation is not empty, or refuses before writing."""

import logging

import numpy as np
import pytest
import rasterio
import zarr
from click.testing import CliRunner
from rasterio.transform import from_origin

from terraseg.pipeline.classes import class_table
from terraseg.pipeline.errors import ConfigError, InputError
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
from terraseg.workflows.cli.main import cli

TABLE = class_table([(0, "a", (0, 0, 0)), (1, "b", (9, 9, 9))])
BLOCK = 512.0  # map units of a split block of 4 tiles of 128 px at 1 m


def small_scene(folder, name="small", shape=(349, 352), origin=(1000 * BLOCK + 20, 9000 * BLOCK)):
    """A 349 x 352 scene at 1 m inside one split block of 4 x 128 px (defaults at 1 m: 4 x 512)."""
    folder.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "height": shape[0], "width": shape[1], "crs": "EPSG:32633",
               "transform": from_origin(origin[0], origin[1] - 20, 1, 1)}  # fmt: skip
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    with rasterio.open(folder / f"{name}.tif", "w", count=3, dtype="uint8", **profile) as dst:
        dst.write(np.stack([(rows + cols) % 250] * 3).astype(np.uint8))
    with rasterio.open(folder / f"{name}_labels.tif", "w", count=1, dtype="uint8",
                       **profile) as dst:  # fmt: skip
        dst.write(((cols // 50) % 2).astype(np.uint8)[None])
    return folder / f"{name}.tif", folder / f"{name}_labels.tif"


def tile_here(store, image, labels, **settings):
    config = TileConfig(**settings)
    plans, table = prepare_tiling([image], label_rasters=[labels], classes=TABLE, config=config)
    return tile_scenes(store, plans, config, table, InProcessExecutor())


def test_one_tile_is_refused_in_one_line_before_anything_is_written(tmp_path):
    image, labels = small_scene(tmp_path)
    store = tmp_path / "store.zarr"
    for settings in ({}, {"tile_size": 352}):  # the defaults; a tile as large as the scene
        with pytest.raises((InputError, ConfigError)) as caught:
            tile_here(store, image, labels, **settings)
        message = str(caught.value)
        assert "\n" not in message and "--tile-size" in message
        assert not store.exists()
    with pytest.raises(InputError) as caught:
        tile_here(store, image, labels, tile_size=352)
    assert "all 1 tile of the store lie in one split block" in str(caught.value)
    assert "--val-fraction 0" in str(caught.value)
    summary = tile_here(store, image, labels, tile_size=352, val_fraction=0.0)
    assert (summary["tiles"], summary["val"]) == (1, 0)  # no validation asked for: fine


def test_the_split_block_is_lowered_until_validation_has_ground(tmp_path, caplog):
    image, labels = small_scene(tmp_path)
    store = tmp_path / "store.zarr"
    with caplog.at_level(logging.WARNING, logger="terraseg.pipeline.tiling.split"):
        summary = tile_here(store, image, labels, tile_size=128)
    assert summary["split_block"] == 3 and summary["val"] >= 1 and summary["train"] >= 1
    (line,) = [r.getMessage() for r in caplog.records if "instead of" in r.getMessage()]
    assert line == (
        "split blocks of 3 tiles instead of 4: with 4, all 9 tiles lie in one split block "
        "and validation would be empty"
    )
    split = zarr.open_group(str(store), mode="r").attrs["split"]
    assert split["block_tiles"] == 3 and split["blocks"] >= 2
    assert split["grids"][0]["block_size"] == 384.0


def test_scenes_kept_in_the_store_count_towards_the_split(tmp_path):
    store = tmp_path / "store.zarr"
    first = small_scene(tmp_path, "first", shape=(128, 128))
    tile_here(store, *first, tile_size=128, val_fraction=0.0)
    far = (1010 * BLOCK + 20, 9000 * BLOCK)  # another split block of 4 x 128 m
    second = small_scene(tmp_path, "second", shape=(128, 128), origin=far)
    summary = tile_here(store, *second, tile_size=128)  # with the kept scene: two blocks
    assert (summary["scenes"], summary["kept"], summary["split_block"]) == (2, 1, 4)
    assert summary["val"] == 1


def test_the_command_says_it_in_one_line(tmp_path):
    image, labels = small_scene(tmp_path)
    (tmp_path / "classes.yaml").write_text("classes:\n- {id: 0, name: a}\n- {id: 1, name: b}\n")
    out = tmp_path / "s.zarr"
    command = ["tile", str(image), "--labels", str(labels), "--out", str(out), "--workers", "1"]
    result = CliRunner().invoke(cli, command)  # the defaults: one tile at most
    assert result.exit_code == 1
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and "--tile-size" in line
