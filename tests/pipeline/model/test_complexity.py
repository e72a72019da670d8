from __future__ import annotations

import torch

from terraseg.pipeline.model import ModelConfig, build_model
from terraseg.pipeline.model.complexity import measure_complexity, time_forward


def test_full_model_counts_come_from_the_built_model() -> None:
    config = ModelConfig(backbone="resnet101", in_channels=4, num_classes=6, full_resolution=False)
    complexity = measure_complexity(config, (512, 512))
    model = build_model(config)
    assert complexity.parameters == sum(p.numel() for p in model.parameters())
    parts = {part.name: part for part in complexity.parts}
    assert parts["head"].macs == 256 * 6 * 128 * 128  # 1x1 conv on the stride-4 map
    assert parts["decoder"].macs > 0 and parts["backbone"].macs > 40e9
    assert complexity.macs == sum(part.macs for part in complexity.parts)


def test_decoder_and_output_stride_change_the_cost() -> None:
    base = ModelConfig(backbone="mobilenetv2", num_classes=21, full_resolution=False)
    with_decoder = measure_complexity(base, (512, 512))
    without = measure_complexity(base.model_copy(update={"decoder": False}), (512, 512))
    dense = measure_complexity(base.model_copy(update={"output_stride": 8}), (512, 512))
    assert [part.name for part in without.parts] == ["backbone", "aspp", "head"]
    assert without.macs < with_decoder.macs < dense.macs
    assert without.parts[-1].macs == 256 * 21 * 32 * 32  # head at stride 16


def test_time_forward_returns_milliseconds() -> None:
    model = build_model(ModelConfig(width_multiplier=0.125))
    assert time_forward(model, (32, 32), runs=2) > 0
    assert not model.training and torch.is_grad_enabled()


def test_the_full_resolution_head_is_counted() -> None:
    config = ModelConfig(backbone="mobilenetv2", in_channels=4, num_classes=6)
    complexity = measure_complexity(config, (64, 64))
    assert complexity.parameters == sum(p.numel() for p in build_model(config).parameters())
    parts = {part.name: part for part in complexity.parts}
    assert parts["head"].macs == 32 * 6 * 64 * 64  # 1x1 conv at the input resolution
    assert parts["refine"].macs > 0
