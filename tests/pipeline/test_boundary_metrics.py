"""Boundary F-score: hand-computed cases, ignored pixels, and blocks with a halo."""

import numpy as np
import pytest

from terraseg.pipeline.metrics import (
    BOUNDARY_HALO,
    boundary_counts,
    boundary_pixels,
    boundary_scores,
)


def halves(split: int, size: int = 8) -> np.ndarray:
    """Class 0 left of column ``split``, class 1 from it on."""
    labels = np.ones((size, size), np.uint8)
    labels[:, :split] = 0
    return labels


def test_boundary_pixels_are_both_sides_of_a_change_and_not_the_edge():
    labels = halves(3, size=4)
    valid = np.ones(labels.shape, bool)
    np.testing.assert_array_equal(np.nonzero(boundary_pixels(labels, 0, valid).any(0))[0], [2])
    np.testing.assert_array_equal(np.nonzero(boundary_pixels(labels, 1, valid).any(0))[0], [3])
    assert boundary_pixels(labels, 0, valid).sum() == 4  # one column of 4 rows


def test_perfect_prediction_scores_one():
    truth = halves(4)
    result = boundary_scores(boundary_counts(truth, truth, 2))
    assert result["boundary_f1"] == [1.0, 1.0]
    assert result["mean_boundary_f2"] == 1.0


@pytest.mark.parametrize(("shift", "f1", "f2"), [(1, 1.0, 1.0), (2, 0.0, 1.0), (3, 0.0, 0.0)])
def test_a_shifted_edge_is_matched_within_the_tolerance(shift, f1, f2):
    # the boundary columns move by `shift` pixels: matched when the distance is within
    counts = boundary_counts(halves(3 + shift), halves(3), 2)
    result = boundary_scores(counts)
    assert result["boundary_f1"] == [f1, f1]
    assert result["boundary_f2"] == [f2, f2]
    assert counts[0, 0].tolist() == [8 * f1, 8, 8 * f1, 8]  # 8 rows of one column each


def test_precision_and_recall_combine_harmonically():
    truth = halves(4)
    pred = truth.copy()
    pred[0:2, 6] = 0  # a blob of class 0 inside class 1, 2 px from the true edge
    counts = boundary_counts(pred, truth, 2)
    # class 0: truth boundary column 3 (8 px, all matched); predicted: column 3 (8) plus
    # the blob (2), which is 3 px from column 3, so precision 8/10 at 1 and 2 px
    assert counts[0, 0].tolist() == [8, 10, 8, 8]
    result = boundary_scores(counts)
    assert result["boundary_f1"][0] == pytest.approx(2 * 0.8 * 1.0 / 1.8)


def test_unlabelled_pixels_make_no_boundary_and_are_not_counted():
    truth = np.full((6, 6), 255, np.uint8)
    truth[:, :3] = 0  # class 0 beside unlabelled ground
    pred = np.zeros((6, 6), np.uint8)
    pred[:, 3:] = 1  # the prediction's edge is where the truth is unlabelled
    counts = boundary_counts(pred, truth, 2)
    assert not counts.any()
    result = boundary_scores(counts)
    assert np.isnan(result["mean_boundary_f1"])


def test_a_class_missed_entirely_scores_zero():
    truth = halves(4)
    pred = np.zeros_like(truth)
    result = boundary_scores(boundary_counts(pred, truth, 2))
    assert result["boundary_f1"] == [0.0, 0.0]


def test_counts_of_blocks_with_a_halo_add_up_to_the_whole():
    rng = np.random.default_rng(3)
    truth = (rng.random((40, 50)) < 0.5).astype(np.uint8) + (rng.random((40, 50)) < 0.3)
    truth[rng.random((40, 50)) < 0.1] = 255
    pred = np.where(rng.random((40, 50)) < 0.2, (truth + 1) % 3, truth).astype(np.uint8)
    whole = boundary_counts(pred, truth, 3)
    total = np.zeros_like(whole)
    for r in range(0, 40, 16):
        for c in range(0, 50, 16):
            r0, c0 = max(0, r - BOUNDARY_HALO), max(0, c - BOUNDARY_HALO)
            r1, c1 = min(40, r + 16 + BOUNDARY_HALO), min(50, c + 16 + BOUNDARY_HALO)
            interior = (slice(r - r0, min(r + 16, 40) - r0), slice(c - c0, min(c + 16, 50) - c0))
            total += boundary_counts(pred[r0:r1, c0:c1], truth[r0:r1, c0:c1], 3, interior)
    np.testing.assert_array_equal(total, whole)
    assert whole[:, :, 1].sum() > 100  # the case has many boundary pixels
