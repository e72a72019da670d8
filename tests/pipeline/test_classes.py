"""The class table: declared ids in any order, their model outputs, ignored values, refusals."""

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
import zarr
from rasterio.transform import from_origin

from terraseg.pipeline.artifact import load_artifact, save_artifact
from terraseg.pipeline.classes import ClassTable, class_table, read_classes
from terraseg.pipeline.errors import ConfigError, InputError
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.settings import build_config
from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
from tests.helpers import tiny_model_artifact

PROFILE = {
    "driver": "GTiff",
    "height": 32,
    "width": 32,
    "crs": "EPSG:32633",
    "transform": from_origin(400000, 5800000, 10, 10),
}


def test_land_cover_ids_map_to_outputs_in_id_order(tmp_path):
    path = tmp_path / "classes.yaml"
    path.write_text(
        "classes:\n"
        + "".join(f"- {{id: {i}, name: c{i}}}\n" for i in (7, 1, 2, 3, 4, 5, 6))
        + "ignore: [0]\n"
    )
    table = read_classes(path)
    assert table.ids == [1, 2, 3, 4, 5, 6, 7] and table.num_classes == 7 and table.id_limit == 8
    assert table.class_index() == {str(i): i - 1 for i in range(1, 8)}
    lut = table.index_lut()
    assert lut[0] == 255 and lut[1] == 0 and lut[7] == 6 and lut[8] == 255 and lut[255] == 255
    indices = np.arange(7, dtype=np.uint8)
    np.testing.assert_array_equal(table.id_lut()[indices], np.arange(1, 8))
    assert table.id_lut()[255] == 255
    assert table.missing_ids([0, 1, 7, 8, 255]) == [8]


def test_ids_from_zero_map_to_themselves_as_before():
    table = class_table([(2, "c", (0, 0, 0)), (0, "a", (0, 0, 0)), (1, "b", (0, 0, 0))])
    assert table.class_index() == {"0": 0, "1": 1, "2": 2}
    assert table.names == ["a", "b", "c"] and table.to_dict().keys() == {"classes"}


def test_an_id_both_class_and_ignored_is_refused():
    with pytest.raises(ConfigError, match="ids 0 are both classes and ignored"):
        build_config(ClassTable, {"classes": [{"id": 0, "name": "x"}], "ignore": [0]})


def test_a_model_written_before_ids_were_mapped_loads_with_ids_as_outputs(tmp_path):
    folder = tiny_model_artifact(tmp_path / "model")
    manifest = folder / "terraseg_model.json"
    data = json.loads(manifest.read_text())
    del data["class_index"]  # as written before
    manifest.write_text(json.dumps(data))
    artifact = load_artifact(folder)
    assert artifact.classes.class_index() == {str(i): i for i in range(5)}
    data["class_index"] = {"0": 1, "1": 0, "2": 2, "3": 3, "4": 4}
    manifest.write_text(json.dumps(data))
    with pytest.raises(InputError, match=r"class_index .* does not give the classes in id order"):
        load_artifact(folder)
    save_artifact(artifact, tmp_path / "again")
    assert json.loads((tmp_path / "again" / "terraseg_model.json").read_text())["class_index"]


def _scene(tmp_path, labels, nodata=None):
    image = np.full((4, 32, 32), 100, np.uint8)
    with rasterio.open(tmp_path / "s.tif", "w", count=4, dtype="uint8", **PROFILE) as dst:
        dst.write(image)
    path = tmp_path / "s_labels.tif"
    with rasterio.open(path, "w", count=1, dtype="uint8", nodata=nodata, **PROFILE) as dst:
        dst.write(labels[None])
    return tmp_path / "s.tif", path


def _tile(tmp_path, image, labels, table, config=None):
    config = config or TileConfig(tile_size=16, val_fraction=0.0)
    plans, table = prepare_tiling([image], label_rasters=[labels], classes=table, config=config)
    return tile_scenes(tmp_path / "store.zarr", plans, config, table, InProcessExecutor())


OSM = class_table([(i, f"landuse_{i}", (i, i, i)) for i in range(1, 9)])


def test_osm_labels_with_zero_as_nodata_need_no_declaration(tmp_path):
    labels = (np.arange(32 * 32).reshape(32, 32) % 9).astype(np.uint8)  # 0..8
    image, path = _scene(tmp_path, labels, nodata=0)
    _tile(tmp_path, image, path, OSM)
    stored = zarr.open_group(str(tmp_path / "store.zarr"), mode="r")["scenes/s/label"][...]
    np.testing.assert_array_equal(stored, np.where(labels == 0, 255, labels - 1))


def test_undeclared_label_values_are_refused_naming_file_and_values(tmp_path):
    labels = (np.arange(32 * 32).reshape(32, 32) % 9).astype(np.uint8)  # 0 is not declared
    labels[0, :3] = [12, 40, 12]
    image, path = _scene(tmp_path, labels)
    with pytest.raises(ConfigError) as caught:
        _tile(tmp_path, image, path, OSM)
    message = str(caught.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert "label values 0, 12, 40 are not in the classes file" in message
    assert not (tmp_path / "store.zarr").exists()
    ignoring = OSM.model_copy(update={"ignore": (0, 12, 40)})
    _tile(tmp_path, image, path, ignoring)  # declared as ignored, they tile


def test_undeclared_polygon_classes_are_refused_naming_the_column(tmp_path):
    image, _ = _scene(tmp_path, np.zeros((32, 32), np.uint8))
    polygons = gpd.GeoDataFrame(
        {"landuse": [1, 9]},
        geometry=[shapely.box(400000, 5799700, 400100, 5799800)] * 2,
        crs="EPSG:32633",
    )
    polygons.to_file(tmp_path / "osm.gpkg")
    config = TileConfig(tile_size=16, class_column="landuse", labels_cover="partial")
    with pytest.raises(ConfigError, match=r"osm\.gpkg: class column 'landuse': values 9 are not"):
        prepare_tiling([image], vector_labels=tmp_path / "osm.gpkg", classes=OSM, config=config)
    complete = config.model_copy(update={"labels_cover": "complete"})
    polygons.iloc[:1].to_file(tmp_path / "osm.gpkg")
    with pytest.raises(ConfigError, match="pixels outside every polygon are class 0"):
        prepare_tiling([image], vector_labels=tmp_path / "osm.gpkg", classes=OSM, config=complete)
