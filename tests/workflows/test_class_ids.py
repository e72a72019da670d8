"""Class ids as users declare them (sparse, not from 0) through every stage and back.

The labels hold ids 3, 5 and 7 and 0 for unlabelled pixels, as OSM land use or
land cover products do. The store and the model hold output indices 0..2; the
class map, its colour table and style, the polygons and the evaluation hold ids.
"""

import json

import numpy as np
import pyogrio
import pytest
import rasterio
import zarr
from rasterio.transform import from_origin

from terraseg.pipeline.artifact import load_artifact
from terraseg.pipeline.classes import IGNORE_LABEL, class_table, write_classes
from terraseg.pipeline.evaluation import EvaluateConfig, evaluate
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.driver import predict_files
from terraseg.pipeline.prediction.inference import cached_model
from terraseg.pipeline.prediction.job import plan_file
from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.driver import vectorize_rasters
from terraseg.pipeline.vectorize.rasters import read_raster_info
from terraseg.workflows.train_run import launch
from tests.pipeline.training.test_train import tiny

IDS = (3, 5, 7)
SHAPE = (96, 128)
PROFILE = {
    "driver": "GTiff",
    "height": SHAPE[0],
    "width": SHAPE[1],
    "crs": "EPSG:32633",
    "transform": from_origin(400000, 5800000, 10, 10),
}


def sparse_scene(folder):
    """A 4-band scene whose labels are 0 (unlabelled), 3, 5 and 7 in bands of columns."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    labels = np.select([cols < 40, cols < 80, cols < 120], list(IDS), 0).astype(np.uint8)
    labels[rows < 8] = 0
    rng = np.random.default_rng(0)
    brightness = {0: 20, 3: 60, 5: 140, 7: 220}
    base = np.vectorize(brightness.get)(labels).astype(np.float64)
    image = np.stack([base + rng.normal(0, 8, SHAPE) for _ in range(4)])
    with rasterio.open(folder / "scene.tif", "w", count=4, dtype="uint8", **PROFILE) as dst:
        dst.write(np.clip(image, 1, 255).astype(np.uint8))
    with rasterio.open(folder / "scene_labels.tif", "w", count=1, dtype="uint8", **PROFILE) as dst:
        dst.write(labels[None])
    table = class_table([(5, "grass", (40, 160, 60)), (3, "built", (200, 30, 30)),
                         (7, "water", (30, 90, 220))])  # fmt: skip
    table = table.model_copy(update={"ignore": (0,)})
    write_classes(table, folder / "classes.yaml")
    return folder / "scene.tif", folder / "scene_labels.tif", table, labels


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """Tile, train one tiny epoch, predict; return the paths and the true labels."""
    root = tmp_path_factory.mktemp("class-ids")
    image, labels_path, table, labels = sparse_scene(root / "data")
    config = TileConfig(tile_size=32, split_block=1, split_buffer=False, val_fraction=0.3)
    plans, table = prepare_tiling([image], label_rasters=[labels_path], classes=table,
                                  config=config)  # fmt: skip
    tile_scenes(root / "store.zarr", plans, config, table, InProcessExecutor())
    summary = launch(tiny(epochs=1), root / "store.zarr", root / "run", progress=False)
    model = str(root / "run" / "model")
    job = plan_file(model, cached_model(model), image, root / "pred", PredictConfig(threads=1))
    (outcome,) = predict_files([job], InProcessExecutor())
    assert outcome.error is None, outcome.error
    return root, summary, outcome.outputs[0], labels


def test_store_holds_output_indices_and_records_the_mapping(chain):
    root, _, _, labels = chain
    store = zarr.open_group(str(root / "store.zarr"), mode="r")
    assert store.attrs["class_index"] == {"3": 0, "5": 1, "7": 2}
    assert store.attrs["ignore"] == [0]
    assert [c["id"] for c in store.attrs["classes"]] == [3, 5, 7]  # in id order
    stored = store["scenes/scene/label"][...]
    expected = np.select([labels == 3, labels == 5, labels == 7], [0, 1, 2], IGNORE_LABEL)
    np.testing.assert_array_equal(stored, expected)
    (first, *_) = store["scenes/scene"].attrs["tiles"]
    assert len(first["class_counts"]) == 3 and sum(first["class_counts"]) == np.sum(
        expected[:32, :32] != IGNORE_LABEL
    )


def test_training_runs_and_the_model_carries_ids(chain):
    root, summary, _, _ = chain
    assert set(summary["val_iou"]) == {"built", "grass", "water"}
    artifact = load_artifact(root / "run" / "model")
    assert artifact.model_config["num_classes"] == 3
    assert artifact.classes.ids == [3, 5, 7] and artifact.classes.ignore == (0,)
    manifest = json.loads((root / "run" / "model" / "terraseg_model.json").read_text())
    assert manifest["class_index"] == {"3": 0, "5": 1, "7": 2}


def test_class_map_colours_and_style_hold_ids(chain):
    _, _, classes_cog, _ = chain
    with rasterio.open(classes_cog) as src:
        values = set(np.unique(src.read(1)).tolist())
        colormap = src.colormap(1)
    assert values <= {3, 5, 7, IGNORE_LABEL} and values - {IGNORE_LABEL}
    assert colormap[3][:3] == (200, 30, 30) and colormap[7][:3] == (30, 90, 220)
    qml = classes_cog.with_suffix(".qml").read_text()
    assert 'value="3"' in qml and 'value="7"' in qml and 'value="0"' not in qml


def test_polygons_carry_ids(chain):
    root, _, classes_cog, _ = chain
    out = root / "polygons.gpkg"
    vectorize_rasters([read_raster_info(classes_cog)], out, VectorizeConfig(), InProcessExecutor())
    layers = [name for name, _ in pyogrio.list_layers(out) if name != "layer_styles"]
    frame = pyogrio.read_dataframe(out, layer=layers[0])
    assert set(frame["class_id"]) <= {3, 5, 7}
    names = dict(zip(frame["class_id"], frame["class_name"], strict=True))
    assert all(names[i] == {3: "built", 5: "grass", 7: "water"}[i] for i in names)


def test_evaluation_counts_by_id(chain):
    root, _, classes_cog, labels = chain
    truth = root / "data" / "scene_labels.tif"
    result = evaluate([classes_cog], truth, None, EvaluateConfig(block_size=64))
    report = result.report()
    assert report["classes"] == ["built", "grass", "water"]
    with rasterio.open(classes_cog) as src:
        pred = src.read(1)
    counted = (labels != 0) & (pred != IGNORE_LABEL)
    assert result.matrix.sum() == counted.sum()
    assert result.matrix[0].sum() == np.sum(counted & (labels == 3))
    assert np.trace(result.matrix) == np.sum(counted & (pred == labels))
