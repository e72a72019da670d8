import numpy as np
import pytest

from terraseg.pipeline.prediction.tta import TTA_TRANSFORMS, with_tta


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_each_transform_is_predicted_once_and_undone(mode):
    calls = []

    def per_pixel(batch):  # commutes with flips and rotations: TTA must not change it
        calls.append(batch.shape)
        return np.tanh(batch[:, :2] * 0.5).astype(np.float32)

    batch = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    averaged = with_tta(per_pixel, mode)(batch)
    assert len(calls) == len(TTA_TRANSFORMS[mode])
    np.testing.assert_allclose(averaged, per_pixel(batch), atol=1e-6)
