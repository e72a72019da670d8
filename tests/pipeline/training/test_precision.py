"""fp16 loss scaling skips overflowing steps; bf16 only where the GPU computes it natively."""

import math

import pytest
import torch
from torch import nn

from terraseg.pipeline.errors import TrainingError
from terraseg.pipeline.training import loop
from terraseg.pipeline.training.loop import (
    NonFiniteLossError,
    StepContext,
    train_one_epoch,
    train_step,
)
from terraseg.pipeline.training.losses import SegmentationLoss
from terraseg.pipeline.training.precision import Autocast, choose_autocast
from terraseg.pipeline.training.session import nan_error

CUDA = torch.device("cuda", 0)


class StandInCuda:
    """Answers ``torch.cuda``'s questions for a GPU that is not there."""

    def __init__(self, capability, bf16):
        self.capability, self.bf16 = capability, bf16

    def is_bf16_supported(self):
        return self.bf16

    def get_device_capability(self, device):
        return self.capability


@pytest.mark.parametrize(
    ("precision", "capability", "bf16", "expected"),
    [
        ("bf16", (8, 0), True, Autocast(torch.bfloat16, scaler=False)),  # A100
        ("bf16", (9, 0), True, Autocast(torch.bfloat16, scaler=False)),  # H100
        ("bf16", (7, 5), True, Autocast(torch.float16, scaler=True)),  # T4: emulated bf16
        ("bf16", (7, 0), False, Autocast(torch.float16, scaler=True)),  # V100
        ("bf16", (8, 6), False, Autocast(torch.float16, scaler=True)),  # bf16 reported missing
        ("fp16", (9, 0), True, Autocast(torch.float16, scaler=True)),
        ("fp32", (9, 0), True, Autocast(None, scaler=False)),
    ],
)
def test_bf16_only_on_gpus_that_compute_it_natively(precision, capability, bf16, expected):
    assert choose_autocast(precision, CUDA, StandInCuda(capability, bf16)) == expected


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_cpu_trains_in_fp32(precision):
    asked = StandInCuda((9, 0), True)
    assert choose_autocast(precision, torch.device("cpu"), asked) == Autocast(None, False)


def _context(scaler):
    torch.manual_seed(0)
    model = nn.Conv2d(2, 3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return StepContext(model, SegmentationLoss(3), optimizer, None, torch.device("cpu"),
                       scaler=scaler)  # fmt: skip


def _batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(2, 2, 4, 4, generator=generator), torch.randint(0, 3, (2, 4, 4))


@pytest.fixture
def overflow_at(monkeypatch):
    """Make the loss infinite at the given 1-based calls of ``micro_loss``."""
    calls, steps = [], set()
    real = loop.micro_loss

    def overflowing(ctx, batch):
        calls.append(1)
        loss, value = real(ctx, batch)
        if len(calls) in steps:
            return loss * math.inf, value * math.inf
        return loss, value

    monkeypatch.setattr(loop, "micro_loss", overflowing)
    return steps


def test_with_a_scaler_an_overflow_skips_the_step_and_training_goes_on(overflow_at):
    overflow_at.update({2})
    ctx = _context(torch.amp.GradScaler("cpu"))
    stats = train_one_epoch(ctx, [_batch()] * 3, steps=3)
    assert ctx.step == 3 and ctx.skipped == 1 and ctx.skipped_in_row == 0
    assert stats["skipped_steps"] == 1 and math.isfinite(stats["loss"])
    assert ctx.scaler.get_scale() == 2.0**15  # halved once


def test_a_skipped_step_changes_no_weight(overflow_at):
    overflow_at.update({1})
    ctx = _context(torch.amp.GradScaler("cpu"))
    before = [p.detach().clone() for p in ctx.model.parameters()]
    assert math.isinf(train_step(ctx, [_batch()]))
    assert all(torch.equal(a, b) for a, b in zip(before, ctx.model.parameters(), strict=True))
    train_step(ctx, [_batch()])
    assert not torch.equal(before[0], ctx.model.weight)


def test_many_skipped_steps_in_a_row_stop_the_run(overflow_at, monkeypatch, tmp_path):
    monkeypatch.setattr(loop, "MAX_SKIPPED_STEPS", 4)
    overflow_at.update({1, 3, 4, 5, 6, 7})  # one skip, a good step, then four in a row
    ctx = _context(torch.amp.GradScaler("cpu"))
    with pytest.raises(NonFiniteLossError) as info:
        for _ in range(7):
            train_step(ctx, [_batch()])
    assert (info.value.step, info.value.skipped) == (6, 4) and ctx.skipped == 5
    error = nan_error(info.value, 2, tmp_path / "last.pt")
    assert isinstance(error, TrainingError) and error.path == str(tmp_path / "last.pt")
    assert "fp16 gradients were not finite in 4 steps in a row, up to epoch 2, step 6" in str(error)
    assert "train in bf16" in str(error) and "\n" not in str(error)


def test_without_a_scaler_a_non_finite_loss_stops_at_once(overflow_at):
    overflow_at.update({2})
    ctx = _context(None)
    train_step(ctx, [_batch()])
    weights = ctx.model.weight.detach().clone()
    with pytest.raises(NonFiniteLossError) as info:
        train_step(ctx, [_batch()])
    assert (info.value.step, info.value.skipped) == (2, 0)
    assert torch.equal(weights, ctx.model.weight)


def test_without_a_scaler_the_epoch_reports_no_skipped_steps():
    stats = train_one_epoch(_context(None), [_batch()] * 2, steps=2)
    assert "skipped_steps" not in stats
