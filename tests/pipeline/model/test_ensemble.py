from __future__ import annotations

import pytest
import torch

from terraseg.pipeline.errors import InputError
from terraseg.pipeline.model import ModelConfig, build_model
from terraseg.pipeline.model.config import stored_model_config
from terraseg.pipeline.model.deeplab import DeepLabV3Plus, build_network
from terraseg.pipeline.model.ensemble import Ensemble
from terraseg.pipeline.model.inference import inference_network
from terraseg.pipeline.model.quantization import (
    Int8Backbone,
    calibrate,
    int8_supported,
    quantize_backbone,
)
from terraseg.pipeline.training.components import SMALL_TRAINING_PIXELS, ensemble_members

TINY = {"backbone": "mobilenetv2", "width_multiplier": 0.125, "in_channels": 3, "num_classes": 4}


def test_members_start_from_different_weights_and_train_on_parts_of_their_own() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, members=3, dropout=0.0))  # repeatable in training
    assert isinstance(model, Ensemble) and len(model.members) == 3
    first, second = (dict(m.named_parameters()) for m in model.members[:2])
    name = "head.weight"
    assert not torch.equal(first[name], second[name])
    x = torch.randn(6, 3, 40, 48)
    logits = model(x)  # training mode: member i's logits for the i-th third of the batch
    assert logits.shape == (6, 4, 40, 48)
    for index, member in enumerate(model.members):
        part = slice(2 * index, 2 * index + 2)
        torch.testing.assert_close(logits[part], member(x[part]))
    # the loss of the first part reaches the first member's weights only
    label = torch.randint(0, 4, (2, 40, 48))
    loss = torch.nn.functional.cross_entropy(logits[:2], label)
    loss.backward()
    grads = [m.head.weight.grad for m in model.members]
    assert grads[0] is not None and grads[0].abs().sum() > 0
    assert all(g is None or not g.any() for g in grads[1:])
    with pytest.raises(ValueError, match="batch of 4 tiles does not split over 3 members"):
        model(torch.randn(4, 3, 40, 48))


def test_evaluation_gives_the_mean_of_the_members_probabilities() -> None:
    torch.manual_seed(1)
    model = build_model(ModelConfig(**TINY, members=3)).eval()
    x = torch.randn(2, 3, 33, 35)
    with torch.no_grad():
        out = model(x)
        members = torch.stack([m(x).softmax(dim=1) for m in model.members])
    assert out.shape == (2, 4, 33, 35)
    torch.testing.assert_close(out.softmax(dim=1), members.mean(dim=0))
    assert not torch.equal(members[0].argmax(1), members[1].argmax(1))  # they differ


def test_one_member_is_a_plain_network_and_automatic_builds_one() -> None:
    assert type(build_model(ModelConfig(**TINY, members=1))) is DeepLabV3Plus
    assert type(build_model(ModelConfig(**TINY, members=0))) is DeepLabV3Plus
    with pytest.raises(ValueError, match="two members or more"):
        Ensemble([build_network(ModelConfig(**TINY))])


def test_models_saved_before_members_load_as_one_network() -> None:
    saved = ModelConfig(**TINY, members=1).model_dump()
    del saved["members"]  # as the terraseg before the option wrote it
    assert ModelConfig(**stored_model_config(saved)).members == 1
    assert stored_model_config({**saved, "members": 3})["members"] == 3


def test_automatic_members_follow_the_labelled_training_pixels() -> None:
    assert ensemble_members(0) == 3
    assert ensemble_members(SMALL_TRAINING_PIXELS - 1) == 3
    assert ensemble_members(SMALL_TRAINING_PIXELS) == 1


@pytest.mark.skipif(not int8_supported(), reason="no x86 quantized engine")
def test_int8_ranges_per_member_and_a_foreign_calibration_changes_nothing() -> None:
    torch.manual_seed(2)
    model = build_model(ModelConfig(**TINY, members=2)).eval()
    network = inference_network(model, "cpu")
    ranges = calibrate(network, [torch.randn(2, 3, 64, 64)])
    first = {k.removeprefix("members.0.") for k in ranges if k.startswith("members.0.")}
    second = {k.removeprefix("members.1.") for k in ranges if k.startswith("members.1.")}
    assert first and first == second and len(ranges) == 2 * len(first)
    foreign = {**ranges, "other.observer": torch.tensor([0.0, 1.0])}
    with pytest.raises(InputError, match="does not fit"):
        quantize_backbone(network, foreign, torch.float32)
    assert not any(isinstance(m.backbone, Int8Backbone) for m in network.members)  # untouched
    quantized = quantize_backbone(network, ranges, torch.float32)
    assert all(isinstance(m.backbone, Int8Backbone) for m in quantized.members)
    assert quantized(torch.randn(1, 3, 64, 64)).shape == (1, 4, 64, 64)
