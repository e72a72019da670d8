"""How far the validation metrics can be trusted: per-class support and a block bootstrap.

Validation pixels are not independent samples: pixels of one tile, and tiles of one
split block, look alike and are predicted alike. The unit of the split, the split
block, is therefore the unit of resampling. The best model is evaluated once more
over the validation tiles (in float32) with a confusion matrix per split block;
:func:`bootstrap_mean_iou` draws blocks with replacement (:data:`RESAMPLES` times),
sums their matrices and takes the mean IoU of each draw; the interval is the central
:data:`LEVEL` of those (percentile bootstrap). With fewer than two validation
blocks there is nothing to resample and the interval is not available.

Per class, the validation pixels, tiles and blocks that hold it are counted; a
class with fewer than :data:`MIN_PIXELS` pixels or :data:`MIN_BLOCKS` blocks is
named in a warning: its IoU rests on too little ground to judge.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from torch.utils.data import DataLoader

from terraseg.pipeline.metrics import scores
from terraseg.pipeline.store import attributes, open_existing, tile_index
from terraseg.pipeline.training.dataset import StoreInfo, ValTiles
from terraseg.pipeline.training.metrics import confusion_matrix

if TYPE_CHECKING:
    from terraseg.pipeline.training.state import RunContext, RunState

logger = logging.getLogger(__name__)

RESAMPLES = 1000  # bootstrap draws of the validation blocks
LEVEL = 0.95  # central share of the draws the interval spans
MIN_PIXELS = 1000  # fewer validation pixels of a class: too few to judge its IoU
MIN_BLOCKS = 2  # ... or fewer split blocks holding it


def validation_blocks(info: StoreInfo) -> list[str]:
    """The split block of each validation tile, in the order of ``info.val``.

    Stores tiled before tiles recorded their block get the block of the older
    per-scene rule: ``block_tiles`` tiles a side from the scene's upper-left pixel.
    """
    root = open_existing(info.path)
    frame = tile_index(root)
    recorded = {
        (s, int(r), int(c)): b
        for s, r, c, b in zip(frame.scene, frame.row, frame.col, frame.block, strict=True)
        if isinstance(b, str)
    }
    span = info.tile_size * int(attributes(root).get("split", {}).get("block_tiles", 4))
    return [
        recorded.get((t.scene, t.row, t.col)) or f"{t.scene}/{t.row // span}/{t.col // span}"
        for t in info.val
    ]


@torch.no_grad()
def block_confusions(
    model: nn.Module, info: StoreInfo, blocks: list[str], device: torch.device, batch_size: int
) -> dict[str, NDArray[np.int64]]:
    """The (C, C) confusion matrix of ``model`` on the validation tiles of each split block.

    Args:
        model: The model to evaluate (moved to ``device``, set to eval mode).
        info: The store.
        blocks: The split block of each validation tile (see :func:`validation_blocks`).
        device: Where to run the model.
        batch_size: Tiles per forward pass.

    Returns:
        Each validation block's matrix (rows true classes, columns predicted).
    """
    model = model.to(device).eval()
    classes = info.num_classes
    sums = {b: torch.zeros(classes, classes, dtype=torch.int64) for b in sorted(set(blocks))}
    loader = DataLoader(ValTiles(info), batch_size=batch_size, shuffle=False)
    done = 0
    for image, label in loader:
        pred = model(image.to(device)).argmax(dim=1).cpu()  # (B, H, W)
        for i in range(len(image)):
            sums[blocks[done + i]] += confusion_matrix(pred[i], label[i], classes)
        done += len(image)
    return {b: m.numpy() for b, m in sums.items()}


def mean_ious(matrices: NDArray[np.int64]) -> NDArray[np.float64]:
    """Mean IoU of each of a stack of (C, C) matrices, as :func:`terraseg.pipeline.metrics.scores`.

    A class neither present nor predicted in a matrix is left out of its mean.
    """
    cm = np.asarray(matrices, dtype=np.float64)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    union = cm.sum(axis=2) + cm.sum(axis=1) - tp
    iou = np.full(tp.shape, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    counted = np.isfinite(iou).sum(axis=1)
    total = np.where(np.isfinite(iou), iou, 0.0).sum(axis=1)
    return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)


def bootstrap_mean_iou(
    matrices: NDArray[np.int64], *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile interval of the mean IoU over block resamples.

    Args:
        matrices: One (C, C) confusion matrix per validation block, (blocks, C, C).
        resamples: Draws of ``blocks`` blocks with replacement.
        level: Central share of the draws the interval spans.
        seed: Seed of the draws.

    Returns:
        ``(low, high)``, or None with fewer than two blocks.
    """
    blocks = len(matrices)
    if blocks < 2:
        return None
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(blocks, np.full(blocks, 1.0 / blocks), size=resamples)
    drawn = (counts @ np.asarray(matrices, np.int64).reshape(blocks, -1)).reshape(
        resamples, *matrices.shape[1:]
    )
    values = mean_ious(drawn)
    tail = (1.0 - level) / 2 * 100
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def class_support(info: StoreInfo, blocks: list[str]) -> dict[str, dict[str, int]]:
    """Validation pixels, tiles and split blocks holding each class (from the tile index).

    Args:
        info: The store.
        blocks: The split block of each validation tile.

    Returns:
        ``{class name: {"pixels": n, "tiles": n, "blocks": n}}``.
    """
    counts = info.counts("val")  # (tiles, classes)
    present = counts > 0
    support = {}
    for index, name in enumerate(info.classes.names):
        holding = {b for b, here in zip(blocks, present[:, index], strict=True) if here}
        support[name] = {
            "pixels": int(counts[:, index].sum()),
            "tiles": int(present[:, index].sum()),
            "blocks": len(holding),
        }
    return support


def uncertainty_warnings(support: dict[str, dict[str, int]], blocks: int) -> list[str]:
    """Warnings about what the validation split is too small to judge."""
    warnings = [
        f"class {name}: {s['pixels']} validation pixels in {s['blocks']} split blocks, too "
        f"few to judge its IoU (fewer than {MIN_PIXELS} pixels or {MIN_BLOCKS} blocks)"
        for name, s in support.items()
        if s["pixels"] < MIN_PIXELS or s["blocks"] < MIN_BLOCKS
    ]
    if blocks < 2:
        warnings.append(
            f"validation holds {blocks} split block, so the mean IoU has no interval; "
            "re-tile with a smaller --split-block or a larger --val-fraction"
        )
    return warnings


def validation_uncertainty(
    matrices: dict[str, NDArray[np.int64]], support: dict[str, dict[str, int]], seed: int
) -> dict[str, Any]:
    """The summary's record of the validation's uncertainty; its warnings are logged.

    Args:
        matrices: Each validation block's confusion matrix.
        support: Per-class counts (see :func:`class_support`).
        seed: Seed of the bootstrap.

    Returns:
        ``mean_iou`` (of all blocks together), ``mean_iou_interval`` (``[low, high]``
        or None), ``level``, ``resamples``, ``blocks``, ``per_class`` and ``warnings``.
    """
    stack = np.stack(list(matrices.values())) if matrices else np.zeros((0, 1, 1), np.int64)
    interval = bootstrap_mean_iou(stack, seed=seed)
    warnings = uncertainty_warnings(support, len(matrices))
    for warning in warnings:
        logger.warning("%s", warning)
    return {
        "mean_iou": scores(stack.sum(axis=0))["mean_iou"] if len(stack) else float("nan"),
        "mean_iou_interval": None if interval is None else list(interval),
        "level": LEVEL,
        "resamples": RESAMPLES,
        "blocks": len(matrices),
        "per_class": support,
        "warnings": warnings,
    }


def report_uncertainty(run: RunContext, state: RunState, model: nn.Module) -> dict[str, Any]:
    """Evaluate the best model per validation block, and report the uncertainty.

    The values go to the tracker as ``best/val/*`` metrics at the last epoch.

    Args:
        run: The run's config, store, place and tracker.
        state: The progress at the last epoch.
        model: The best model.

    Returns:
        The record of :func:`validation_uncertainty`.
    """
    info = run.info
    blocks = validation_blocks(info)
    matrices = block_confusions(
        model, info, blocks, run.place.device, run.config.data.val_batch_size
    )
    record = validation_uncertainty(matrices, class_support(info, blocks), run.config.seed)
    metrics = {"best/val/mean_iou": record["mean_iou"], "best/val/blocks": record["blocks"]}
    if record["mean_iou_interval"] is not None:
        low, high = record["mean_iou_interval"]
        metrics |= {"best/val/mean_iou_low": low, "best/val/mean_iou_high": high}
    for name, counts in record["per_class"].items():
        metrics |= {f"best/val/{key}/{name}": value for key, value in counts.items()}
    finite = {k: float(v) for k, v in metrics.items() if np.isfinite(v)}
    run.tracker.log_metrics(finite, step=state.epoch)
    return record
