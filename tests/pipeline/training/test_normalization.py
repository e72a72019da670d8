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
    ("saved_model", "saved_data", "full", "method"),
    [({}, {}, False, "mean_std"), ({"full_resolution": True}, {"normalization": "percentile"},
                                   True, "percentile")],
)  # fmt: skip
def test_a_resumed_run_keeps_what_its_checkpoint_was_trained_with(
    saved_model, saved_data, full, method
):
    checkpoint = {"model_config": {"backbone": "mobilenetv2", **saved_model},
                  "config": {"data": saved_data}}  # fmt: skip
    config = as_checkpointed(TrainConfig(), checkpoint)
    assert config.model.full_resolution is full and config.data.normalization == method
