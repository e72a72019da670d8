"""The split by ground: rasters of the same ground share it, whatever their names and order."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine

from terraseg.pipeline.grid import Window, plan_tiles
from terraseg.pipeline.store import export_tile_index, open_existing, tile_index
from terraseg.pipeline.tiling import TileConfig
from terraseg.pipeline.tiling.split import SceneTiles, assign_splits
from terraseg.pipeline.training.dataset import read_store_info
from tests.helpers import tiny_scenes
from tests.pipeline.tiling.stores import tile_here

TILE = 32
SETTINGS = {"tile_size": TILE, "split_block": 2, "val_fraction": 0.3, "seed": 3}


@pytest.fixture(scope="module")
def survey(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One scene (512 m x 512 m at 2 m) flown twice, and once more half a tile off."""
    folder = tmp_path_factory.mktemp("survey")
    synth = tiny_scenes(folder / "synth", scenes=1, size="256x256")
    first, second = folder / "survey_2019.tif", folder / "survey_2021.tif"
    shutil.copy(synth.scenes[0], first)
    shutil.copy(synth.scenes[0], second)
    shifted = folder / "offset_flight.tif"
    shutil.copy(synth.scenes[0], shifted)
    with rasterio.open(shifted, "r+") as dst:
        t = dst.transform
        half = TILE / 2 * t.a  # half a tile of ground, in metres
        dst.transform = Affine(t.a, 0, t.c + half, 0, t.e, t.f - half)
    return {"first": first, "second": second, "shifted": shifted, "labels": synth.labels[0],
            "classes": synth.classes}  # fmt: skip


def footprints(store: Path, out: Path) -> gpd.GeoDataFrame:
    """The store's tiles.gpkg, as the CLI's --export-index writes it."""
    export_tile_index(store, out)
    return gpd.read_file(out)


def test_no_ground_is_in_both_training_and_validation(survey, tmp_path):
    store = tmp_path / "survey.zarr"
    images = [survey["first"], survey["second"], survey["shifted"]]
    summary = tile_here(store, images, survey["labels"], survey["classes"], **SETTINGS)
    assert min(summary["train"], summary["val"], summary["buffer"]) >= 20
    tiles = footprints(store, tmp_path / "tiles.gpkg")
    assert set(tiles.split) == {"train", "val", "buffer"}
    train = shapely.union_all(tiles[tiles.split == "train"].geometry.values)
    val = shapely.union_all(tiles[tiles.split == "val"].geometry.values)
    assert shapely.area(shapely.intersection(train, val)) == 0.0
    # a buffer of one tile: training ground stays a tile width (64 m) away from validation
    assert shapely.distance(train, val) >= TILE * 2.0 - 1e-6
    index = tile_index(open_existing(store))
    by_scene = {name: index[index.scene == name] for name in ("survey_2019", "survey_2021")}
    assert (
        by_scene["survey_2019"][["row", "col", "split", "block"]]
        .reset_index(drop=True)
        .equals(by_scene["survey_2021"][["row", "col", "split", "block"]].reset_index(drop=True))
    )
    # without the buffer, the raster half a tile off puts training pixels on validation ground
    plain = tmp_path / "plain.zarr"
    tile_here(plain, images, survey["labels"], survey["classes"], **SETTINGS, split_buffer=False)
    tiles = footprints(plain, tmp_path / "plain.gpkg")
    train = shapely.union_all(tiles[tiles.split == "train"].geometry.values)
    val = shapely.union_all(tiles[tiles.split == "val"].geometry.values)
    assert shapely.area(shapely.intersection(train, val)) > 0
    info = read_store_info(store)  # training reads train and val tiles, never buffer ones
    used = {(t.scene, t.row, t.col) for t in info.train + info.val}
    left_out = index[index.split == "buffer"]
    assert used and not used & set(zip(left_out.scene, left_out.row, left_out.col, strict=True))
    assert {(t.scene, t.row, t.col) for t in info.val} <= set(
        index[index.split == "val"][["scene", "row", "col"]].itertuples(index=False, name=None)
    )
    attrs = open_existing(store).attrs["split"]
    assert attrs["by"] == "ground" and attrs["buffer"] is True
    assert attrs["grids"] == [
        {"key": "EPSG:32633", "origin": [0.0, 0.0], "block_size": 128.0, "tile_size": 64.0}
    ]


def test_the_split_does_not_depend_on_file_names_or_input_order(survey, tmp_path):
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    copies = [renamed / name for name in ("zz_late.tif", "aa_early.tif", "mm_middle.tif")]
    sources = (survey["shifted"], survey["second"], survey["first"])
    for source, copy in zip(sources, copies, strict=True):
        shutil.copy(source, copy)
    splits = []
    for name, images in (
        ("given", [survey["first"], survey["second"], survey["shifted"]]),
        ("renamed", copies),
    ):
        store = tmp_path / f"{name}.zarr"
        tile_here(store, images, survey["labels"], survey["classes"], **SETTINGS)
        tiles = footprints(store, tmp_path / f"{name}.gpkg")
        bounds = np.round(shapely.bounds(tiles.geometry.values), 6)
        splits.append(sorted(zip(map(tuple, bounds), tiles.split, tiles.block, strict=True)))
    assert splits[0] == splits[1]


def scene(name: str, transform: Affine, shape: tuple[int, int], crs: str | None = "EPSG:32633"):
    return SceneTiles(name, crs, tuple(transform)[:6], plan_tiles(shape, TILE))


def test_tiles_take_the_block_of_their_centre_and_overlapping_scenes_share_it():
    config = TileConfig(**SETTINGS, split_buffer=False)
    base = Affine(2.0, 0, 1000.0, 0, -2.0, 2000.0)
    finer = Affine(1.0, 0, 1000.0, 0, -1.0, 2000.0)  # the same ground at twice the resolution
    moved = Affine(2.0, 0, 1064.0, 0, -2.0, 2000.0)  # a tile (64 m) east of base
    scenes = [
        scene("a", base, (96, 192)),
        scene("b", finer, (192, 192)),
        scene("c", moved, (96, 96)),
    ]
    split = assign_splits(scenes, config)
    assert split.grids[0].side == 2 * TILE * 1.0  # the finest pixel sets the block size
    for (name, row, col), block in split.blocks.items():
        pixel = 1.0 if name == "b" else 2.0
        x = (1064.0 if name == "c" else 1000.0) + (col + TILE / 2) * pixel
        y = 2000.0 - (row + TILE / 2) * pixel
        assert block == f"EPSG:32633/{int(np.floor(x / 64))}/{int(np.floor(y / 64))}"
    for (name, row, col), value in split.tiles.items():
        if name == "c":  # the same ground as a's tile one tile to the east
            assert value == split.tiles[("a", row, col + TILE)]
            assert split.blocks[("c", row, col)] == split.blocks[("a", row, col + TILE)]
    assert len(set(split.tiles.values())) == 2


def test_seed_changes_the_split_and_validation_is_never_empty():
    shape, origin = (64, 64), Affine(2.0, 0, 0.0, 0, -2.0, 128.0)  # two tiles a side
    one_block = assign_splits([scene("s", origin, shape)], TileConfig(**SETTINGS))
    assert set(one_block.tiles.values()) == {"train"}  # one block: nothing to validate on
    wide = assign_splits([scene("s", origin, (64, 128))], TileConfig(**SETTINGS))
    assert wide.count("val") == 4  # two blocks: one is validation
    big = [scene("s", origin, (512, 512))]
    splits = {seed: assign_splits(big, TileConfig(**{**SETTINGS, "seed": seed})) for seed in (1, 2)}
    assert splits[1].tiles != splits[2].tiles
    assert assign_splits(big, TileConfig(**{**SETTINGS, "seed": 1})).tiles == splits[1].tiles


def test_buffer_is_dropped_with_a_warning_when_it_would_empty_training(caplog):
    config = TileConfig(**{**SETTINGS, "split_block": 1})
    two_blocks = [scene("s", Affine(2.0, 0, 0.0, 0, -2.0, 64.0), (32, 64))]
    with caplog.at_level(logging.WARNING):
        split = assign_splits(two_blocks, config)
    assert not split.buffered and split.count("train") == split.count("val") == 1
    assert "no buffer" in caplog.text


def test_buffer_leaves_out_training_tiles_next_to_validation():
    big = [scene("s", Affine(2.0, 0, 0.0, 0, -2.0, 0.0), (512, 512))]
    split = assign_splits(big, TileConfig(**SETTINGS))
    unbuffered = assign_splits(big, TileConfig(**SETTINGS, split_buffer=False))
    assert split.buffered
    val = {t for t, s in unbuffered.tiles.items() if s == "val"}
    for tile, value in split.tiles.items():
        _, row, col = tile
        next_to_val = any(
            ("s", row + dr, col + dc) in val for dr in (-TILE, 0, TILE) for dc in (-TILE, 0, TILE)
        )
        expected = unbuffered.tiles[tile] if tile in val or not next_to_val else "buffer"
        assert value == expected


def test_scenes_without_crs_are_split_on_their_own_pixel_grid(caplog):
    plain = Affine.identity()
    with caplog.at_level(logging.WARNING):
        split = assign_splits(
            [scene("x", plain, (256, 256), None), scene("y", plain, (256, 256), None)],
            TileConfig(**SETTINGS),
        )
    assert "2 scenes have no CRS (x, y)" in caplog.text
    assert {g.key for g in split.grids} == {"pixels:x", "pixels:y"}
    assert split.blocks[("x", 64, 96)] == "pixels:x/1/1"  # centre (112, 80) in pixels


def test_overlapping_scenes_in_different_crs_are_named(caplog):
    utm = scene("utm", Affine(2.0, 0, 500000.0, 0, -2.0, 5000000.0), (64, 64))
    mercator = scene("merc", Affine(2.0, 0, 1669820.0, 0, -2.0, 5645700.0), (64, 64), "EPSG:3857")
    with caplog.at_level(logging.WARNING):
        assign_splits([utm, mercator], TileConfig(**SETTINGS))
    assert "scenes in different CRSs overlap (merc and utm; 1 pairs in all)" in caplog.text


def test_window_ids_match_the_tile_index():
    windows = plan_tiles((100, 70), TILE)
    assert Window(68, 38, TILE, TILE) in windows  # the last row and column shifted inward
    split = assign_splits([scene("s", Affine(2.0, 0, 0, 0, -2.0, 0), (100, 70))], TileConfig())
    assert set(split.tiles) == {("s", w.row_off, w.col_off) for w in windows}
