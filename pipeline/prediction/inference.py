"""Running a model artifact on batches of tiles, loaded once per process."""

from __future__ import annotations

import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from terraseg.pipeline.artifact import ModelArtifact
from terraseg.pipeline.errors import ConfigError, InputError, WeightsError
from terraseg.pipeline.prediction.blocks import BatchPredictor
from terraseg.pipeline.prediction.tta import with_tta

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_device(device: str) -> str:
    """Resolve ``device`` and refuse CUDA where torch sees no GPU, before any work.

    Raises:
        ConfigError: ``cuda`` was asked for and no CUDA device is visible.
    """
    import torch

    resolved = resolve_device(device)
    if resolved == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda, but torch sees no CUDA device (CPU-only torch build, no GPU, "
            "or CUDA_VISIBLE_DEVICES empty); use --device cpu or auto"
        )
    return resolved


def cpu_has_bf16() -> bool:
    """True when this CPU has native bf16 instructions (AVX512-BF16 or AMX).

    oneDNN also runs bf16 on plain AVX-512 CPUs, but emulated and slower than
    fp32, so the CPU's own flags decide (Linux; elsewhere this is False).
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def inference_dtype(precision: str, device: str) -> Any:
    """The torch dtype of inference.

    ``auto`` is bf16 on CUDA and on CPUs with native bf16 instructions, where it
    runs about 1.8x faster than fp32, and fp32 elsewhere.
    """
    import torch

    if precision == "auto":
        precision = "bf16" if device == "cuda" or cpu_has_bf16() else "fp32"
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def check_weights(artifact: ModelArtifact, reference: str) -> None:
    """Build the network once before any work, so weights that do not fit it fail here.

    Raises:
        WeightsError: The weights do not fit the architecture (the model is named).
    """
    try:
        artifact.build_model("cpu")
    except WeightsError as exc:
        raise WeightsError(exc.message, path=reference) from None


def check_precision(artifact: ModelArtifact, reference: str, precision: str, device: str) -> None:
    """Refuse, before any work, a precision the model or the device cannot run.

    Raises:
        ConfigError: int8 on another device than the CPU.
        InputError: int8 for a model without int8 calibration.
    """
    if precision != "int8":
        return
    if device != "cpu":
        raise ConfigError(f"int8 inference runs on CPU only (--device cpu), not {device}")
    if artifact.calibration is None:
        raise InputError(
            "the model has no int8 calibration (it is stored when a model is trained); "
            "retrain it or predict with --precision bf16",
            path=reference,
        )


def int8_model(model: Any, artifact: ModelArtifact, reference: str, device: str) -> Any:
    """``model`` with its backbone in int8 and the rest in bf16 (fp32 without native bf16).

    Raises:
        ConfigError: Not on CPU, or this torch cannot run int8.
        InputError: The model has no int8 calibration, or one that does not fit.
    """
    from terraseg.pipeline.model.quantization import quantize_backbone

    check_precision(artifact, reference, "int8", device)
    assert artifact.calibration is not None
    return quantize_backbone(model, artifact.calibration, inference_dtype("auto", "cpu"))


def open_model(reference: str, tracking_uri: str | None = None) -> ModelArtifact:
    """Load a model from a local folder or a model URI (``models:/...``, ``runs:/...``).

    Args:
        reference: The folder or URI.
        tracking_uri: The tracking store of ``models:/`` and ``runs:/`` URIs
            (default: ``MLFLOW_TRACKING_URI``, else MLflow's default).
    """
    from terraseg.pipeline.registry import load_model

    return load_model(reference, tracking_uri)


def open_for_workers(
    reference: str, tracking_uri: str | None, cache: Path, *, shared_disk: bool
) -> tuple[ModelArtifact, str]:
    """Load a model once for a run; say how the run's workers load it.

    A ``models:/`` or ``runs:/`` URI is resolved here, once: to its exact version
    (an alias cannot move under a running job) and to a local folder, found on
    this machine's disk or downloaded into ``cache`` (see
    :func:`terraseg.pipeline.registry.fetch_model`). Workers that share this machine's
    disk (a LocalCluster, the driver's own process) load that folder: the run
    downloads the model at most once. Workers elsewhere get the exact URI and
    download it themselves, once per process.

    Args:
        reference: A local folder or a model URI.
        tracking_uri: The tracking store of model URIs.
        cache: Folder for a downloaded model (e.g. in the run's output folder).
        shared_disk: The workers see this machine's files.

    Returns:
        The model (for a URI, ``metadata["resolved_uri"]`` is its exact version)
        and the reference the workers load.
    """
    from terraseg.pipeline.registry import fetch_model, load_model

    if not reference.startswith(("models:/", "runs:/")):
        return open_model(reference, tracking_uri), reference
    folder, exact = fetch_model(reference, tracking_uri, cache)
    artifact = load_model(folder)
    artifact.metadata["resolved_uri"] = exact
    return artifact, str(folder) if shared_disk else exact


@lru_cache(maxsize=2)
def cached_model(
    reference: str, tracking_uri: str | None = None, weights: str | None = None
) -> ModelArtifact:
    """:func:`open_model`, once per process and weights (each Dask worker loads it once).

    ``weights`` is the content hash the driver saw: a model folder retrained in
    place while workers live is loaded again, not served from the cache.
    """
    logger.info("loading model %s in process %d", reference, os.getpid())
    return open_model(reference, tracking_uri)


_building = threading.Lock()


def batch_predictor(
    reference: str,
    device: str,
    precision: str,
    tta: str,
    threads: int | None = None,
    tracking_uri: str | None = None,
    weights: str | None = None,
) -> BatchPredictor:
    """A function from normalized tiles (N, bands, T, T) to probabilities (N, classes, T, T).

    Built once per process and settings. CPU kernels sum in an order that depends
    on the thread count, so ``threads`` is applied in every process that predicts:
    the same setting gives bit-identical results on any scheduler. A worker's
    threads wait for the one that builds it: the model is loaded once, and the
    int8 conversion's tracing patches torch globally, so it must not run twice at once.
    """
    with _building:
        return _build_predictor(reference, device, precision, tta, threads, tracking_uri, weights)


@lru_cache(maxsize=4)
def _build_predictor(
    reference: str,
    device: str,
    precision: str,
    tta: str,
    threads: int | None,
    tracking_uri: str | None,
    weights: str | None,
) -> BatchPredictor:
    """:func:`batch_predictor` without the lock (cached per settings)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    artifact = cached_model(reference, tracking_uri, weights)
    return predictor_for(artifact, device, precision, tta, reference)


def predictor_for(
    artifact: ModelArtifact, device: str, precision: str, tta: str, reference: str = "model"
) -> BatchPredictor:
    """A batch predictor of ``artifact`` (not cached; ``reference`` names it in errors)."""
    import torch

    from terraseg.pipeline.model.inference import inference_network

    device = resolve_device(device)
    model: Any = inference_network(artifact.build_model(device), device)
    if precision == "int8":
        dtype = torch.float32  # what the model is fed: the backbone quantizes it
        model = int8_model(model, artifact, reference, device)
        whole_model, autocast = True, False
    else:
        dtype = inference_dtype(precision, device)
        model = model.to(memory_format=torch.channels_last)  # suits oneDNN and tensor cores
        # On CPU the whole network runs in bf16 (oneDNN's native bf16 kernels); autocast
        # would keep batch norm and upsampling in fp32 and convert at every layer.
        whole_model = device == "cpu" and dtype == torch.bfloat16
        if whole_model:
            model = model.to(dtype)
        autocast = dtype != torch.float32 and not whole_model

    def predict(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(  # one copy: device, dtype and layout together
            device=device,
            dtype=dtype if whole_model else torch.float32,
            memory_format=torch.channels_last,
            non_blocking=True,
        )
        with (
            torch.inference_mode(),
            torch.autocast(device_type=device, dtype=dtype, enabled=autocast),
        ):
            # plain (N, C, H, W) layout in fp32 from the last upsampling on: blending
            # reads it as numpy
            logits = model(x, logits_dtype=torch.float32)
            probs = torch.softmax(logits, dim=1)
        return probs.cpu().numpy()

    return with_tta(predict, tta)
