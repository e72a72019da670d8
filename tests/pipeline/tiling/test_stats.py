import numpy as np
import pytest

from terraseg.pipeline.tiling.stats import BandSummary, band_statistics


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32"])
@pytest.mark.parametrize("invalid_share", [0.0, 0.1, 0.9])
def test_summary_of_valid_pixels_matches_numpy(dtype, invalid_share):
    rng = np.random.default_rng(3)
    image = (rng.normal(100, 30, (3, 40, 50)) - (50 if dtype == "int16" else 0)).astype(dtype)
    valid = rng.random((40, 50)) >= invalid_share
    summary = BandSummary.of(image, valid)
    values = image[:, valid].astype(np.float64)
    np.testing.assert_array_equal(summary.count, valid.sum())
    np.testing.assert_allclose(summary.total, values.sum(axis=1))
    np.testing.assert_allclose(summary.squares, (values**2).sum(axis=1))
    if summary.histogram is not None:  # integers: exact percentiles from the histogram
        stats = band_statistics(summary, ["a", "b", "c"])
        for band, row in zip(stats, values, strict=True):
            assert band["p2"] == pytest.approx(np.percentile(row, 2))
            assert band["p98"] == pytest.approx(np.percentile(row, 98))
