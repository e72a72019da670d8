"""The parts of a training run built from its config and store: model, loaders, optimizer."""

from __future__ import annotations

import sys
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.model.config import ModelConfig
from terraseg.pipeline.model.deeplab import build_model
from terraseg.pipeline.training.config import DataConfig, TrainConfig
from terraseg.pipeline.training.dataset import StoreInfo, TrainCrops, ValTiles
from terraseg.pipeline.training.loop import StepContext
from terraseg.pipeline.training.losses import SegmentationLoss, class_weights
from terraseg.pipeline.training.optim import build_optimizer, build_scheduler
from terraseg.pipeline.training.precision import choose_autocast
from terraseg.pipeline.training.sampler import WeightedCropSampler, rank_share, tile_weights


class Placement(Protocol):
    """This process's place in the run: its rank, the number of ranks, its device.

    ``terraseg.workflows.train_run.init_distributed`` provides one after joining the group.
    """

    @property
    def rank(self) -> int:
        """0 to ``world - 1``."""

    @property
    def world(self) -> int:
        """The number of training processes."""

    @property
    def device(self) -> torch.device:
        """Where this process trains."""

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, tracks and writes files."""


def resolve_model_config(config: TrainConfig, info: StoreInfo) -> ModelConfig:
    """The model config with bands and classes taken from the store.

    Args:
        config: The training config; its ``model`` section may leave bands and classes out.
        info: The store the run trains on.

    Returns:
        ``config.model`` with ``in_channels`` and ``num_classes`` of the store, and
        ``members`` resolved when automatic (:func:`ensemble_members`).

    Raises:
        ConfigError: The config sets ``model.in_channels`` or ``model.num_classes``
            to values that contradict the store.
    """
    wanted = {"in_channels": len(info.band_names), "num_classes": info.num_classes}
    for key, value in wanted.items():
        given = getattr(config.model, key)
        if key in config.model.model_fields_set and given != value:
            raise ConfigError(
                f"model.{key} is {given} but the store has {value}; remove it from the config",
                path=info.path,
            )
    members = config.model.members or ensemble_members(int(info.counts("train").sum()))
    return config.model.model_copy(update={**wanted, "members": members})


# Below this many labelled training pixels (four 512-px tiles, 61 of 128 px) one
# network's result depends on its initial weights more than on the recipe.
SMALL_TRAINING_PIXELS = 1_000_000
SMALL_STORE_MEMBERS = 3


def ensemble_members(labelled_pixels: int) -> int:
    """The members of ``model.members: 0`` (automatic) for a store's labelled training pixels.

    Three networks for small training sets: on the dev set's Landsat task (107 000
    labelled training pixels) single networks scored 0.47 to 0.54 mean IoU across
    seeds, three averaged 0.53 (docs/performance.md). Larger stores train one.
    """
    return SMALL_STORE_MEMBERS if labelled_pixels < SMALL_TRAINING_PIXELS else 1


def make_loaders(
    config: TrainConfig, info: StoreInfo, place: Placement
) -> tuple[DataLoader[Any], DataLoader[Any], WeightedCropSampler, int]:
    """The data this rank trains and validates on.

    Args:
        config: The training config (``data`` and ``augment`` sections, seed, and
            ``model.members`` as resolved: each training batch holds
            ``data.batch_size`` crops for each member, as an ensemble gives every
            member a part of its own, so the steps an epoch do not change with them).
        info: The store.
        place: This process's rank and device.

    Returns:
        The training loader, the validation loader, the training sampler (its
        epoch is set before each epoch) and the number of optimizer steps per epoch.
        Both loaders draw from generators of their own, never from the global one;
        :func:`~terraseg.pipeline.training.seeding.seed_epoch` seeds them.
    """
    data = config.data
    members = max(1, config.model.members)  # 0, automatic and unresolved, builds one
    per_step = place.world * data.batch_size * config.optimizer.accumulate
    steps = steps_per_epoch(data, len(info.train), per_step)
    weights = tile_weights(info.counts("train"), data.class_balance)
    sampler = WeightedCropSampler(
        weights, steps * per_step * members, place.rank, place.world, config.seed
    )
    crop = min(data.crop_size, info.tile_size)
    common: dict[str, Any] = {
        "num_workers": data.num_workers,
        "pin_memory": place.device.type == "cuda",
    }  # each loader gets a generator of its own, seeded every epoch by seed_epoch
    if data.num_workers > 0:
        common |= {
            "persistent_workers": True,
            "prefetch_factor": data.prefetch_factor,
            "worker_init_fn": _worker_threads,
            "multiprocessing_context": WORKER_START,
        }
    train = DataLoader(
        TrainCrops(info, crop, config.augment),
        batch_size=data.batch_size * members,
        sampler=sampler,
        drop_last=True,
        generator=torch.Generator(),
        **common,
    )
    val_sampler = rank_share(len(info.val), place.rank, place.world)
    val = DataLoader(
        ValTiles(info),
        batch_size=data.val_batch_size,
        sampler=val_sampler,
        generator=torch.Generator(),
        **common,
    )
    return train, val, sampler, steps


def steps_per_epoch(data: DataConfig, train_tiles: int, per_step: int) -> int:
    """Optimizer steps per epoch: ``samples_per_epoch`` crops, or one crop per training tile.

    One crop per tile gives a store of a few dozen tiles a handful of steps an
    epoch, too few for the schedule to train in; such epochs are lengthened to
    ``min_steps_per_epoch`` steps.
    """
    if data.samples_per_epoch:
        return max(1, -(-data.samples_per_epoch // per_step))
    return max(data.min_steps_per_epoch, -(-train_tiles // per_step))


# Loader workers fork on Linux, also in the processes that --devices N spawns: a spawned
# process would otherwise start each worker as a new interpreter, seconds per worker.
WORKER_START = "fork" if sys.platform == "linux" else None


def _worker_threads(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and augment; the main process owns the cores


def build_network(
    model_config: ModelConfig,
    config: TrainConfig,
    place: Placement,
    state: dict[str, Any] | None,
) -> tuple[nn.Module, nn.Module]:
    """The model, new (seeded by ``config.seed``) or with the weights ``state``.

    Args:
        model_config: What to build (bands and classes resolved from the store).
        config: The training config (seed, channels_last, compile).
        place: This process's device and the number of ranks.
        state: A state dict to load, or ``None`` for new weights.

    Returns:
        The raw model (what checkpoints hold) and what trains: the same model
        with SyncBN and wrapped in DDP across GPUs, compiled when configured.
    """
    torch.manual_seed(config.seed)
    raw: nn.Module = build_model(model_config)
    if state is not None:
        raw.load_state_dict(state)
    raw = raw.to(place.device)
    cuda = place.device.type == "cuda"
    if cuda and config.channels_last:
        raw = raw.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if cuda and place.world > 1:
        raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)
    trained: nn.Module = raw
    if place.world > 1:
        trained = DistributedDataParallel(raw, device_ids=[place.device.index] if cuda else None)
    if config.compile:
        trained = torch.compile(trained)  # type: ignore[assignment]
    return raw, trained


def make_step_context(
    config: TrainConfig, info: StoreInfo, place: Placement, trained: nn.Module, steps: int
) -> StepContext:
    """Loss, optimizer, schedule, precision and scaler of the run.

    Args:
        config: The training config.
        info: The store (class histograms for the class weights).
        place: This process's device and the number of ranks.
        trained: The module that trains (DDP-wrapped in a distributed run).
        steps: Optimizer steps per epoch (the schedule spans ``steps * config.epochs``).

    Returns:
        What a training step needs besides the batch.
    """
    weights = class_weights(info.counts("train"), config.loss.class_weights)
    loss_fn = SegmentationLoss(info.num_classes, weights, config.loss.dice_weight).to(place.device)
    optimizer = build_optimizer(trained, config.optimizer)
    scheduler = build_scheduler(optimizer, config.schedule, steps * config.epochs, steps)
    cuda = place.device.type == "cuda"
    autocast = choose_autocast(config.precision, place.device)
    return StepContext(
        model=trained,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        device=place.device,
        scaler=torch.amp.GradScaler(place.device.type) if autocast.scaler else None,
        autocast_dtype=autocast.dtype,
        channels_last=cuda and config.channels_last,
        grad_clip=config.optimizer.grad_clip,
        world=place.world,
    )
