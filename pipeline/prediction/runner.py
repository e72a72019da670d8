"""Running a model artifact on batches of tiles, loaded once per process."""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.artifact import ModelArtifact
from pipeline.prediction.blocks import BatchPredictor
from pipeline.prediction.tta import with_tta

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def open_model(reference: str, tracking_uri: str | None = None) -> ModelArtifact:
    """Load a model from a local folder or a model URI (``models:/...``, ``runs:/...``).

    Args:
        reference: The folder or URI.
        tracking_uri: The tracking store of ``models:/`` and ``runs:/`` URIs
            (default: ``MLFLOW_TRACKING_URI``, else MLflow's default).
    """
    from pipeline.registry import load_model

    return load_model(reference, tracking_uri)


@lru_cache(maxsize=2)
def cached_model(reference: str, tracking_uri: str | None = None) -> ModelArtifact:
    """:func:`open_model`, once per process (each Dask worker loads a model once)."""
    logger.info("loading model %s in process %d", reference, os.getpid())
    return open_model(reference, tracking_uri)


@lru_cache(maxsize=4)
def batch_predictor(
    reference: str,
    device: str,
    precision: str,
    tta: str,
    threads: int | None = None,
    tracking_uri: str | None = None,
) -> BatchPredictor:
    """A function from normalized tiles (N, bands, T, T) to probabilities (N, classes, T, T).

    CPU kernels sum in an order that depends on the thread count, so ``threads``
    is applied in every process that predicts: the same setting gives bit-identical
    results on any scheduler.
    """
    import torch

    if threads is not None:
        torch.set_num_threads(threads)

    artifact = cached_model(reference, tracking_uri)
    device = resolve_device(device)
    model: Any = artifact.build_model(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if precision == "auto" and device == "cuda":
        dtype = torch.bfloat16
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(device, non_blocking=True)
        if device == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with (
            torch.inference_mode(),
            torch.autocast(
                device_type=device, dtype=dtype or torch.float32, enabled=dtype is not None
            ),
        ):
            probs = torch.softmax(model(x).float(), dim=1)
        return probs.cpu().numpy()

    return with_tta(predict, tta)
