"""Which GPU a worker process's inference uses, set in the thread that runs the task.

The current CUDA device is a per-thread setting: a device set on a Dask worker's
event-loop thread (where ``client.run`` and plugin hooks run) is not seen by the
worker's task threads, which would all build their models on ``cuda:0``. So the
worker set-up only records the worker's GPU (:func:`assign_gpu`) and every
inference task makes it current in its own thread (:func:`use_assigned_gpu`).
"""

from __future__ import annotations

_assigned_gpu: int | None = None  # this process's GPU, when it predicts on CUDA


def assign_gpu(index: int | None) -> None:
    """Record the GPU this worker process runs inference on (``None``: none)."""
    global _assigned_gpu
    _assigned_gpu = index


def assigned_gpu() -> int | None:
    """The GPU recorded for this process, if any."""
    return _assigned_gpu


def use_assigned_gpu() -> int | None:
    """Make this process's GPU the current CUDA device of the calling thread; return it."""
    if _assigned_gpu is None:
        return None
    import torch

    torch.cuda.set_device(_assigned_gpu)
    return _assigned_gpu


def gpu_for_worker(name: str, names: list[str], gpus: int) -> int:
    """The GPU of the worker called ``name`` among ``names``: round robin over ``gpus``.

    A worker restarted under its name (a nanny's restart) gets the same GPU; a
    name not among ``names`` (a worker that joined later) gets the first.
    """
    ordered = sorted(names)
    position = ordered.index(name) if name in ordered else 0
    return position % max(1, gpus)
