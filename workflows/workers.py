"""Per-worker set-up run on Dask workers: CPU inference streams or the worker's own GPU.

On CPU every Dask worker thread is an inference stream of its own with one torch
thread: the streams overlap one another's reading and writing, and no OpenMP team
has to synchronize. A team started from a thread other than a process's first one
counts as oversubscribing a small machine, so libgomp makes its threads sleep
between the hundreds of parallel regions of a forward pass instead of spinning:
two streams of one thread each ran MobileNetV2 tiles 1.5x faster than one
stream of two threads in a Dask worker thread on 2 cores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from dask.distributed import WorkerPlugin

if TYPE_CHECKING:
    from dask.distributed import Client, Worker

CPU_THREADS_PER_STREAM = 1


@dataclass(frozen=True)
class ClusterPlan:
    """A LocalCluster for one device plan: workers, threads each, resources each declares."""

    workers: int
    threads_per_worker: int
    resources: dict[str, float] | None  # declared by every worker; tasks may ask for them


def local_cluster_plan(
    device: str, devices: int | None, torch_threads: int | None = None, gpus: int | None = None
) -> ClusterPlan:
    """The LocalCluster that runs prediction on ``device``.

    On CUDA: one worker per GPU (``devices`` of the ``gpus`` visible, default all),
    each declaring one ``GPU`` resource, which inference tasks ask for, and two
    threads, so that a block is read (a task without the resource) while another is
    inferred. On CPU: ``devices`` worker processes (default 1) with one inference
    stream per ``torch_threads`` cores.
    """
    if device == "cuda":
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        workers = min(devices or gpus, gpus) or 1
        return ClusterPlan(workers, 2, {"GPU": 1.0})
    workers = devices or 1
    return ClusterPlan(workers, worker_threads(device, workers, torch_threads), None)


def worker_threads(device: str, workers: int, torch_threads: int | None = None) -> int:
    """Dask threads per local worker.

    Two per GPU (one reads while the other infers); on CPU one inference stream
    per ``torch_threads`` cores (default: one per core).
    """
    if device == "cuda":
        return 2
    per_stream = torch_threads or CPU_THREADS_PER_STREAM
    return max(1, (os.cpu_count() or 1) // workers // per_stream)


class InferenceSetup(WorkerPlugin):
    """Prepares each worker for inference, including workers that join or restart later.

    On CUDA it records the worker's GPU (:func:`terraseg.pipeline.prediction.devices.assign_gpu`),
    which every inference task makes current in its own thread; on CPU it sets the
    torch threads of the worker's inference streams.
    """

    def __init__(self, device: str, names: list[str], gpus: int, threads: int | None) -> None:
        self.device, self.names, self.gpus, self.threads = device, names, gpus, threads

    def setup(self, worker: Worker) -> None:
        """Run in the worker process when the plugin is registered or the worker starts."""
        import torch

        from terraseg.pipeline.prediction.devices import assign_gpu, gpu_for_worker

        if self.device == "cuda":
            assign_gpu(gpu_for_worker(str(worker.name), self.names, self.gpus))
            return
        torch.set_num_threads(self.threads or CPU_THREADS_PER_STREAM)


def configure_workers(
    client: Client, device: str, threads: int | None = None, gpus: int | None = None
) -> None:
    """Register :class:`InferenceSetup` on ``client``'s workers (and any that join later)."""
    if device == "cuda" and gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    names = [str(info.get("name", address)) for address, info in
             client.scheduler_info()["workers"].items()]  # fmt: skip
    client.register_plugin(
        InferenceSetup(device, names, gpus or 0, threads), name="terraseg-inference"
    )
