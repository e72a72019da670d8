"""The training run, in phases: config, distributed init, data, model (new or resumed), loop.

``launch`` starts ``devices`` worker processes with torch.distributed's elastic
launcher (the environment torchrun sets: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), or joins the group when started under torchrun, or runs in this
process for one device. Rank 0 alone logs, tracks and writes files; metrics are
computed from confusion matrices summed over ranks.

Output folder::

    OUT/config.yaml               the full training config
    OUT/metrics.jsonl             one line of metrics per epoch
    OUT/checkpoints/last.pt       model, optimizer, scheduler, scaler, epoch, RNG, config
    OUT/checkpoints/best.pt       the same at the best validation mean IoU
    OUT/plots/*.png               confusion matrix, validation overlays, learning curves
    OUT/model/                    the best model as a terraseg model artifact
    OUT/summary.json              what the command prints at the end
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import socket
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader

from pipeline import errors
from pipeline.artifact import ModelArtifact, save_artifact
from pipeline.errors import ConfigError, TerrasegError, TrainingError
from pipeline.model.config import ModelConfig
from pipeline.model.deeplab import build_model
from pipeline.tracking import NullTracker, Tracker, flatten
from pipeline.training.calibration import calibrate_on_store
from pipeline.training.checkpoint import (
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pipeline.training.config import TrainConfig
from pipeline.training.dataset import StoreInfo, TrainCrops, ValTiles, read_store_info
from pipeline.training.loop import (
    NonFiniteLossError,
    StepContext,
    all_reduce_sum,
    train_one_epoch,
    validate,
)
from pipeline.training.losses import SegmentationLoss, class_weights
from pipeline.training.metrics import scores
from pipeline.training.optim import build_optimizer, build_scheduler
from pipeline.training.plots import plot_confusion, plot_curves, plot_overlays
from pipeline.training.sampler import WeightedCropSampler, rank_share, tile_weights

logger = logging.getLogger(__name__)


def make_tracker(config: TrainConfig, is_main: bool) -> AbstractContextManager[Tracker]:
    """The run's experiment tracker: MLflow on the main rank when enabled, else nothing.

    The store is ``MLFLOW_TRACKING_URI`` (set by ``--tracking-uri`` before any
    process starts), MLflow's default when unset.
    """
    if not config.tracking.enabled:
        return nullcontext(NullTracker())
    from workflows.tracking import make_tracker as mlflow_tracker

    tracking = config.tracking
    return mlflow_tracker(
        is_main,
        os.environ.get("MLFLOW_TRACKING_URI"),
        tracking.experiment,
        tracking.run_name,
        tracking.register_as,
        tracking.alias,
    )


# --------------------------------------------------------------------------- launch


def launch(
    config: TrainConfig, data: Path, out: Path, *, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train on ``config.devices`` processes of this machine, or join a torchrun group.

    Returns:
        Rank 0's summary of the run.

    Raises:
        TerrasegError: Whatever stopped the run, as raised by rank 0.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return run(config, data, out, resume=resume, progress=progress)
    if config.devices == 1:
        return run(config, data, out, resume=resume, progress=progress)
    gpus = torch.cuda.device_count() if config.accelerator != "cpu" else 0
    if (config.accelerator == "cuda" or gpus) and config.devices > gpus:
        raise TrainingError(
            f"--devices {config.devices} but {gpus} GPU(s) visible; lower --devices "
            "or pass --accelerator cpu"
        )
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    launch_config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=config.devices,
        run_id=f"terraseg-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=f"127.0.0.1:{free_port()}",
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    payload = config.model_dump(mode="json", exclude_unset=True)  # defaults stay defaults
    results = elastic_launch(launch_config, _worker)(payload, str(data), str(out), resume, progress)
    return _unpack(results[0])


def _worker(
    payload: dict[str, Any], data: str, out: str, resume: bool, progress: bool
) -> dict[str, Any]:
    """Entry point of a launched process; library errors come back as data, not tracebacks."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = TrainConfig.model_validate(payload)
        return {"summary": run(config, Path(data), Path(out), resume=resume, progress=progress)}
    except TerrasegError as exc:
        return {"error": type(exc).__name__, "message": exc.message, "path": exc.path}


def _unpack(result: dict[str, Any]) -> dict[str, Any]:
    if "error" in result:
        cls = getattr(errors, result["error"], TrainingError)
        raise cls(result["message"], path=result["path"])
    summary: dict[str, Any] = result["summary"]
    return summary


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    """This process's place in the run."""

    rank: int
    local_rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, tracks and writes files."""
        return self.rank == 0


def init_distributed(accelerator: str) -> Dist:
    """Read rank, local rank and world size from the torchrun environment and join the group.

    NCCL on CUDA, gloo on CPU. Without the environment, a single process.

    Raises:
        TrainingError: CUDA was asked for but is not available, or too few GPUs.
    """
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    cuda = torch.cuda.is_available() and accelerator in ("auto", "cuda")
    if accelerator == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--accelerator cuda, but CUDA is not available; use cpu or auto")
    if cuda and local_rank >= torch.cuda.device_count():
        raise TrainingError(
            f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
            "lower --devices"
        )
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    elif world > 1:  # share the cores between the processes of this machine
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
    return Dist(rank, local_rank, world, device)


# --------------------------------------------------------------------------- phases


def resolve_model_config(config: TrainConfig, info: StoreInfo) -> ModelConfig:
    """The model config with bands and classes taken from the store.

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
    return config.model.model_copy(update=wanted)


def make_loaders(
    config: TrainConfig, info: StoreInfo, ctx: Dist
) -> tuple[DataLoader[Any], DataLoader[Any], WeightedCropSampler, int]:
    """Training and validation loaders of this rank, the training sampler, and steps per epoch."""
    data = config.data
    per_step = ctx.world * data.batch_size * config.optimizer.accumulate
    total = data.samples_per_epoch or len(info.train)
    steps = max(1, -(-total // per_step))  # optimizer steps per epoch
    weights = tile_weights(info.counts("train"), data.class_balance)
    sampler = WeightedCropSampler(weights, steps * per_step, ctx.rank, ctx.world, config.seed)
    crop = min(data.crop_size, info.tile_size)
    common: dict[str, Any] = {
        "num_workers": data.num_workers,
        "pin_memory": ctx.device.type == "cuda",
    }
    if data.num_workers > 0:
        common |= {
            "persistent_workers": True,
            "prefetch_factor": data.prefetch_factor,
            "worker_init_fn": _worker_threads,
        }
    train = DataLoader(
        TrainCrops(info, crop, config.augment),
        batch_size=data.batch_size,
        sampler=sampler,
        drop_last=True,
        **common,
    )
    val_sampler = rank_share(len(info.val), ctx.rank, ctx.world)
    val = DataLoader(ValTiles(info), batch_size=data.val_batch_size, sampler=val_sampler, **common)
    return train, val, sampler, steps


def _worker_threads(_: int) -> None:
    torch.set_num_threads(1)  # workers decode and augment; the main process owns the cores


def build_network(
    model_config: ModelConfig, config: TrainConfig, ctx: Dist, state: dict[str, Any] | None
) -> tuple[nn.Module, nn.Module]:
    """The model (raw, for checkpoints) and what trains (SyncBN, DDP, compiled as configured)."""
    torch.manual_seed(config.seed)
    raw: nn.Module = build_model(model_config)
    if state is not None:
        raw.load_state_dict(state)
    raw = raw.to(ctx.device)
    cuda = ctx.device.type == "cuda"
    if cuda and config.channels_last:
        raw = raw.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    if cuda and ctx.world > 1:
        raw = nn.SyncBatchNorm.convert_sync_batchnorm(raw)
    trained: nn.Module = raw
    if ctx.world > 1:
        trained = DistributedDataParallel(raw, device_ids=[ctx.device.index] if cuda else None)
    if config.compile:
        trained = torch.compile(trained)  # type: ignore[assignment]
    return raw, trained


def make_step_context(
    config: TrainConfig, info: StoreInfo, ctx: Dist, trained: nn.Module, steps: int
) -> StepContext:
    """Loss, optimizer, schedule, precision and scaler of the run."""
    weights = class_weights(info.counts("train"), config.loss.class_weights)
    loss_fn = SegmentationLoss(info.num_classes, weights, config.loss.dice_weight).to(ctx.device)
    optimizer = build_optimizer(trained, config.optimizer)
    scheduler = build_scheduler(optimizer, config.schedule, steps * config.epochs, steps)
    cuda = ctx.device.type == "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.precision)
    scaler = torch.amp.GradScaler("cuda") if cuda and config.precision == "fp16" else None
    return StepContext(
        model=trained,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        device=ctx.device,
        scaler=scaler,
        autocast_dtype=dtype if cuda else None,
        channels_last=cuda and config.channels_last,
        grad_clip=config.optimizer.grad_clip,
        world=ctx.world,
    )


@dataclass
class RunState:
    """Progress that a checkpoint carries besides the weights and optimizer."""

    epoch: int = 0
    best_miou: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, Any]] | None = None

    def as_dict(self) -> dict[str, Any]:
        """For the checkpoint."""
        return {
            "epoch": self.epoch,
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "history": self.history or [],
        }


def run(
    config: TrainConfig,
    data: Path,
    out: Path,
    *,
    resume: bool = False,
    progress: bool = True,
    tracker: Tracker | None = None,
) -> dict[str, Any]:
    """Train a DeepLabV3+ on the store ``data``; write checkpoints, plots and the model to ``out``.

    Returns:
        The summary: best epoch, best validation mean IoU, per-class IoU, paths.

    Raises:
        TrainingError: The store cannot be trained on, the checkpoint does not match
            it, or the loss became NaN (the last good checkpoint is kept).
    """
    ctx = init_distributed(config.accelerator)
    if config.threads:
        torch.set_num_threads(config.threads)
    finished = False
    try:
        with nullcontext(tracker) if tracker else make_tracker(config, ctx.is_main) as active:
            summary = _train(config, data, out, ctx, resume, progress and ctx.is_main, active)
        finished = True
        return summary
    finally:
        if ctx.world > 1 and dist.is_initialized():
            shutdown_distributed(finished)


def shutdown_distributed(finished: bool) -> None:
    """Leave the process group without tearing connections down under a peer.

    Gloo aborts the process at exit when a ``DistributedDataParallel`` still holds the
    group after it was destroyed, or when one rank destroys it while its peer is still
    talking to it. Garbage is collected first so that no wrapped model outlives the
    group, and ranks that finished wait for each other; a rank that failed does not
    wait, since its peers may never arrive.
    """
    gc.collect()
    if finished:
        dist.barrier()
    dist.destroy_process_group()


def _train(
    config: TrainConfig,
    data: Path,
    out: Path,
    ctx: Dist,
    resume: bool,
    progress: bool,
    tracker: Tracker,
) -> dict[str, Any]:
    # --- data
    info = read_store_info(data, config.data.min_valid_fraction)
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(out / "checkpoints" / "last.pt")
        check_compatible(checkpoint, info.classes.names, len(info.band_names), data)
    model_config = resolve_model_config(config, info)
    config = config.model_copy(update={"model": model_config})  # saved with bands and classes
    train_loader, val_loader, sampler, steps = make_loaders(config, info, ctx)
    # --- model, optimizer and state (new or resumed)
    raw, trained = build_network(
        model_config, config, ctx, checkpoint["model"] if checkpoint else None
    )
    step_ctx = make_step_context(config, info, ctx, trained, steps)
    state = RunState(history=[])
    if checkpoint is not None:
        _restore(checkpoint, step_ctx, state)
    if ctx.is_main:
        _start_outputs(config, info, out, state, tracker)
    # --- loop
    run_config = RunConfig(config, info, model_config, out, ctx, tracker)
    for epoch in range(state.epoch + 1, config.epochs + 1):
        sampler.set_epoch(epoch)
        try:
            train_stats = train_one_epoch(
                step_ctx,
                train_loader,
                steps=steps,
                accumulate=config.optimizer.accumulate,
                epoch=epoch,
                progress=progress,
            )
        except NonFiniteLossError as exc:
            raise nan_error(exc, epoch, out / "checkpoints" / "last.pt") from None
        matrix, samples = validate(
            raw, val_loader, info.num_classes, step_ctx, config.overlays if ctx.is_main else 0
        )
        summed = all_reduce_sum(matrix, ctx.world).cpu().numpy()
        stop = _end_epoch(run_config, step_ctx, raw, state, epoch, train_stats, summed, samples)
        if stop:
            break
    if not ctx.is_main:
        return {}
    return _finish(run_config, state)


def nan_error(exc: NonFiniteLossError, epoch: int, last: Path) -> TrainingError:
    """The error that stops a run whose loss is no longer finite."""
    kept = "the last good checkpoint is kept" if last.is_file() else "no checkpoint was written"
    return TrainingError(
        f"loss became {exc.value} at epoch {epoch}, step {exc.step} (optimizer steps from the "
        f"start); stopped, {kept}; lower optimizer.lr or set optimizer.grad_clip",
        path=last,
    )


@dataclass
class RunConfig:
    """What every end-of-epoch step needs."""

    config: TrainConfig
    info: StoreInfo
    model_config: ModelConfig
    out: Path
    ctx: Dist
    tracker: Tracker


def _restore(checkpoint: dict[str, Any], step_ctx: StepContext, state: RunState) -> None:
    step_ctx.optimizer.load_state_dict(checkpoint["optimizer"])
    if step_ctx.scaler is not None and checkpoint.get("scaler"):
        step_ctx.scaler.load_state_dict(checkpoint["scaler"])
    step_ctx.step = int(checkpoint["step"])
    if isinstance(step_ctx.scheduler, LambdaLR):
        continue_schedule(step_ctx.scheduler, step_ctx.step)
    saved = checkpoint["state"]
    state.epoch, state.best_miou = int(saved["epoch"]), float(saved["best_miou"])
    state.best_epoch, state.history = int(saved["best_epoch"]), list(saved["history"])
    set_rng_state(checkpoint["rng"])


def continue_schedule(scheduler: LambdaLR, step: int) -> None:
    """Place the current config's schedule at ``step``.

    The schedule is rebuilt from the config rather than loaded, so a resumed run
    may raise ``epochs`` or change ``optimizer.lr``; with the same config the
    learning rates equal those of an uninterrupted run.
    """
    scheduler.last_epoch = step
    lrs = [
        base * fn(step) for base, fn in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)
    ]
    for group, base, lr in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, lrs, strict=True
    ):
        group["initial_lr"], group["lr"] = base, lr
    scheduler._last_lr = lrs


def _start_outputs(
    config: TrainConfig, info: StoreInfo, out: Path, state: RunState, tracker: Tracker
) -> None:
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "plots").mkdir(exist_ok=True)
    config_path = out / "config.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    history = state.history or []
    (out / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in history))
    params = flatten(config.model_dump(mode="json"))
    params["data.store"] = info.path
    for band in info.statistics:
        for key in ("mean", "std", "p2", "p98"):
            params[f"statistics.{band['band']}.{key}"] = band[key]
    if not isinstance(tracker, NullTracker):
        from workflows.tracking import code_version

        params |= code_version()
    tracker.log_params(params)
    tracker.log_artifact(config_path)


def epoch_metrics(
    epoch: int, train: dict[str, float], result: dict[str, Any], names: list[str]
) -> dict[str, Any]:
    """Flat metrics of one epoch, as logged to the tracker and metrics.jsonl."""
    metrics: dict[str, Any] = {"epoch": epoch}
    metrics |= {f"train/{k}": v for k, v in train.items()}
    for key in ("mean_iou", "pixel_accuracy", "mean_accuracy", "mean_f1"):
        metrics[f"val/{key}"] = result[key]
    for kind in ("iou", "accuracy", "f1"):
        for name, value in zip(names, result[kind], strict=True):
            metrics[f"val/{kind}/{name}"] = value
    return metrics


def _end_epoch(
    rc: RunConfig,
    step_ctx: StepContext,
    raw: nn.Module,
    state: RunState,
    epoch: int,
    train_stats: dict[str, float],
    matrix: np.ndarray[Any, Any],
    samples: list[Any],
) -> bool:
    """Record the epoch, checkpoint it, and say whether early stopping ends the run."""
    result = scores(matrix)
    metrics = epoch_metrics(epoch, train_stats, result, rc.info.classes.names)
    miou = result["mean_iou"] if np.isfinite(result["mean_iou"]) else 0.0
    improved = miou > state.best_miou
    if improved:
        state.best_miou, state.best_epoch = miou, epoch
    state.epoch = epoch
    assert state.history is not None
    state.history.append(metrics)
    if rc.ctx.is_main:
        _write_epoch(rc, step_ctx, raw, state, metrics, improved)
        if improved:
            _plot_best(rc, epoch, matrix, samples)
        finite = {k: float(v) for k, v in metrics.items() if k != "epoch" and np.isfinite(v)}
        rc.tracker.log_metrics(finite, step=epoch)
        logger.info("epoch %d: loss %.4f, val mIoU %.4f", epoch, train_stats["loss"], miou)
    patience = rc.config.patience
    return patience > 0 and epoch - state.best_epoch >= patience


def _write_epoch(
    rc: RunConfig,
    step_ctx: StepContext,
    raw: nn.Module,
    state: RunState,
    metrics: dict[str, Any],
    improved: bool,
) -> None:
    with (rc.out / "metrics.jsonl").open("a") as stream:
        stream.write(json.dumps(metrics) + "\n")
    last = rc.out / "checkpoints" / "last.pt"
    save_checkpoint(last, make_checkpoint(rc, step_ctx, raw, state))
    if improved:
        shutil.copyfile(last, rc.out / "checkpoints" / ".best.pt.tmp")
        os.replace(rc.out / "checkpoints" / ".best.pt.tmp", rc.out / "checkpoints" / "best.pt")


def make_checkpoint(
    rc: RunConfig, step_ctx: StepContext, raw: nn.Module, state: RunState
) -> dict[str, Any]:
    """The checkpoint dict: unwrapped model state, its config, optimizer, schedule, RNG, config."""
    scaler = step_ctx.scaler
    scheduler = step_ctx.scheduler
    return {
        "model": raw.state_dict(),
        "model_config": rc.model_config.model_dump(mode="json"),
        "config": rc.config.model_dump(mode="json"),
        "classes": rc.info.classes.names,
        "optimizer": step_ctx.optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "step": step_ctx.step,
        "state": state.as_dict(),
        "rng": rng_state(),
    }


def _plot_best(rc: RunConfig, epoch: int, matrix: Any, samples: list[Any]) -> None:
    plots = rc.out / "plots"
    title = f"validation, epoch {epoch}"
    paths = [plot_confusion(matrix, rc.info.classes.names, plots / "confusion.png", title)]
    if samples:
        paths.append(plot_overlays(samples, rc.info.classes, plots / "overlays.png", title))
    for path in paths:
        rc.tracker.log_artifact(path, "plots")


def _finish(rc: RunConfig, state: RunState) -> dict[str, Any]:
    """Export the best model as an artifact, plot the curves, and summarize."""
    out, history = rc.out, state.history or []
    best = load_checkpoint(out / "checkpoints" / "best.pt")
    best_metrics = next(h for h in history if h["epoch"] == state.best_epoch)
    artifact = ModelArtifact(
        model_config=rc.model_config.model_dump(mode="json"),
        band_names=rc.info.band_names,
        normalization=rc.info.normalization,
        classes=rc.info.classes,
        tile_size=rc.info.tile_size,
        state_dict=best["model"],
        input_dtype=rc.info.input_dtype,
        metadata={"epoch": state.best_epoch, "metrics": best_metrics, "store": rc.info.path},
    )
    artifact.calibration = calibrate_on_store(
        artifact.build_model(), rc.info, rc.config.int8_calibration
    )
    model_dir = save_artifact(artifact, out / "model")
    curves = plot_curves(history, out / "plots" / "curves.png")
    rc.tracker.log_artifact(curves, "plots")
    model_uri = rc.tracker.log_model(model_dir)
    names = rc.info.classes.names
    summary = {
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "best_val_mean_iou": state.best_miou,
        "val_iou": {n: best_metrics[f"val/iou/{n}"] for n in names},
        "val_pixel_accuracy": best_metrics["val/pixel_accuracy"],
        "last_train_loss": history[-1]["train/loss"],
        "images_per_s": history[-1]["train/images_per_s"],
        "data_wait": history[-1]["train/data_wait"],
        "model": str(model_dir),
        "model_uri": model_uri,
        "checkpoints": str(out / "checkpoints"),
        "out": str(out),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
