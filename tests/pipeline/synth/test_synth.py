import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

from terraseg.pipeline.classes import read_classes
from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.settings import build_config
from terraseg.pipeline.synth.config import SynthConfig
from terraseg.pipeline.synth.writer import synthesize

SMALL = {"scenes": 2, "size": "384x320", "seed": 3, "resolution": 1.5, "workers": 1}


def make(tmp_path, name="out", **changes):
    config = build_config(SynthConfig, {**SMALL, **changes})
    return synthesize(config, tmp_path / name)


def burn_labels(labels, src):
    return rasterize(
        zip(labels.geometry, labels["class"], strict=True),
        out_shape=src.shape,
        transform=src.transform,
        fill=0,
        dtype="uint8",
    )


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return make(tmp_path_factory.mktemp("synth"))


def test_rasters_are_georeferenced(scenes):
    assert [p.name for p in scenes.scenes] == ["scene_000.tif", "scene_001.tif"]
    with rasterio.open(scenes.scenes[1]) as src:
        assert src.crs.to_epsg() == 32633
        assert (src.width, src.height, src.count, src.dtypes[0]) == (384, 320, 4, "uint8")
        assert src.nodata == 0
        assert src.res == (1.5, 1.5)
        assert src.descriptions == ("red", "green", "blue", "nir")
        assert src.profile["tiled"] and src.profile["compress"] == "deflate"
        assert 400_000 < src.bounds.left < 600_000  # inside UTM zone 33's area of use
        image = src.read()
    assert image.min() >= 1  # 0 is reserved for nodata


def test_labels_have_class_column_and_lie_within_scenes(scenes):
    labels = gpd.read_file(scenes.labels[0])
    assert {"class", "class_name", "scene"} <= set(labels.columns)
    assert set(labels["class"]) <= {1, 2, 3, 4}
    assert labels.crs.to_epsg() == 32633
    assert labels.is_valid.all()
    for path in scenes.scenes:
        with rasterio.open(path) as src:
            footprint = shapely.box(*src.bounds)
        mine = labels[labels.scene == path.name]
        assert len(mine) > 0
        assert shapely.covers(footprint, mine.geometry.values).all()
    table = read_classes(scenes.classes)
    assert table.names == ["background", "building", "road", "water", "vegetation"]


def test_label_classes_do_not_overlap(scenes):
    labels = gpd.read_file(scenes.labels[0])
    total = labels.area.sum()
    union = shapely.union_all(labels.geometry.values).area
    assert union == pytest.approx(total, rel=1e-6)


def test_polygons_rasterize_to_the_painted_class_map(tmp_path):
    out = make(tmp_path, labels="vector")
    raster_out = make(tmp_path, name="raster", labels="raster")
    labels = gpd.read_file(out.labels[0])
    for scene, label_raster in zip(out.scenes, raster_out.labels, strict=True):
        with rasterio.open(scene) as src, rasterio.open(label_raster) as painted:
            burned = burn_labels(labels[labels.scene == scene.name], src)
            class_map = painted.read(1)
            assert painted.transform == src.transform
        assert (burned == class_map).mean() >= 0.99
        assert len(np.unique(class_map)) >= 3


def test_same_seed_same_files_other_seed_other_files(tmp_path, scenes):
    again = make(tmp_path)
    for a, b in zip(scenes.scenes, again.scenes, strict=True):
        assert a.read_bytes() == b.read_bytes()
    first, second = (gpd.read_file(o.labels[0]) for o in (scenes, again))
    assert first.drop(columns="geometry").equals(second.drop(columns="geometry"))
    assert all(shapely.equals_exact(first.geometry.values, second.geometry.values, 0))
    other = make(tmp_path, name="other", seed=4, scenes=1)
    assert other.scenes[0].read_bytes() != scenes.scenes[0].read_bytes()


def test_reprojected_labels_land_on_the_same_ground(tmp_path, scenes):
    out = make(tmp_path, labels_crs="EPSG:4326")
    labels = gpd.read_file(out.labels[0])
    assert labels.crs.to_epsg() == 4326
    back = labels.to_crs(32633)
    reference = gpd.read_file(scenes.labels[0])
    for scene in out.scenes:
        with rasterio.open(scene) as src:
            moved = burn_labels(back[back.scene == scene.name], src)
            truth = burn_labels(reference[reference.scene == scene.name], src)
        assert (moved == truth).mean() >= 0.99


def test_nodata_border_and_uint16(tmp_path):
    out = make(tmp_path, scenes=1, nodata="both", dtype="uint16")
    with rasterio.open(out.scenes[0]) as src:
        image = src.read()
        mask = src.dataset_mask()
    assert image.dtype == np.uint16
    assert image.max() > 255
    empty = (image == 0).all(axis=0)
    assert 0.02 < empty.mean() < 0.6  # a border and holes, most of the scene still valid
    assert empty[0, 0] and empty[-1, -1]  # swath corners are cut
    np.testing.assert_array_equal(mask == 0, empty)


def test_multiblock_painting_matches_one_block(tmp_path):
    one = make(tmp_path, name="one", scenes=1, size=1024, resolution=0.5, block_size=1024)
    many = make(tmp_path, name="many", scenes=1, size=1024, resolution=0.5, block_size=512)
    with rasterio.open(one.scenes[0]) as a, rasterio.open(many.scenes[0]) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_bad_settings_are_reported_with_their_key():
    with pytest.raises(ConfigError, match="crs: CRS 'EPSG:4326' is geographic"):
        build_config(SynthConfig, {"crs": "EPSG:4326"})
    with pytest.raises(ConfigError, match="size: size must be N or WIDTHxHEIGHT"):
        build_config(SynthConfig, {"size": "big"})
    with pytest.raises(ConfigError, match="block_size: block_size must be a multiple of 512"):
        build_config(SynthConfig, {"block_size": 700})
    assert build_config(SynthConfig, {"size": "300x200"}).size == (300, 200)
