import pytest
import torch
from torch import nn

from terraseg.pipeline.model import ModelConfig, build_model
from terraseg.pipeline.model.padding import pad_wide_depthwise


def _padded_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [
        m[1]
        for m in model.modules()
        if isinstance(m, nn.Sequential) and len(m) == 2 and isinstance(m[0], nn.ZeroPad2d)
    ]


@pytest.mark.parametrize(("output_stride", "wide_rates"), [(16, [12, 18]), (8, [12, 24, 36])])
def test_wide_atrous_convs_get_an_explicit_pad_and_compute_the_same(
    output_stride: int, wide_rates: list[int]
) -> None:
    config = ModelConfig(
        backbone="mobilenetv2",
        in_channels=3,
        num_classes=4,
        width_multiplier=0.25,
        output_stride=output_stride,
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    x = torch.randn(1, 3, 128, 96)
    with torch.no_grad():
        expected = model(x)
        padded = pad_wide_depthwise(model)
        actual = padded(x)
    convs = _padded_convs(padded)
    # the ASPP branches above rate 6; backbone dilations (at most 4) keep their own padding
    assert [c.dilation[0] for c in convs] == wide_rates
    assert all(c.padding == (0, 0) and c.groups == c.in_channels for c in convs)
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)


def test_regular_and_narrow_convs_are_left_alone() -> None:
    model = nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=12, dilation=12),  # not depthwise
        nn.Conv2d(8, 8, 3, padding=6, dilation=6, groups=8),  # depthwise, narrow
    )
    padded = pad_wide_depthwise(model)
    assert _padded_convs(padded) == []
    assert [type(m) for m in padded] == [nn.Conv2d, nn.Conv2d]
