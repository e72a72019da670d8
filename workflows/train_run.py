"""The training launcher: processes, the process group, and the MLflow tracker.

``launch`` starts ``devices`` worker processes with torch.distributed's elastic
launcher (the environment torchrun sets: RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), or joins the group when started under torchrun, or runs in this
process for one device. Each process joins the group, opens its tracker (MLflow on
rank 0 when tracking is enabled: the run folder's own MLflow run when resuming) and runs
:func:`terraseg.pipeline.training.session.run_training`, which writes the output folder.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import uuid
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from terraseg.pipeline import errors
from terraseg.pipeline.errors import TerrasegError, TrainingError
from terraseg.pipeline.training.config import TrainConfig
from terraseg.pipeline.training.records import prepare_output
from terraseg.pipeline.training.session import run_training
from terraseg.pipeline.training.tracker import NullTracker, Tracker


def tracker_for_rank(
    config: TrainConfig,
    is_main: bool,
    out: Path | None = None,
    *,
    resume: bool = False,
    former: str | None = None,
) -> AbstractContextManager[Tracker]:
    """The tracker of one training process: an MLflow run on the main rank, else nothing.

    The store is ``MLFLOW_TRACKING_URI`` (set by ``--tracking-uri`` before any
    process starts), MLflow's default when unset. With a run folder ``out``, the
    run's id is kept in ``out/mlflow_run_id`` and a resume reopens that run.

    Args:
        config: The training config; its ``tracking`` section names the experiment,
            the run and the registered model.
        is_main: Whether this process is rank 0.
        out: The run folder; ``None``: a new MLflow run that no folder records.
        resume: Training continues the run in ``out``: reopen its MLflow run.
        former: The MLflow run id ``out`` held before this command.

    Returns:
        A context manager yielding the tracker: the MLflow run ends with the block.
    """
    if not config.tracking.enabled or not is_main:
        return nullcontext(NullTracker())
    from terraseg.workflows.mlflow_tracking import start_tracking, track_run_folder

    uri, tracking = os.environ.get("MLFLOW_TRACKING_URI"), config.tracking
    if out is not None:
        return track_run_folder(uri, tracking, out, resume=resume, former=former)
    return start_tracking(
        uri, tracking.experiment, tracking.run_name, tracking.register_as, tracking.alias
    )


def former_run_id(config: TrainConfig, out: Path, is_main: bool) -> str | None:
    """The MLflow run id kept in the run folder ``out`` (rank 0, tracking on), else ``None``."""
    if not config.tracking.enabled or not is_main:
        return None
    from terraseg.workflows.mlflow_tracking import read_run_id

    return read_run_id(out)


# --------------------------------------------------------------------------- launch


def launch(
    config: TrainConfig,
    data: Path,
    out: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on ``config.devices`` processes of this machine, or join a torchrun group.

    Args:
        config: The training config (``devices`` and ``accelerator`` choose the processes).
        data: The Zarr store written by ``terraseg tile``.
        out: The run folder.
        resume: Continue from ``out/checkpoints/last.pt``.
        overwrite: Remove a former run in ``out`` (rank 0 does, the others wait).
        progress: Show a progress bar on rank 0.

    Returns:
        Rank 0's summary of the run.

    Raises:
        OutputExistsError: ``out`` holds a run, and neither ``resume`` nor ``overwrite``.
        TerrasegError: Whatever stopped the run, as raised by rank 0.
    """
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    if torchrun or config.devices == 1:
        return _train_here(config, data, out, resume, overwrite, progress)
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
    arguments = (payload, str(data), str(out), resume, overwrite, progress)
    results = elastic_launch(launch_config, _worker)(*arguments)
    return _unpack(results[0])


def _worker(
    payload: dict[str, Any], data: str, out: str, resume: bool, overwrite: bool, progress: bool
) -> dict[str, Any]:
    """Entry point of a launched process; library errors come back as data, not tracebacks."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        config = TrainConfig.model_validate(payload)
        summary = _train_here(config, Path(data), Path(out), resume, overwrite, progress)
        return {"summary": summary}
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


def _train_here(
    config: TrainConfig, data: Path, out: Path, resume: bool, overwrite: bool, progress: bool
) -> dict[str, Any]:
    """This process's share of the run: join the group, train, leave the group."""
    from terraseg.workflows.tracking_fallback import amend_summary, keep_training_through_outages

    place = init_distributed(config.accelerator)
    if config.threads:
        torch.set_num_threads(config.threads)
    former = former_run_id(config, out, place.is_main)  # read before --overwrite removes it
    try:
        prepare_output(out, place, resume=resume, overwrite=overwrite)
        tracking = tracker_for_rank(config, place.is_main, out, resume=resume, former=former)
        with keep_training_through_outages(tracking, out) as tracker:  # a server gone: goes on
            summary = run_training(
                config,
                data,
                out,
                place=place,
                tracker=tracker,
                resume=resume,
                progress=progress,
            )
        return amend_summary(summary, tracker, out)  # what tracking left undone, if anything
    finally:
        if place.world > 1 and dist.is_initialized():
            shutdown_distributed()


def shutdown_distributed() -> None:
    """Leave the process group; call it after this rank's last collective call.

    Gloo aborts the process at exit when a ``DistributedDataParallel`` still holds
    the group after it was destroyed, so garbage is collected first and no wrapped
    model outlives the group. No rank waits for the others here: the training
    session ends with a barrier after the last epoch, so a rank that leaves the
    group has no collective call in flight, and the ranks other than 0 do not
    wait while rank 0 exports and uploads the model (a collective timeout would
    end a successful run). A rank that failed leaves at once.
    """
    gc.collect()
    dist.destroy_process_group()
