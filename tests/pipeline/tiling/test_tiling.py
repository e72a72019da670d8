import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import zarr
from dask.distributed import Client, LocalCluster
from rasterio.features import rasterize
from rasterio.warp import Resampling, calculate_default_transform, reproject

from terraseg.pipeline.classes import read_classes
from terraseg.pipeline.errors import CRSError, InputError, RasterReadError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.store import export_tile_index, open_existing, tile_index
from terraseg.pipeline.tiling import TileConfig, assign_splits, prepare_tiling, tile_scenes
from terraseg.pipeline.tiling.split import SceneTiles
from terraseg.workflows.executor import DaskExecutor
from tests.helpers import tiny_scenes

CONFIG = TileConfig(tile_size=64, split_block=1, val_fraction=0.25)


@pytest.fixture(scope="module")
def client():
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_scenes(tmp_path_factory.mktemp("scenes"), nodata="holes")


def tile(client, out, images, config=CONFIG, **sources):
    classes = sources.pop("classes", None)
    plans, table = prepare_tiling(images, classes=classes, config=config, **sources)
    return tile_scenes(out, plans, config, table, DaskExecutor(client))


def scene_arrays(store, name):
    group = zarr.open_group(str(store), path=f"scenes/{name}", mode="r")
    return group["image"][...], group["label"][...], group["valid"][...], group.attrs.asdict()


@pytest.fixture(scope="module")
def vector_store(client, synth, tmp_path_factory):
    out = tmp_path_factory.mktemp("stores") / "vector.zarr"
    summary = tile(
        client,
        out,
        synth.scenes,
        vector_labels=synth.labels[0],
        classes=read_classes(synth.classes),
    )
    return out, summary


def test_store_layout_and_attributes(vector_store, synth):
    store, summary = vector_store
    root = open_existing(store)
    assert root.attrs["tile_size"] == 64
    assert [c["name"] for c in root.attrs["classes"]][:2] == ["background", "building"]
    assert summary["scenes"] == 2 and summary["tiles"] == 2 * 12
    image, _, _, attrs = scene_arrays(store, "scene_000")
    group = zarr.open_group(str(store), path="scenes/scene_000", mode="r")
    assert group["image"].chunks == (4, 64, 64) and group["label"].chunks == (64, 64)
    with rasterio.open(synth.scenes[0]) as src:
        np.testing.assert_array_equal(image, src.read())
        assert rasterio.crs.CRS.from_wkt(attrs["crs"]) == src.crs
        assert attrs["transform"] == list(src.transform)[:6]
        assert attrs["nodata"] == src.nodata
    assert attrs["band_names"] == ["red", "green", "blue", "nir"]
    assert attrs["source"]["path"] == str(synth.scenes[0].resolve())
    assert attrs["complete"] and not attrs["smaller_than_tile"]


def test_vector_labels_match_direct_rasterization_and_nodata_is_ignored(vector_store, synth):
    store, _ = vector_store
    labels = gpd.read_file(synth.labels[0])
    for path in synth.scenes:
        _, label, valid, _ = scene_arrays(store, path.stem)
        with rasterio.open(path) as src:
            mine = labels[labels.scene == path.name]
            direct = rasterize(
                zip(mine.geometry, mine["class"], strict=True),
                out_shape=src.shape,
                transform=src.transform,
                fill=0,
                dtype="uint8",
            )
            nodata = (src.read() == 0).all(axis=0)
        assert nodata.any()
        np.testing.assert_array_equal(valid, ~nodata)
        np.testing.assert_array_equal(label[~nodata], direct[~nodata])
        assert (label[nodata] == 255).all()


def test_statistics_match_numpy_over_valid_pixels(vector_store, synth):
    store, _ = vector_store
    stats = open_existing(store).attrs["statistics"]
    pixels = []
    for path in synth.scenes:
        with rasterio.open(path) as src:
            image = src.read()
        pixels.append(image[:, (image != 0).any(axis=0)])
    values = np.concatenate(pixels, axis=1).astype(np.float64)
    for band, entry in enumerate(stats):
        assert entry["count"] == values.shape[1]
        assert entry["mean"] == pytest.approx(values[band].mean(), rel=1e-9)
        assert entry["std"] == pytest.approx(values[band].std(), rel=1e-9)
        assert [entry["p2"], entry["p98"]] == pytest.approx(np.percentile(values[band], [2, 98]))


def stored_scenes(store):
    """Each scene of a store as the split sees it: CRS, transform and tiles."""
    root = open_existing(store)
    scenes = []
    for name in sorted(set(tile_index(root).scene)):
        attrs = root[f"scenes/{name}"].attrs.asdict()
        windows = [Window(t["row"], t["col"], t["height"], t["width"]) for t in attrs["tiles"]]
        scenes.append(SceneTiles(name, attrs["crs"], tuple(attrs["transform"]), windows))
    return scenes


def test_split_is_blocked_by_ground_and_deterministic(vector_store):
    index = tile_index(open_existing(vector_store[0]))
    assert {"train", "val"} <= set(index.split) <= {"train", "val", "buffer"}
    scenes = stored_scenes(vector_store[0])
    stored = assign_splits(scenes, CONFIG)
    assert {(s, r, c): v for s, r, c, v in index[["scene", "row", "col", "split"]].values} == (
        stored.tiles
    )
    assert set(index.block) == set(stored.blocks.values())
    config = TileConfig(tile_size=64, split_block=2, val_fraction=0.3, seed=5)
    split = assign_splits(scenes, config)
    assert split.tiles == assign_splits(scenes, config).tiles
    for block in set(split.blocks.values()):  # a block's tiles share its split (or are buffer)
        values = {split.tiles[t] for t, b in split.blocks.items() if b == block}
        assert values in ({"val"}, {"train"}, {"buffer"}, {"train", "buffer"})
    assert assign_splits(scenes, config.model_copy(update={"seed": 6})).tiles != split.tiles
    assert {"val_fraction", "class_counts"} - set(index.columns) == {"val_fraction"}


def test_tile_index_exports_to_geopackage(vector_store, tmp_path):
    count = export_tile_index(vector_store[0], tmp_path / "tiles.gpkg")
    frame = gpd.read_file(tmp_path / "tiles.gpkg")
    assert count == len(frame) == 24
    assert frame.crs.to_epsg() == 32633
    assert {"scene", "split", "block", "valid_fraction", "building", "road"} <= set(frame.columns)
    assert frame.geometry.area.round(3).isin([128.0 * 128.0]).all()  # 64 px at 2 m


def test_reprojected_vector_labels_land_on_the_same_pixels(client, vector_store, tmp_path):
    moved = tiny_scenes(tmp_path / "moved", nodata="holes", labels_crs="EPSG:4326")
    out = tmp_path / "moved.zarr"
    tile(
        client,
        out,
        moved.scenes,
        vector_labels=moved.labels[0],
        classes=read_classes(moved.classes),
    )
    for name in ("scene_000", "scene_001"):
        _, reference, _, _ = scene_arrays(vector_store[0], name)
        _, label, _, _ = scene_arrays(out, name)
        assert (label == reference).mean() >= 0.99


def test_label_rasters_same_grid_and_warped(client, vector_store, tmp_path):
    synth = tiny_scenes(tmp_path / "raster", nodata="holes", labels="raster")
    classes = read_classes(synth.classes)
    out = tmp_path / "raster.zarr"
    tile(client, out, synth.scenes, label_rasters=synth.labels, classes=classes)
    for name in ("scene_000", "scene_001"):
        _, reference, _, _ = scene_arrays(vector_store[0], name)
        _, label, _, _ = scene_arrays(out, name)
        assert (label == reference).mean() >= 0.999
    # the same labels on another grid (Web Mercator, 1 m pixels), warped back by nearest neighbour
    warped_dir = tmp_path / "warped"
    warped_dir.mkdir()
    for path in synth.labels:
        with rasterio.open(path) as src:
            transform, width, height = calculate_default_transform(
                src.crs, "EPSG:3857", src.width, src.height, *src.bounds, resolution=1.0
            )
            profile = {
                **src.profile,
                "crs": "EPSG:3857",
                "transform": transform,
                "width": width,
                "height": height,
            }
            with rasterio.open(warped_dir / path.name, "w", **profile) as dst:
                reproject(
                    rasterio.band(src, 1), rasterio.band(dst, 1), resampling=Resampling.nearest
                )
    out2 = tmp_path / "warped.zarr"
    tile(client, out2, synth.scenes, label_rasters=sorted(warped_dir.iterdir()), classes=classes)
    for name in ("scene_000", "scene_001"):
        _, reference, valid, _ = scene_arrays(vector_store[0], name)
        _, label, _, _ = scene_arrays(out2, name)
        assert (label[valid] == reference[valid]).mean() >= 0.97


def test_image_mask_pairs(client, synth, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(48, 48), (80, 70), (64, 64)]):
        image = rng.integers(1, 255, (3, *size), dtype=np.uint8)
        mask = rng.integers(0, 5, size, dtype=np.uint8)
        profile = {"driver": "PNG", "width": size[1], "height": size[0], "dtype": "uint8"}
        with rasterio.open(images / f"tile_{i}.png", "w", count=3, **profile) as dst:
            dst.write(image)
        with rasterio.open(masks / f"tile_{i}.png", "w", count=1, **profile) as dst:
            dst.write(mask[None])
    out = tmp_path / "pairs.zarr"
    summary = tile(client, out, [], pairs=(images, masks), classes=read_classes(synth.classes))
    assert summary["scenes"] == 3
    with rasterio.open(masks / "tile_1.png") as src:
        expected = src.read(1)
    _, label, valid, attrs = scene_arrays(out, "tile_1")
    np.testing.assert_array_equal(label, expected)
    assert valid.all() and attrs["smaller_than_tile"] is False
    assert scene_arrays(out, "tile_0")[3]["smaller_than_tile"] is True


def test_rerun_skips_and_changed_source_is_redone(client, tmp_path):
    synth = tiny_scenes(tmp_path / "s")
    classes = read_classes(synth.classes)
    out = tmp_path / "rerun.zarr"
    tile(client, out, synth.scenes, vector_labels=synth.labels[0], classes=classes)
    again = tile(client, out, synth.scenes, vector_labels=synth.labels[0], classes=classes)
    assert again["skipped"] == 2
    with rasterio.open(synth.scenes[1], "r+") as dst:  # edit one scene in place
        dst.write(np.full((4, 8, 8), 7, dtype=np.uint8), window=((0, 8), (0, 8)))
    third = tile(client, out, synth.scenes, vector_labels=synth.labels[0], classes=classes)
    assert third["skipped"] == 1
    image, _, _, _ = scene_arrays(out, "scene_001")
    assert (image[:, :8, :8] == 7).all()


def test_killed_run_completes_on_rerun(tmp_path):
    synth = tiny_scenes(tmp_path / "s", size="768x768", scenes=1)
    out = tmp_path / "killed.zarr"
    command = [
        str(Path(sys.executable).parent / "terraseg"),
        "-q",
        "tile",
        str(synth.scenes[0]),
        "--labels",
        str(synth.labels[0]),
        "--out",
        str(out),
        "--tile-size",
        "32",
        "--workers",
        "1",
    ]
    process = subprocess.Popen(command, start_new_session=True)
    chunks = out / "scenes" / "scene_000" / "image" / "c"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (chunks.exists() and any(chunks.rglob("*"))):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    root = zarr.open_group(str(out), mode="r")
    assert root.attrs["complete"] is False
    assert zarr.open_group(str(out), path="scenes/scene_000", mode="r").attrs["complete"] is False
    with pytest.raises(InputError, match="tiling did not finish"):
        open_existing(out)
    subprocess.run(command, check=True)
    image, _, _, attrs = scene_arrays(out, "scene_000")
    with rasterio.open(synth.scenes[0]) as src:
        np.testing.assert_array_equal(image, src.read())
    assert attrs["complete"] and open_existing(out).attrs["complete"]


def test_real_scheduler_and_workers_equal_local_cluster(
    dask_scheduler_address, vector_store, synth, tmp_path
):
    out = tmp_path / "remote.zarr"
    with Client(dask_scheduler_address) as remote:
        tile(
            remote,
            out,
            synth.scenes,
            vector_labels=synth.labels[0],
            classes=read_classes(synth.classes),
        )
    for name in ("scene_000", "scene_001"):
        for a, b in zip(
            scene_arrays(out, name)[:3], scene_arrays(vector_store[0], name)[:3], strict=True
        ):
            np.testing.assert_array_equal(a, b)
    assert (
        open_existing(out).attrs["statistics"] == open_existing(vector_store[0]).attrs["statistics"]
    )
    assert tile_index(open_existing(out)).equals(tile_index(open_existing(vector_store[0])))


class TestBadInput:
    def check(self, tmp_path, error, match, images, **sources):
        out = tmp_path / "bad.zarr"
        with pytest.raises(error, match=match):
            prepare_tiling(images, config=CONFIG, **sources)
        assert not out.exists()

    def test_unreadable_raster(self, tmp_path, synth):
        bad = tmp_path / "broken.tif"
        bad.write_text("not a tiff")
        self.check(
            tmp_path,
            RasterReadError,
            r"broken\.tif: not a readable raster",
            [bad],
            vector_labels=synth.labels[0],
        )

    def test_raster_without_crs_and_vector_labels(self, tmp_path, synth):
        plain = tmp_path / "plain.tif"
        with rasterio.open(
            plain, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8"
        ) as dst:
            dst.write(np.ones((1, 8, 8), dtype=np.uint8))
        self.check(
            tmp_path,
            CRSError,
            r"plain\.tif: raster has no CRS",
            [plain],
            vector_labels=synth.labels[0],
        )

    def test_labels_without_crs(self, tmp_path, synth):
        frame = gpd.read_file(synth.labels[0]).set_crs(None, allow_override=True)
        path = tmp_path / "nocrs.gpkg"
        frame.to_file(path)
        self.check(
            tmp_path, CRSError, r"nocrs\.gpkg: labels have no CRS", synth.scenes, vector_labels=path
        )

    def test_missing_class_column_lists_columns(self, tmp_path, synth):
        with pytest.raises(
            InputError,
            match=r"labels\.gpkg: no column 'kind' \(columns: class, class_name, scene\)",
        ):
            prepare_tiling(
                synth.scenes, vector_labels=synth.labels[0], config=TileConfig(class_column="kind")
            )

    def test_class_names_not_in_classes_file(self, tmp_path, synth):
        frame = gpd.read_file(synth.labels[0])
        frame.loc[0, "class_name"] = "swimming pool"
        path = tmp_path / "named.gpkg"
        frame.to_file(path)
        with pytest.raises(InputError, match="class names not in the classes file: swimming pool"):
            prepare_tiling(
                synth.scenes,
                vector_labels=path,
                classes=read_classes(synth.classes),
                config=TileConfig(class_column="class_name"),
            )

    def test_different_band_counts(self, tmp_path, synth):
        three = tmp_path / "three.tif"
        with rasterio.open(synth.scenes[0]) as src:
            profile = {**src.profile, "count": 3}
            with rasterio.open(three, "w", **profile) as dst:
                dst.write(src.read([1, 2, 3]))
        self.check(
            tmp_path,
            InputError,
            "different band counts",
            [synth.scenes[0], three],
            vector_labels=synth.labels[0],
        )

    def test_labels_overlapping_no_raster(self, tmp_path, synth):
        frame = gpd.read_file(synth.labels[0])
        frame = frame.set_geometry(frame.geometry.translate(50_000, 0))
        path = tmp_path / "elsewhere.gpkg"
        frame.to_file(path)
        self.check(
            tmp_path,
            InputError,
            r"elsewhere\.gpkg: no label polygon overlaps any raster \(scene_000\.tif",
            synth.scenes,
            vector_labels=path,
        )
