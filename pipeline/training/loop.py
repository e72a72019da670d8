"""One training step, one training epoch, one validation pass: no CLI, no files.

The step is written for DistributedDataParallel: the cross-entropy of each process
is divided by the labelled-pixel count summed over all processes and multiplied by
the world size, so DDP's gradient averaging gives exactly the gradient of the
global batch's mean loss, however the ignored pixels are spread over processes.

Without a GradScaler a non-finite loss stops the run. With one (fp16), an
overflow is expected now and then: the scaler skips that optimizer step and
halves its scale, and the run goes on; only :data:`MAX_SKIPPED_STEPS` skipped
steps in a row stop it, since lowering the scale no longer helps then.
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

from terraseg.pipeline.training.losses import SegmentationLoss
from terraseg.pipeline.training.metrics import confusion_matrix

Batch = tuple[Tensor, Tensor]

# Skipped fp16 steps in a row that stop a run: enough halvings to bring any scale a
# GradScaler grows to (2**16 at the start, doubled every 2000 clean steps) below 1.
MAX_SKIPPED_STEPS = 32


class NonFiniteLossError(ArithmeticError):
    """The loss became NaN or infinite; ``step`` is the optimizer step (1-based) that saw it.

    ``skipped`` is the number of steps in a row a GradScaler skipped, when that is
    what stopped the run (0: a non-finite loss without a scaler).
    """

    def __init__(self, step: int, value: float, skipped: int = 0) -> None:
        self.step, self.value, self.skipped = step, value, skipped
        what = f"{skipped} steps skipped in a row, " if skipped else ""
        super().__init__(f"{what}loss is {value} at optimizer step {step}")


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
    skipped: int = 0  # optimizer steps the scaler skipped, in all
    skipped_in_row: int = 0  # ... and since the last step it took
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
        logits = ctx.model(image)  # an ensemble: each member's logits for its part of the batch
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
        The mean cross-entropy of the global batch (not finite when the scaler
        skipped the step for it).

    Raises:
        NonFiniteLossError: Without a scaler, the loss is NaN or infinite (no
            weight was changed); with one, :data:`MAX_SKIPPED_STEPS` steps in a
            row were skipped.
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
            # the value is the same on every rank: all stop, or all skip, together
            if ctx.scaler is None and not math.isfinite(float(value)):
                raise NonFiniteLossError(ctx.step + 1, float(value))
            scaled = loss / len(batches)
            (ctx.scaler.scale(scaled) if ctx.scaler else scaled).backward()
        values.append(float(value))
    mean = sum(values) / len(values)
    if _optimizer_step(ctx):
        ctx.skipped_in_row = 0
        return mean
    ctx.skipped, ctx.skipped_in_row = ctx.skipped + 1, ctx.skipped_in_row + 1
    if ctx.skipped_in_row >= MAX_SKIPPED_STEPS:
        raise NonFiniteLossError(ctx.step, mean, ctx.skipped_in_row)
    return mean


def _optimizer_step(ctx: StepContext) -> bool:
    """Step the optimizer and the schedule; False when the scaler skipped the step."""
    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
    if ctx.grad_clip > 0:
        nn.utils.clip_grad_norm_(ctx.model.parameters(), ctx.grad_clip)
    taken = True
    if ctx.scaler is not None:
        scale = ctx.scaler.get_scale()
        ctx.scaler.step(ctx.optimizer)  # skipped when a gradient is not finite
        ctx.scaler.update()
        taken = ctx.scaler.get_scale() >= scale  # a skipped step lowers the scale
    else:
        ctx.optimizer.step()
    if ctx.scheduler is not None:
        ctx.scheduler.step()  # the schedule counts skipped steps too
    ctx.step += 1
    return taken


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
        ``loss`` (mean global CE over the steps taken), ``lr`` (at the first step),
        ``images_per_s`` over all processes, ``data_wait`` (share of the epoch spent
        waiting for the loader), ``seconds``, and with a scaler ``skipped_steps``.
    """
    ctx.model.train()
    skipped = ctx.skipped
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
    finite = [value for value in losses if math.isfinite(value)]
    stats = {
        "loss": sum(finite) / max(1, len(finite)),
        "lr": lr,
        "images_per_s": images / max(1e-9, seconds),
        "data_wait": sum(waits) / max(1e-9, seconds),
        "seconds": seconds,
    }
    if ctx.scaler is not None:
        stats["skipped_steps"] = float(ctx.skipped - skipped)
    return stats


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
