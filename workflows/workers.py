"""Per-worker set-up run on Dask workers: CPU threads or the worker's own GPU."""

from __future__ import annotations

import os


def pin_worker(index: int, count: int, device: str) -> None:
    """Split CPU cores between ``count`` local workers, or give worker ``index`` one GPU.

    Runs on the worker before any model is loaded there.
    """
    import torch

    if device == "cuda" and torch.cuda.is_available():
        torch.cuda.set_device(index % torch.cuda.device_count())
        return
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // count))
