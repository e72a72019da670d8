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
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dask.distributed import Client

CPU_THREADS_PER_STREAM = 1


def worker_threads(device: str, workers: int, torch_threads: int | None = None) -> int:
    """Dask threads per local worker.

    Two per GPU (one reads while the other infers); on CPU one inference stream
    per ``torch_threads`` cores (default: one per core).
    """
    if device == "cuda":
        return 2
    per_stream = torch_threads or CPU_THREADS_PER_STREAM
    return max(1, (os.cpu_count() or 1) // workers // per_stream)


def pin_worker(index: int, device: str, threads: int | None = None) -> None:
    """Give worker ``index`` its own GPU, or set the torch threads of its CPU streams.

    Runs on the worker before any model is loaded there.
    """
    import torch

    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(index % torch.cuda.device_count())
        return
    torch.set_num_threads(threads or CPU_THREADS_PER_STREAM)


def configure_workers(client: Client, device: str, threads: int | None = None) -> None:
    """Run :func:`pin_worker` on every worker of ``client``, numbered in address order."""
    for index, address in enumerate(sorted(client.scheduler_info()["workers"])):
        client.run(pin_worker, index, device, threads, workers=[address])
