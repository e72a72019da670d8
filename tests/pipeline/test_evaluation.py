import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from terraseg.pipeline.classes import CLASSES_TAG, read_classes
from terraseg.pipeline.errors import InputError
from terraseg.pipeline.evaluation import EvaluateConfig, evaluate
from terraseg.pipeline.metrics import boundary_counts, confusion_counts, scores
from terraseg.workflows.cli.main import cli
from tests.helpers import tiny_scenes

CONFIG = EvaluateConfig(block_size=64)


def test_confusion_counts_skip_ignore_and_scores():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, 255]])
    matrix = confusion_counts(pred, truth, 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    result = scores(matrix)
    assert result["iou"] == pytest.approx([1 / 3, 2 / 3, 1 / 2])
    assert result["pixel_accuracy"] == pytest.approx(4 / 6)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """Predictions made from the painted class maps with a known error and nodata."""
    root = tmp_path_factory.mktemp("evaluate")
    truth = tiny_scenes(root / "truth", labels="raster")
    vector = tiny_scenes(root / "vector")
    moved = tiny_scenes(root / "moved", labels_crs="EPSG:4326")
    table = read_classes(truth.classes)
    predictions, expected = [], np.zeros((5, 5), np.int64)
    for label_path in truth.labels:
        with rasterio.open(label_path) as src:
            labels = src.read(1)
            profile = {**src.profile, "nodata": 255}
        pred = labels.copy()
        pred[20:60, 30:90] = 4  # a patch called vegetation
        pred[100:110, :] = 255  # a strip of nodata
        path = root / "pred" / label_path.name.replace("_labels", "_classes")
        path.parent.mkdir(exist_ok=True)
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(pred[None])
            dst.update_tags(**{CLASSES_TAG: json.dumps(table.to_dict())})
        predictions.append(path)
        expected += confusion_counts(pred, labels, 5)
    return predictions, truth, vector, moved, expected


def test_label_rasters_by_blocks_equal_whole_arrays(case):
    predictions, truth, _, _, expected = case
    result = evaluate(predictions, truth.labels[0].parent, None, CONFIG)
    np.testing.assert_array_equal(result.matrix, expected)
    assert result.report()["classes"][1] == "building"
    assert set(result.per_file) == {str(p) for p in predictions}


def test_vector_truth_equals_raster_truth_and_reprojected_is_close(case):
    predictions, _, vector, moved, expected = case
    np.testing.assert_array_equal(
        evaluate(predictions, vector.labels[0], None, CONFIG).matrix, expected
    )
    reprojected = evaluate(predictions, moved.labels[0], None, CONFIG)
    assert np.abs(reprojected.matrix - expected).sum() <= 0.01 * expected.sum()


def test_errors(case, tmp_path):
    predictions, truth, _, _, _ = case
    plain = tmp_path / "plain_classes.tif"
    with rasterio.open(predictions[0]) as src:
        profile = src.profile
        data = src.read()
    with rasterio.open(plain, "w", **profile) as dst:
        dst.write(data)
    with pytest.raises(InputError, match="names no classes; pass --classes"):
        evaluate([plain], truth.labels[0].parent, None, CONFIG)
    with pytest.raises(InputError, match="no label raster matches"):
        evaluate([plain], truth.labels[0].parent, read_classes(truth.classes), CONFIG)


def test_cli_prints_table_writes_json_and_logs_to_mlflow(case, tmp_path, sqlite_store_uri):
    import mlflow

    predictions, truth, _, _, expected = case
    mlflow.set_tracking_uri(sqlite_store_uri)
    with mlflow.start_run() as run:
        pass
    out = tmp_path / "metrics.json"
    result = CliRunner().invoke(
        cli,
        [
            "-q",
            "evaluate",
            *map(str, predictions),
            "--truth",
            str(truth.labels[0].parent),
            "--out",
            str(out),
            "--run-id",
            run.info.run_id,
            "--tracking-uri",
            sqlite_store_uri,
            "--workers",
            "1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "mean IoU" in result.output and "vegetation" in result.output
    assert "boundary F (1 px)" in result.output and "bndF2" in result.output
    report = json.loads(out.read_text())
    assert report["confusion_matrix"] == expected.tolist()
    assert 0 < report["mean_boundary_f1"] < 1 and len(report["boundary_f2"]) == 5
    logged = mlflow.MlflowClient(sqlite_store_uri).get_run(run.info.run_id).data.metrics
    assert logged["eval_mean_iou"] == pytest.approx(report["mean_iou"])
    assert "eval_iou_building" in logged
    assert logged["eval_mean_boundary_f2"] == pytest.approx(report["mean_boundary_f2"])


def test_boundary_scores_by_blocks_equal_whole_arrays(case):
    predictions, truth, _, _, _ = case
    table = read_classes(truth.classes)
    lut = table.index_lut()
    expected = 0
    for path, label_path in zip(predictions, truth.labels, strict=True):
        with rasterio.open(path) as pred, rasterio.open(label_path) as labels:
            expected += boundary_counts(lut[pred.read(1)], lut[labels.read(1)], 5)
    result = evaluate(predictions, truth.labels[0].parent, None, CONFIG)
    np.testing.assert_array_equal(result.boundary, expected)
    report = result.report()
    assert 0 < report["mean_boundary_f1"] < report["mean_boundary_f2"] < 1
