"""One training step, one training epoch, one validation pass: no CLI, no files.

The step is written for DistributedDataParallel: the cross-entropy of each process
is divided by the labelled-pixel count summed over all processes and multiplied by
the world size, so DDP's gradient averaging gives exactly the gradient of the
global batch's mean loss, however the ignored pixels are spread over processes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from pipeline.training.losses import SegmentationLoss
from pipeline.training.metrics import confusion_matrix

Batch = tuple[Tensor, Tensor]


class NonFiniteLossError(ArithmeticError):
    """The loss became NaN or infinite; ``step`` is the optimizer step (1-based) that saw it."""

    def __init__(self, step: int, value: float) -> None:
        self.step, self.value = step, value
        super().__init__(f"loss is {value} at optimizer step {step}")


@dataclass
class StepContext:
    """What a training step needs besides the batch."""

    model: nn.Module  # DDP-wrapped (and compiled) in a distributed run
    loss_fn: SegmentationLoss
    optimizer: Optimizer
    scheduler: LRScheduler | None
    device: torch.device
    scaler: torch.amp.GradScaler | None = None
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False
    grad_clip: float = 0.0
    world: int = 1
    step: int = 0  # optimizer steps done so far
    timings: dict[str, float] = field(default_factory=dict)


def all_reduce_sum(tensor: Tensor, world: int) -> Tensor:
    """Sum ``tensor`` over all processes in place (no-op in a single process)."""
    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def wait_for_all(world: int) -> None:
    """Block until every process gets here (no-op in a single process)."""
    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.barrier()


def to_device(batch: Batch, ctx: StepContext) -> Batch:
    """Move a batch to the device (image in channels_last when asked)."""
    image, label = batch
    non_blocking = ctx.device.type == "cuda"
    image = image.to(ctx.device, non_blocking=non_blocking)
    if ctx.channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    return image, label.to(ctx.device, non_blocking=non_blocking)


def _autocast(ctx: StepContext) -> contextlib.AbstractContextManager[Any]:
    if ctx.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=ctx.device.type, dtype=ctx.autocast_dtype)


def micro_loss(ctx: StepContext, batch: Batch) -> tuple[Tensor, Tensor]:
    """Forward one micro-batch: the loss to back-propagate and the global mean CE."""
    image, label = to_device(batch, ctx)
    with _autocast(ctx):
        logits = ctx.model(image)  # (B, C, H, W)
    ce_sum, norm = ctx.loss_fn.cross_entropy_sum(logits, label)
    dice = ctx.loss_fn.dice(logits, label) if ctx.loss_fn.dice_weight > 0 else ce_sum.new_zeros(())
    bad = ~torch.isfinite(dice.detach())  # a rank's non-finite Dice stops every rank
    parts = torch.stack([ce_sum.detach(), norm, bad.to(ce_sum.dtype)]).double()
    totals = all_reduce_sum(parts, ctx.world)
    loss = ce_sum / torch.clamp(totals[1], min=1.0).to(ce_sum.dtype) * ctx.world
    loss = loss + ctx.loss_fn.dice_weight * dice
    value = totals[0] / torch.clamp(totals[1], min=1.0)
    return loss, torch.where(totals[2] > 0, torch.nan, value)


def train_step(ctx: StepContext, batches: list[Batch]) -> float:
    """One optimizer step over ``batches`` (gradient accumulation when more than one).

    Returns:
        The mean cross-entropy of the global batch.

    Raises:
        NonFiniteLossError: The loss is NaN or infinite; no weight was changed.
    """
    ctx.optimizer.zero_grad(set_to_none=True)
    values = []
    for index, batch in enumerate(batches):
        last = index == len(batches) - 1
        sync = contextlib.nullcontext()
        if isinstance(ctx.model, DistributedDataParallel) and not last:
            sync = ctx.model.no_sync()  # type: ignore[assignment]
        with sync:
            loss, value = micro_loss(ctx, batch)
            if not math.isfinite(float(value)):  # the same on every rank: all stop together
                raise NonFiniteLossError(ctx.step + 1, float(value))
            scaled = loss / len(batches)
            (ctx.scaler.scale(scaled) if ctx.scaler else scaled).backward()
        values.append(float(value))
    _optimizer_step(ctx)
    return sum(values) / len(values)


def _optimizer_step(ctx: StepContext) -> None:
    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
    if ctx.grad_clip > 0:
        nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
    if ctx.scaler is not None:
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        ctx.optimizer.step()
    if ctx.scheduler is not None:
        ctx.scheduler.step()
    ctx.step += 1


def _groups(loader: Iterable[Batch], size: int, waits: list[float]) -> Iterator[list[Batch]]:
    """Batches grouped for accumulation; the time spent waiting for data goes to ``waits``."""
    group: list[Batch] = []
    iterator = iter(loader)
    while True:
        start = time.perf_counter()
        try:
            batch = next(iterator)
        except StopIteration:
            return
        waits.append(time.perf_counter() - start)
        group.append(batch)
        if len(group) == size:
            yield group
            group = []


def train_one_epoch(
    ctx: StepContext,
    loader: Iterable[Batch],
    *,
    steps: int,
    accumulate: int = 1,
    epoch: int = 1,
    progress: bool = False,
) -> dict[str, float]:
    """Train over ``loader`` once.

    Returns:
        ``loss`` (mean global CE), ``lr`` (at the first step), ``images_per_s`` over all processes,
        ``data_wait`` (share of the epoch spent waiting for the loader) and ``seconds``.
    """
    ctx.model.train()
    waits: list[float] = []
    losses: list[float] = []
    images = 0
    lr = float(ctx.optimizer.param_groups[0]["lr"])  # of the epoch's first step
    start = time.perf_counter()
    with tqdm(total=steps, desc=f"epoch {epoch}", unit="step", disable=not progress) as bar:
        for group in _groups(loader, accumulate, waits):
            losses.append(train_step(ctx, group))
            images += sum(len(b[0]) for b in group) * ctx.world
            rate = images / max(1e-9, time.perf_counter() - start)
            bar.set_postfix(loss=f"{losses[-1]:.4f}", img_s=f"{rate:.1f}")
            bar.update(1)
    seconds = time.perf_counter() - start
    return {
        "loss": sum(losses) / max(1, len(losses)),
        "lr": lr,
        "images_per_s": images / max(1e-9, seconds),
        "data_wait": sum(waits) / max(1e-9, seconds),
        "seconds": seconds,
    }


@torch.no_grad()
def validate(
    model: nn.Module,
    loader: Iterable[Batch],
    num_classes: int,
    ctx: StepContext,
    keep: int = 0,
) -> tuple[Tensor, list[tuple[Tensor, Tensor, Tensor]]]:
    """Confusion matrix of this process's validation tiles, and the first ``keep`` samples.

    ``model`` is the unwrapped model: validation needs no gradient synchronization,
    and processes may hold different numbers of tiles.

    Returns:
        The (C, C) int64 matrix on the device (sum it over processes), and up to
        ``keep`` ``(image, label, prediction)`` triples on the CPU for overlays.
    """
    model.eval()
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=ctx.device)
    samples: list[tuple[Tensor, Tensor, Tensor]] = []
    for batch in loader:
        image, label = to_device(batch, ctx)
        with _autocast(ctx):
            pred = model(image).argmax(dim=1)  # (B, H, W)
        matrix += confusion_matrix(pred, label, num_classes)
        for i in range(min(len(image), keep - len(samples))):
            samples.append((image[i].float().cpu(), label[i].cpu(), pred[i].cpu()))
    return matrix, samples
