"""Validation uncertainty: per-class support and the block bootstrap of mean IoU."""

import json
import logging
import shutil

import numpy as np
import pytest
import zarr

from terraseg.pipeline.metrics import scores
from terraseg.pipeline.store import open_existing, tile_index
from terraseg.pipeline.training.tracker import NullTracker
from terraseg.pipeline.training.uncertainty import (
    MIN_PIXELS,
    bootstrap_mean_iou,
    mean_ious,
    uncertainty_warnings,
)
from tests.pipeline.training.test_train import tiny, train_with


def block_matrices(blocks, classes=4, seed=0):
    """Confusion matrices of ``blocks`` blocks: mostly right, each block a little different."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(50, 500, (blocks, classes))
    matrices = np.zeros((blocks, classes, classes), np.int64)
    for b in range(blocks):
        for c in range(classes):
            right = rng.uniform(0.5, 0.95)
            wrong = rng.multinomial(int(truth[b, c] * (1 - right)), np.full(classes, 1 / classes))
            matrices[b, c] = wrong
            matrices[b, c, c] += truth[b, c] - wrong.sum()
    return matrices


def test_mean_ious_equal_the_metrics_of_each_matrix():
    matrices = block_matrices(6)
    matrices[2, 3, :] = 0  # a class absent from one block ...
    matrices[2, :, 3] = 0  # ... and never predicted there: left out of its mean
    for matrix, value in zip(matrices, mean_ious(matrices), strict=True):
        assert value == pytest.approx(scores(matrix)["mean_iou"], rel=1e-12)


def test_interval_holds_the_estimate_is_reproducible_and_needs_two_blocks():
    matrices = block_matrices(48)
    estimate = scores(matrices.sum(axis=0))["mean_iou"]
    low, high = bootstrap_mean_iou(matrices, seed=3)
    assert low < estimate < high and high - low < 0.1
    assert bootstrap_mean_iou(matrices, seed=3) == (low, high)
    wide = bootstrap_mean_iou(matrices[:12], seed=3)  # a quarter of the blocks: wider
    assert wide[1] - wide[0] > 1.5 * (high - low)
    assert bootstrap_mean_iou(matrices[:1]) is None
    assert bootstrap_mean_iou(np.repeat(matrices[:1], 5, axis=0)) == pytest.approx(
        (mean_ious(matrices[:1])[0],) * 2
    )  # identical blocks: nothing varies


def test_warnings_name_classes_with_too_little_ground():
    support = {
        "road": {"pixels": MIN_PIXELS - 1, "tiles": 3, "blocks": 3},
        "water": {"pixels": 50_000, "tiles": 4, "blocks": 1},
        "building": {"pixels": 50_000, "tiles": 9, "blocks": 5},
    }
    warnings = uncertainty_warnings(support, blocks=1)
    assert [w.split(":")[0] for w in warnings[:2]] == ["class road", "class water"]
    assert "no interval" in warnings[2]


class Recorder(NullTracker):
    """Keeps every metric logged, by step."""

    def __init__(self):
        self.metrics = {}

    def log_metrics(self, metrics, step):
        self.metrics.setdefault(step, {}).update(metrics)


def test_summary_shows_the_interval_and_per_class_counts(store, tmp_path):
    tracker = Recorder()
    summary = train_with(tracker, tiny(epochs=1), store, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "summary.json").read_text())["val_uncertainty"]
    assert record == json.loads(json.dumps(summary["val_uncertainty"]))
    low, high = record["mean_iou_interval"]
    assert low <= record["mean_iou"] <= high
    assert record["mean_iou"] == pytest.approx(summary["best_val_mean_iou"], abs=1e-12)
    index = tile_index(open_existing(store))
    val = index[(index.split == "val") & index.class_counts.map(sum).gt(0)]
    counts = np.stack(val.class_counts.map(np.asarray).to_list())
    assert record["blocks"] == val.block.nunique() >= 2
    for c, name in enumerate(["background", "building", "road", "water", "vegetation"]):
        assert record["per_class"][name]["pixels"] == counts[:, c].sum()
        assert record["per_class"][name]["tiles"] == (counts[:, c] > 0).sum()
        assert record["per_class"][name]["blocks"] == val.block[counts[:, c] > 0].nunique()
    logged = tracker.metrics[1]
    assert logged["best/val/mean_iou_low"] == low and logged["best/val/mean_iou_high"] == high
    assert logged["best/val/pixels/building"] == record["per_class"]["building"]["pixels"]


def test_a_single_validation_block_has_no_interval(store, tmp_path, caplog):
    copy = tmp_path / "one-block.zarr"
    shutil.copytree(store, copy)
    root = zarr.open_group(str(copy), mode="r+")
    for name in root["scenes"].group_keys():
        group = root[f"scenes/{name}"]
        tiles = [dict(t) for t in group.attrs["tiles"]]
        group.attrs["tiles"] = [{**t, "block": "EPSG:32633/0/0"} for t in tiles]
    with caplog.at_level(logging.WARNING, logger="terraseg.pipeline.training.uncertainty"):
        summary = train_with(Recorder(), tiny(epochs=1), copy, tmp_path / "run")
    record = json.loads((tmp_path / "run" / "summary.json").read_text())["val_uncertainty"]
    assert record["mean_iou_interval"] is None and record["blocks"] == 1
    assert summary["val_uncertainty"]["mean_iou_interval"] is None
    assert "validation holds 1 split block, so the mean IoU has no interval" in caplog.text
    assert any("no interval" in w for w in record["warnings"])
