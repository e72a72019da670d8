from __future__ import annotations

from pathlib import Path

import pytest
import torch

from terraseg.pipeline.errors import WeightsError
from terraseg.pipeline.model import ModelConfig, build_model
from terraseg.pipeline.model.backbones import BACKBONES, Backbone
from terraseg.pipeline.model.weights import adapt_first_conv, load_backbone_weights

TINY = 0.125
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def bn(prefix: str) -> list[str]:
    return [f"{prefix}.{name}" for name in BN]


def torchvision_resnet_keys(units: tuple[int, ...]) -> list[str]:
    """Key names of torchvision's ResNet state dict, written from its naming rules."""
    keys = ["conv1.weight", *bn("bn1")]
    for layer, count in enumerate(units, start=1):
        for unit in range(count):
            prefix = f"layer{layer}.{unit}"
            for index in (1, 2, 3):
                keys += [f"{prefix}.conv{index}.weight", *bn(f"{prefix}.bn{index}")]
            if unit == 0:
                keys += [f"{prefix}.downsample.0.weight", *bn(f"{prefix}.downsample.1")]
    return [*keys, "fc.weight", "fc.bias"]


def torchvision_mobilenetv2_keys() -> list[str]:
    keys = ["features.0.0.weight", *bn("features.0.1")]
    for index in range(1, 18):
        prefix = f"features.{index}.conv"
        if index == 1:  # expansion 1: depthwise, projection, BN
            keys += [f"{prefix}.0.0.weight", *bn(f"{prefix}.0.1"), f"{prefix}.1.weight"]
            keys += bn(f"{prefix}.2")
        else:
            keys += [f"{prefix}.0.0.weight", *bn(f"{prefix}.0.1")]
            keys += [f"{prefix}.1.0.weight", *bn(f"{prefix}.1.1"), f"{prefix}.2.weight"]
            keys += bn(f"{prefix}.3")
    keys += ["features.18.0.weight", *bn("features.18.1")]
    return [*keys, "classifier.1.weight", "classifier.1.bias"]


def timm_xception65_keys() -> list[str]:
    keys = ["stem.0.conv.weight", *bn("stem.0.bn"), "stem.1.conv.weight", *bn("stem.1.bn")]
    for block in range(21):
        prefix = f"blocks.{block}"
        if block in (0, 1, 2, 19):  # blocks whose channels or stride change
            keys += [f"{prefix}.shortcut.conv.weight", *bn(f"{prefix}.shortcut.bn")]
        for conv in (1, 2, 3):
            sep = f"{prefix}.stack.conv{conv}"
            keys += [f"{sep}.conv_dw.weight", *bn(f"{sep}.bn_dw")]
            keys += [f"{sep}.conv_pw.weight", *bn(f"{sep}.bn_pw")]
    return [*keys, "head.fc.weight", "head.fc.bias"]


REFERENCE_KEYS = {
    "resnet50": torchvision_resnet_keys((3, 4, 6, 3)),
    "resnet101": torchvision_resnet_keys((3, 4, 23, 3)),
    "mobilenetv2": torchvision_mobilenetv2_keys(),
    "xception65": timm_xception65_keys(),
}
CLASSIFIER_KEYS = {"resnet50": 2, "resnet101": 2, "mobilenetv2": 8, "xception65": 2}


def tiny_backbone(name: str, bands: int = 3) -> Backbone:
    return BACKBONES[name](
        in_channels=bands, output_stride=16, width_multiplier=TINY, multi_grid=(1, 2, 4)
    )


def reference_state_dict(name: str, width_of: Backbone) -> dict[str, torch.Tensor]:
    """A state dict in the reference layout, with random values and a classifier."""
    own = width_of.state_dict()
    data = {}
    for key in REFERENCE_KEYS[name]:
        like = own.get(key, torch.empty(10, 8))  # classifier tensors: any shape
        data[key] = (
            torch.randint(0, 5, like.shape) if like.dtype == torch.long else torch.randn(like.shape)
        )
    return data


@pytest.mark.parametrize("name", list(BACKBONES))
def test_reference_layout_loads_by_name(name: str, tmp_path: Path) -> None:
    donor = tiny_backbone(name)
    data = reference_state_dict(name, donor)
    path = tmp_path / f"{name}.pth"
    torch.save(data, path)
    backbone = tiny_backbone(name)
    report = load_backbone_weights(backbone, path)
    assert report.matched == len(backbone.state_dict()) == len(data) - CLASSIFIER_KEYS[name]
    assert len(report.unused) == CLASSIFIER_KEYS[name]
    assert report.missing == report.unexpected == report.adapted == ()
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, data[key]), key


def test_first_conv_is_adapted_to_the_band_count(tmp_path: Path) -> None:
    data = reference_state_dict("resnet50", tiny_backbone("resnet50"))
    path = tmp_path / "rgb.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in data.items()}}, path)
    rgb = data["conv1.weight"]
    for bands, expected in [
        (4, rgb[:, [0, 1, 2, 0]] * 3 / 4),
        (1, rgb.sum(dim=1, keepdim=True)),
        (2, rgb[:, [0, 1]] * 3 / 2),
    ]:
        backbone = tiny_backbone("resnet50", bands)
        report = load_backbone_weights(backbone, path)
        assert report.adapted == ("conv1.weight",)
        assert torch.allclose(backbone.conv1.weight, expected)


def test_adapt_first_conv_keeps_the_response_to_equal_bands() -> None:
    rgb = torch.randn(8, 3, 3, 3)
    image = torch.ones(1, 3, 5, 5)
    for bands in (1, 6, 12):  # exact for one band and for multiples of 3
        adapted = adapt_first_conv(rgb, bands)
        response = torch.nn.functional.conv2d(torch.ones(1, bands, 5, 5), adapted)
        assert torch.allclose(response, torch.nn.functional.conv2d(image, rgb), atol=1e-5)


def test_weights_of_another_backbone_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "r50.pth"
    torch.save(reference_state_dict("resnet50", tiny_backbone("resnet50")), path)
    with pytest.raises(WeightsError, match=r"missing keys \(layer3\.6\.conv1\.weight") as info:
        load_backbone_weights(tiny_backbone("resnet101"), path)
    assert str(path) in str(info.value) and "torchvision ResNet" in str(info.value)
    with pytest.raises(WeightsError, match="unexpected keys"):
        load_backbone_weights(tiny_backbone("xception65"), path)


def test_non_strict_loading_loads_the_matching_keys(tmp_path: Path) -> None:
    data = reference_state_dict("resnet50", tiny_backbone("resnet50"))
    data["extra.weight"] = torch.zeros(1)
    del data["layer4.2.conv3.weight"]
    path = tmp_path / "partial.pth"
    torch.save(data, path)
    backbone = tiny_backbone("resnet50")
    report = load_backbone_weights(backbone, path, strict=False)
    assert report.missing == ("layer4.2.conv3.weight",)
    assert report.unexpected == ("extra.weight",)
    assert torch.equal(backbone.layer1[0].conv1.weight, data["layer1.0.conv1.weight"])


def test_shape_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "wide.pth"
    wide = BACKBONES["mobilenetv2"](
        in_channels=3, output_stride=16, width_multiplier=0.25, multi_grid=(1, 2, 4)
    )
    torch.save(reference_state_dict("mobilenetv2", wide), path)
    with pytest.raises(WeightsError, match="width_multiplier"):
        load_backbone_weights(tiny_backbone("mobilenetv2"), path)
    five = reference_state_dict("mobilenetv2", tiny_backbone("mobilenetv2", 5))
    torch.save(five, path)
    with pytest.raises(WeightsError, match="4-band model adapts only 3-band weights"):
        load_backbone_weights(tiny_backbone("mobilenetv2", 4), path)


def test_unreadable_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_backbone_weights(tiny_backbone("resnet50"), tmp_path / "none.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a PyTorch state-dict file"):
        load_backbone_weights(tiny_backbone("resnet50"), garbage)
    listed = tmp_path / "list.pth"
    torch.save([1, 2, 3], listed)
    with pytest.raises(WeightsError, match="no mapping"):
        load_backbone_weights(tiny_backbone("resnet50"), listed)


def test_build_model_loads_pretrained_weights(tmp_path: Path) -> None:
    data = reference_state_dict("xception65", tiny_backbone("xception65"))
    path = tmp_path / "xception65.pth"
    torch.save(data, path)
    config = ModelConfig(
        backbone="xception65", in_channels=4, width_multiplier=TINY, pretrained_weights=path
    )
    model = build_model(config)
    key = "blocks.7.stack.conv2.conv_pw.weight"
    assert torch.equal(model.backbone.state_dict()[key], data[key])
    assert model.backbone.stem[0].conv.weight.shape[1] == 4
