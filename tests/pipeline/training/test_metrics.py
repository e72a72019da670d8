import numpy as np
import pytest
import torch

from terraseg.pipeline.training.metrics import confusion_matrix, scores


def test_confusion_matrix_skips_ignore_label():
    target = torch.tensor([[0, 0, 1, 255], [2, 2, 1, 255]])
    pred = torch.tensor([[0, 1, 1, 0], [2, 0, 1, 2]])
    cm = confusion_matrix(pred, target, 3)
    expected = [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    np.testing.assert_array_equal(cm.numpy(), expected)


def test_scores_on_hand_made_matrix():
    # rows true, columns predicted
    cm = np.array([[50, 10, 0], [5, 30, 5], [0, 0, 0]])
    s = scores(cm)
    # class 0: tp 50, fn 10, fp 5 -> IoU 50/65; class 1: tp 30, fn 10, fp 10 -> 30/50
    # class 2: never true, predicted 5 times -> IoU 0/5 = 0
    assert s["iou"] == pytest.approx([50 / 65, 30 / 50, 0.0])
    assert s["mean_iou"] == pytest.approx((50 / 65 + 0.6 + 0.0) / 3)
    assert s["pixel_accuracy"] == pytest.approx(80 / 100)
    assert s["accuracy"][:2] == pytest.approx([50 / 60, 30 / 40])
    assert np.isnan(s["accuracy"][2])  # no true pixels: recall undefined
    assert s["f1"] == pytest.approx([100 / 115, 60 / 80, 0.0])
    assert s["precision"][:2] == pytest.approx([50 / 55, 30 / 40])


def test_absent_class_is_left_out_of_means():
    cm = np.array([[4, 0, 0], [0, 4, 0], [0, 0, 0]])
    s = scores(cm)
    assert np.isnan(s["iou"][2])
    assert s["mean_iou"] == 1.0 and s["pixel_accuracy"] == 1.0


def test_summed_matrices_are_not_mean_of_means():
    a = confusion_matrix(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 0, 0, 0]), 2)
    b = confusion_matrix(torch.tensor([1]), torch.tensor([1]), 2)
    total = scores((a + b).numpy())
    assert total["pixel_accuracy"] == pytest.approx(4 / 5)
    assert total["iou"] == pytest.approx([3 / 4, 1 / 2])
