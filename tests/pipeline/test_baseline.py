"""The per-pixel baseline: fitted on a store's training tiles, scored beside a prediction."""

import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from terraseg.pipeline.baseline import fit_baseline, training_pixels, valid_pixels
from terraseg.pipeline.classes import CLASSES_TAG, read_classes
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_scenes


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """Two tiny scenes with label rasters, a store of them, and painted predictions."""
    root = tmp_path_factory.mktemp("baseline")
    outputs = tiny_scenes(root / "scenes", labels="raster")
    table = read_classes(outputs.classes)
    config = TileConfig.model_validate({"tile_size": 64, "split_block": 1, "val_fraction": 0.25})
    plans, table = prepare_tiling(
        outputs.scenes, label_rasters=outputs.labels, classes=table, config=config
    )
    store = root / "store.zarr"
    tile_scenes(store, plans, config, table, InProcessExecutor())
    predictions = []
    for label_path in outputs.labels:
        with rasterio.open(label_path) as src:
            pred, profile = src.read(1), {**src.profile, "nodata": 255}
        pred[:8, :] = 255  # nodata in the prediction: the baseline skips these pixels too
        path = root / "pred" / label_path.name.replace("_labels", "_classes")
        path.parent.mkdir(exist_ok=True)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(pred[None])
            dst.update_tags(**{CLASSES_TAG: json.dumps(table.to_dict())})
        predictions.append(path)
    return outputs, store, predictions


def test_fit_is_seeded_and_learns_the_spectra(scenes):
    _, store, _ = scenes
    x, y = training_pixels(store, max_pixels=5000, seed=1)
    assert x.shape == (5000, 4) and y.max() < 5
    first = fit_baseline(store, max_pixels=5000, seed=1)
    again = fit_baseline(store, max_pixels=5000, seed=1)
    image = x.T[:, :, None]  # (bands, pixels, 1)
    valid = np.ones(image.shape[1:], bool)
    predicted = first.predict_indices(image, valid)[:, 0]
    np.testing.assert_array_equal(predicted, again.predict_indices(image, valid)[:, 0])
    assert (predicted == y).mean() > 0.5  # the synthetic classes differ in colour
    assert "5000 pixels" in first.describe()


def test_valid_pixels_follow_predict():
    image = np.array([[[0, 1], [np.nan, 0]], [[0, 0], [1, 0]]], dtype=np.float32)
    np.testing.assert_array_equal(valid_pixels(image, 0.0), [[False, True], [False, False]])


def test_evaluate_baseline_scores_the_same_pixels(scenes, tmp_path):
    outputs, store, predictions = scenes
    out = tmp_path / "metrics.json"
    args = ["-q", "evaluate", *map(str, predictions), "--truth", str(outputs.labels[0].parent)]
    args += ["--baseline", str(store), "--images", str(outputs.scenes[0].parent)]
    result = CliRunner().invoke(cli, [*args, "--out", str(out), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "per-pixel baseline: HistGradientBoostingClassifier" in result.output
    report = json.loads(out.read_text())
    model, baseline = np.array(report["confusion_matrix"]), report["baseline"]
    assert np.array(baseline["confusion_matrix"]).sum() == model.sum()
    assert report["mean_iou"] == 1.0 and 0 < baseline["mean_iou"] < 1.0
    assert 0 < baseline["mean_boundary_f2"] < 1.0


def test_baseline_needs_images_and_matching_names(scenes, tmp_path):
    outputs, store, predictions = scenes
    args = ["-q", "evaluate", str(predictions[0]), "--truth", str(outputs.labels[0].parent)]
    result = CliRunner().invoke(cli, [*args, "--baseline", str(store)])
    assert result.exit_code == 2 and "--baseline needs --images" in result.output
    result = CliRunner().invoke(
        cli, [*args, "--baseline", str(store), "--images", str(outputs.labels[0])]
    )
    assert result.exit_code == 1
    assert "no image among --images has this prediction's name" in result.output
