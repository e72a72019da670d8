import numpy as np

from terraseg.pipeline.synth.noise import fractal_noise, noise_at, value_noise, white_noise


def test_noise_is_seamless_across_blocks():
    whole = fractal_noise(5, 0, 0, (96, 128), 12.0)
    part = fractal_noise(5, 40, 70, (56, 58), 12.0)
    np.testing.assert_allclose(whole[40:, 70:], part, atol=1e-6)
    np.testing.assert_array_equal(
        white_noise(2, 0, 0, (20, 20))[5:, 7:], white_noise(2, 5, 7, (15, 13))
    )


def test_noise_ranges_and_statistics():
    smooth = value_noise(1, -50, -50, (200, 200), 20.0)  # negative coordinates work too
    assert smooth.min() >= 0.0 and smooth.max() <= 1.0
    white = white_noise(3, 0, 0, (256, 256))
    assert abs(white.mean()) < 0.02 and abs(white.std() - 1.0) < 0.02
    assert not np.array_equal(white_noise(3, 0, 0, (8, 8)), white_noise(4, 0, 0, (8, 8)))


def test_point_noise_matches_grid_noise():
    grid = value_noise(9, 0, 0, (32, 32), 8.0)
    rows, cols = np.mgrid[0:32, 0:32]
    points = noise_at(9, cols + 0.5, rows + 0.5, 8.0)
    np.testing.assert_allclose(grid, points, atol=1e-5)
