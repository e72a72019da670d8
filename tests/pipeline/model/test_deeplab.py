from __future__ import annotations

import typing

import pytest
import torch
from torch import nn

from terraseg.pipeline.errors import ConfigError, ModelInputError
from terraseg.pipeline.model import BACKBONES, ModelConfig, build_model
from terraseg.pipeline.model.aspp import ASPP_RATES
from terraseg.pipeline.model.config import BackboneName
from terraseg.pipeline.model.layers import SeparableConv2d, dilated_strides, scaled_channels
from terraseg.pipeline.settings import build_config

NAMES = list(typing.get_args(BackboneName))
TINY = 0.125  # width multiplier of the fast models


def padded(size: int, stride: int) -> int:
    return -(-size // stride) * stride


def test_backbone_table_matches_config_choices() -> None:
    assert list(BACKBONES) == NAMES


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", NAMES)
def test_full_model_shapes(name: str, output_stride: int) -> None:
    """The full-width models: logits, stride-4 and stride-os features, ASPP rates."""
    torch.manual_seed(0)
    config = ModelConfig(backbone=name, output_stride=output_stride, in_channels=4, num_classes=6)
    model = build_model(config).eval()
    features: list[torch.Tensor] = []
    model.backbone.register_forward_hook(lambda _m, _i, out: features.extend(out))
    with torch.inference_mode():
        logits = model(torch.randn(1, 4, 65, 65))  # odd: padded inside the model
    low, high = features
    side = padded(65, output_stride)  # 80 at OS16, 72 at OS8
    assert logits.shape == (1, 6, 65, 65)
    assert low.shape == (1, model.backbone.low_level_channels, side // 4, side // 4)
    assert high.shape == (
        1,
        model.backbone.out_channels,
        side // output_stride,
        side // output_stride,
    )
    assert model.backbone.out_channels == {"mobilenetv2": 320}.get(name, 2048)
    rates = [branch.conv_dw.dilation[0] for branch in model.aspp.atrous]
    assert rates == list({16: (6, 12, 18), 8: (12, 24, 36)}[output_stride])


@pytest.mark.parametrize("decoder", [True, False])
@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("name", NAMES)
def test_tiny_model_output_matches_input_size(name: str, output_stride: int, decoder: bool) -> None:
    config = ModelConfig(
        backbone=name, output_stride=output_stride, decoder=decoder,
        in_channels=2, num_classes=3, width_multiplier=TINY,
    )  # fmt: skip
    model = build_model(config).eval()
    features: list[torch.Tensor] = []
    model.backbone.register_forward_hook(lambda _m, _i, out: features.extend(out))
    for size in [(33, 47), (1, 5)]:
        features.clear()
        with torch.inference_mode():
            logits = model(torch.randn(2, 2, *size))
        rows, cols = padded(size[0], output_stride), padded(size[1], output_stride)
        low, high = features
        assert logits.shape == (2, 3, *size)
        assert low.shape[-2:] == (rows // 4, cols // 4)
        assert high.shape[-2:] == (rows // output_stride, cols // output_stride)


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_first_conv(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone=name, num_classes=3, width_multiplier=TINY))
    model.train()
    logits = model(torch.randn(2, 3, 32, 32))  # batch 2: BN after image pooling
    nn.functional.cross_entropy(logits, torch.randint(0, 3, (2, 32, 32))).backward()
    grad = model.backbone.get_parameter(model.backbone.first_conv).grad
    assert grad is not None and grad.abs().sum() > 0


def test_eval_forward_is_deterministic() -> None:
    model = build_model(ModelConfig(backbone="xception65", width_multiplier=TINY)).eval()
    x = torch.randn(1, 3, 40, 40)
    with torch.inference_mode():
        assert torch.equal(model(x), model(x))


def test_logits_dtype_upsamples_in_that_dtype_and_plain_layout() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mobilenetv2", width_multiplier=TINY)).eval()
    model = model.to(memory_format=torch.channels_last).to(torch.bfloat16)
    x = torch.randn(2, 3, 64, 48).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        plain = model(x)
        fp32 = model(x, logits_dtype=torch.float32)
    assert plain.dtype == torch.bfloat16 and fp32.dtype == torch.float32
    assert fp32.shape == (2, 2, 64, 48) and fp32.is_contiguous()
    # the same bf16 logits interpolated in fp32: within bf16 rounding of the bf16 result
    torch.testing.assert_close(plain.float(), fp32, rtol=1e-2, atol=1e-2)


def test_resnet_multi_grid_rates() -> None:
    for output_stride, layer3, layer4 in [(16, [1] * 23, [2, 4, 8]), (8, [2] * 23, [4, 8, 16])]:
        config = ModelConfig(
            backbone="resnet101", output_stride=output_stride, width_multiplier=TINY
        )
        backbone = build_model(config).backbone
        assert [unit.conv2.dilation[0] for unit in backbone.layer3] == layer3
        assert [unit.conv2.dilation[0] for unit in backbone.layer4] == layer4
        assert backbone.layer4[0].conv2.stride == (1, 1)


def test_xception_dilation_schedule() -> None:
    backbone = build_model(
        ModelConfig(backbone="xception65", output_stride=8, width_multiplier=TINY)
    ).backbone
    rates = [block.stack.conv1.conv_dw.dilation[0] for block in backbone.blocks]
    strides = [block.stack.conv3.conv_dw.stride[0] for block in backbone.blocks]
    assert len(backbone.blocks) == 3 + 16 + 2  # entry, middle, exit flow
    assert strides == [2, 2, 1] + [1] * 16 + [1, 1]
    assert rates == [1, 1, 1] + [2] * 16 + [2, 4]


def test_dilated_strides_rule() -> None:
    assert dilated_strides([2, 2, 2, 2], 16, input_stride=2) == [(2, 1), (2, 1), (2, 1), (1, 1)]
    plan = dilated_strides([2, 1, 2, 2, 2], 8, input_stride=2)
    assert plan == [(2, 1), (1, 1), (2, 1), (1, 1), (1, 2)]


def test_separable_conv_has_bn_and_relu_after_both_parts() -> None:
    names = [name for name, _ in SeparableConv2d(8, 16, dilation=2).named_children()]
    assert names == ["conv_dw", "bn_dw", "act_dw", "conv_pw", "bn_pw", "act_pw"]


def test_aspp_decoder_and_head_follow_the_paper() -> None:
    config = ModelConfig(backbone="mobilenetv2", num_classes=21, full_resolution=False)
    model = build_model(config)
    assert ASPP_RATES == {16: (6, 12, 18), 8: (12, 24, 36)}
    assert model.aspp.conv1x1.conv.out_channels == 256
    assert [b.conv_pw.out_channels for b in model.aspp.atrous] == [256] * 3
    assert model.aspp.pooling.conv.conv.out_channels == 256
    assert model.aspp.project.conv.in_channels == 5 * 256
    assert model.aspp.dropout.p == 0.1
    assert model.decoder is not None
    assert model.decoder.reduce.conv.out_channels == 48
    assert [conv.conv_pw.out_channels for conv in model.decoder.fuse] == [256, 256]
    assert model.decoder.fuse[0].conv_dw.in_channels == 256 + 48
    assert model.head.in_channels == 256 and model.head.out_channels == 21


def test_bilinear_upsampling_variant_has_no_decoder() -> None:
    model = build_model(ModelConfig(decoder=False, width_multiplier=TINY))
    assert model.decoder is None
    assert not any("decoder" in name for name, _ in model.named_parameters())


def test_initialization() -> None:
    model = build_model(ModelConfig(backbone="resnet50", width_multiplier=0.5))
    conv = model.backbone.layer3[0].conv2
    fan_out = conv.out_channels * 9
    assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.05)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.all(module.weight == 1) and torch.all(module.bias == 0)


def test_full_width_backbone_parameters_match_the_reference_models() -> None:
    """Counts of torchvision's models without their ImageNet classifier."""
    expected = {
        "resnet50": 25_557_032 - 2_049_000,  # torchvision resnet50 minus fc
        "resnet101": 44_549_160 - 2_049_000,
        "mobilenetv2": 3_504_872 - 1_281_000 - 412_160,  # minus classifier, features.18
    }
    for name, count in expected.items():
        backbone = BACKBONES[name](
            in_channels=3, output_stride=16, width_multiplier=1.0, multi_grid=(1, 2, 4)
        )
        assert sum(p.numel() for p in backbone.parameters()) == count


def test_wrong_band_count_is_a_clear_error() -> None:
    model = build_model(ModelConfig(in_channels=4, width_multiplier=TINY)).eval()
    with pytest.raises(ModelInputError, match="4 bands"):
        model(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ModelInputError, match="got shape"):
        model(torch.zeros(3, 32, 32))


def test_bad_config_values_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match="in_channels"):
        build_config(ModelConfig, {"in_channels": 0})
    with pytest.raises(ConfigError, match="resnet50"):
        build_config(ModelConfig, {"backbone": "vgg16"})
    with pytest.raises(ConfigError, match="output_stride"):
        build_config(ModelConfig, {"output_stride": 32})


def test_config_round_trip_rebuilds_the_same_model() -> None:
    config = ModelConfig(
        backbone="mobilenetv2", in_channels=5, num_classes=4, width_multiplier=TINY
    )
    model = build_model(config)
    again = build_model(ModelConfig(**config.model_dump()))
    again.load_state_dict(model.state_dict())
    assert [k for k, _ in model.state_dict().items()] == list(again.state_dict())


def test_scaled_channels() -> None:
    assert scaled_channels(728, 1.0) == 728
    assert scaled_channels(64, 0.125) == 8
    assert scaled_channels(24, 0.125) == 8
    assert scaled_channels(2048, 0.5) == 1024


def test_channels_last_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="mobilenetv2", width_multiplier=TINY)).eval()
    x = torch.randn(1, 3, 48, 40)
    with torch.inference_mode():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        result = model(x.to(memory_format=torch.channels_last))
    assert torch.allclose(result, expected, atol=1e-5)


def test_full_resolution_head_sees_every_input_pixel() -> None:
    config = ModelConfig(backbone="mobilenetv2", width_multiplier=TINY, in_channels=3)
    model = build_model(config).eval()
    assert config.full_resolution and model.refine is not None
    x = torch.zeros(1, 3, 32, 32)
    changed = x.clone()
    changed[0, :, 16, 16] = 5.0  # one pixel: the logits change right there
    with torch.no_grad():
        diff = (model(changed) - model(x)).abs().sum(1)[0]
    assert diff[16, 16] > 0  # the 3x3 convs at full resolution reach 2 pixels around it
    assert diff[14:19, 14:19].sum() > 0.5 * diff.sum()


def test_configs_saved_before_the_option_rebuild_the_paper_head() -> None:
    from terraseg.pipeline.model.config import stored_model_config

    saved = ModelConfig(full_resolution=False, width_multiplier=TINY).model_dump(mode="json")
    del saved["full_resolution"]  # as an earlier terraseg wrote it
    rebuilt = build_model(ModelConfig(**stored_model_config(saved)))
    assert rebuilt.refine is None
    assert stored_model_config({**saved, "full_resolution": True})["full_resolution"] is True


def test_heads_saved_before_pixel_layers_load_their_weights() -> None:
    from terraseg.pipeline.model.config import stored_model_config

    older = ModelConfig(backbone="mobilenetv2", width_multiplier=TINY, pixel_layers=1)
    weights = build_model(older).state_dict()
    saved = older.model_dump(mode="json")
    del saved["pixel_layers"]  # as the terraseg before the option wrote it
    rebuilt = build_model(ModelConfig(**stored_model_config(saved)))
    rebuilt.load_state_dict(weights)  # strict: the same keys and shapes
    assert "refine.pixels.conv.weight" in weights
    deeper = build_model(ModelConfig(backbone="mobilenetv2", width_multiplier=TINY)).state_dict()
    per_pixel = [k for k in deeper if k.startswith("refine.pixels.") and k.endswith("conv.weight")]
    assert [tuple(deeper[k].shape[2:]) for k in per_pixel] == [(1, 1), (1, 1), (3, 3)]
