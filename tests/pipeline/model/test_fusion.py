import pytest
import torch
from torch import nn

from terraseg.pipeline.model import BACKBONES, ModelConfig, build_model
from terraseg.pipeline.model.fusion import fuse_batch_norms


def _with_trained_statistics(model: nn.Module) -> nn.Module:
    """Batch norms with non-trivial statistics and affine parameters, as after training."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.1)
    return model.eval()


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_fused_model_computes_the_same_and_has_no_batch_norm_left(name: str) -> None:
    config = ModelConfig(backbone=name, in_channels=3, num_classes=4, width_multiplier=0.125)
    torch.manual_seed(0)
    model = _with_trained_statistics(build_model(config))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        fused = fuse_batch_norms(model)
        actual = fused(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    # float rounding through 100 layers; a wrong fold changes outputs by their own scale
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-3, atol=1e-3 * scale)


def test_training_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="eval mode"):
        fuse_batch_norms(build_model(ModelConfig(width_multiplier=0.125)))
