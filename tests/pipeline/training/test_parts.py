import numpy as np
import pytest
import torch

from terraseg.pipeline.training.augment import dihedral
from terraseg.pipeline.training.config import ScheduleConfig
from terraseg.pipeline.training.losses import SegmentationLoss, class_weights
from terraseg.pipeline.training.optim import LRFactor, build_scheduler
from terraseg.pipeline.training.sampler import WeightedCropSampler, rank_share, tile_weights


@pytest.mark.parametrize("dice", [0.0, 0.5])
@pytest.mark.parametrize("weighted", [False, True])
def test_ignore_label_contributes_no_gradient(dice, weighted):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 8, 8))
    target[:, :4] = 255
    weights = np.array([1.0, 2.0, 0.5]) if weighted else None
    loss = SegmentationLoss(3, weights, dice)(logits, target)
    loss.backward()
    assert torch.all(logits.grad[:, :, :4] == 0)
    assert torch.any(logits.grad[:, :, 4:] != 0)
    # changing the ignored logits changes nothing
    other = logits.detach().clone()
    other[:, :, :4] = 100.0
    assert SegmentationLoss(3, weights, dice)(other, target).item() == pytest.approx(loss.item())


def test_loss_is_mean_over_labelled_pixels():
    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[0, 255], [1, 255]]])
    assert SegmentationLoss(2)(logits, target).item() == pytest.approx(np.log(2))


def test_class_weights_favour_rare_classes():
    counts = np.array([[900, 100, 0]])
    weights = class_weights(counts, "inverse")
    assert weights[1] == pytest.approx(9 * weights[0])
    assert weights[2] == 1.0  # absent
    assert (weights[:2] * [0.9, 0.1]).sum() == pytest.approx(1.0)
    assert class_weights(counts, "none") is None


def test_tile_weights_draw_rare_classes_more_often():
    counts = np.array([[100, 0], [100, 0], [100, 0], [50, 50], [0, 0]])
    uniform = tile_weights(counts, 0.0)
    np.testing.assert_allclose(uniform, [1, 1, 1, 1, 0])
    balanced = tile_weights(counts, 1.0)
    assert balanced[3] > 3 * balanced[0] and balanced[4] == 0


def test_sampler_ranks_are_disjoint_and_reproducible():
    weights = np.ones(10)
    full = list(WeightedCropSampler(weights, 8, 0, 1, seed=3))
    shards = [list(WeightedCropSampler(weights, 8, r, 2, seed=3)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == sorted(full)
    again = WeightedCropSampler(weights, 8, 0, 1, seed=3)
    again.set_epoch(1)
    assert list(again) != full
    again.set_epoch(0)
    assert list(again) == full
    assert sorted(rank_share(5, 0, 2) + rank_share(5, 1, 2)) == list(range(5))


def test_dihedral_moves_image_and_label_together():
    label = torch.arange(16).reshape(4, 4)
    image = torch.stack([label.float(), -label.float()])
    seen = set()
    for k in range(8):
        out_image, out_label = dihedral(image, label, k)
        assert torch.equal(out_image[0].long(), out_label)
        assert torch.equal(out_image[1].long(), -out_label)
        seen.add(tuple(out_label.flatten().tolist()))
    assert len(seen) == 8


def test_poly_and_cosine_with_warmup():
    poly = LRFactor(total=100, warmup=10, name="poly", power=0.9, floor=0.0)
    assert poly(0) == pytest.approx(0.1) and poly(9) == pytest.approx(1.0)
    assert poly(10) == pytest.approx(1.0)
    assert poly(55) == pytest.approx(0.5**0.9)
    assert poly(100) == pytest.approx(0.0)
    cosine = LRFactor(total=10, warmup=0, name="cosine", power=1, floor=0.1)
    assert cosine(5) == pytest.approx(0.1 + 0.9 * 0.5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    paper = ScheduleConfig(name="poly", warmup_epochs=0.0)
    scheduler = build_scheduler(optimizer, paper, total_steps=4, steps_per_epoch=2)
    lrs = []
    for _ in range(4):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.01 * (1 - t / 4) ** 0.9 for t in range(4)])


def test_configs_train_yaml_documents_the_defaults():
    from pathlib import Path

    from terraseg.pipeline.settings import build_config, load_yaml
    from terraseg.pipeline.training.config import TrainConfig

    path = Path(__file__).parents[3] / "configs" / "train.yaml"
    assert build_config(TrainConfig, load_yaml(path)) == TrainConfig()
