"""``terraseg bench gpu``: the CUDA paths end to end, with figures, in a few minutes.

For a machine with GPUs, run once (``scripts/gpu_check.sh`` installs what a bare
machine lacks first). Three parts, each printed as it ends:

1. Model steps per backbone: forward and backward in bf16 autocast with
   channels_last, beside fp32 in the default layout measured in the same run
   (the ratio is the speed-up), and the GPU memory peak.
2. Training: one epoch of ``terraseg train`` on a generated store with
   ``--devices`` = every GPU (NCCL and SyncBatchNorm where there are several).
3. Prediction: ``terraseg predict --device cuda`` of one generated scene on every
   local GPU: pipeline megapixels per second beside the model alone on the same
   number of tiles.

``--device cpu`` runs the same code on the CPU at small sizes, which is how the
test suite keeps the script working on machines without a GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, get_args

import click

from terraseg.pipeline.model.config import BackboneName

_SCRIPT = Path(sys.executable).parent / "terraseg"
# the installed script, or the module where terraseg runs from a source tree on PYTHONPATH
TERRASEG = (
    [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "terraseg.workflows.cli.main"]
)


@click.command("gpu")
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default="cuda", show_default=True)
@click.option("--tile", type=click.IntRange(min=64), default=512, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--scene-size", type=click.IntRange(min=256), default=4096, show_default=True)
@click.option("--backbone", "backbones", multiple=True, type=click.Choice(get_args(BackboneName)),
              help="Backbones to time [all].")  # fmt: skip
@click.option("--train-backbone", type=click.Choice(get_args(BackboneName)), default="resnet50",
              show_default=True, help="Backbone of the training epoch.")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_gpu(
    device: str,
    tile: int,
    batch_size: int,
    steps: int,
    scene_size: int,
    backbones: tuple[str, ...],
    train_backbone: str,
    workdir: Path | None,
) -> None:
    """Model steps per backbone, one training epoch on all GPUs, and predict on all GPUs."""
    gpus = _devices(device)
    _print({"device": device, "gpus": gpus, "torch": _torch_version()})
    for backbone in backbones or get_args(BackboneName):
        _print(model_steps(backbone, device, tile, batch_size, steps))
    with tempfile.TemporaryDirectory(dir=workdir) as folder:
        root = Path(folder)
        scene = _make_data(root, scene_size, tile)
        _print(train_epoch(root, device, gpus, tile, batch_size, train_backbone))
        _print(predict_scene(root, scene, device, gpus))


def _devices(device: str) -> int:
    """GPUs visible (1 for the CPU); refuses CUDA without a GPU."""
    import torch

    if device == "cpu":
        return 1
    if not torch.cuda.is_available():
        raise click.ClickException("no CUDA device is visible; run with --device cpu to try")
    return torch.cuda.device_count()


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _print(record: dict[str, Any]) -> None:
    click.echo(json.dumps(record))


def model_steps(backbone: str, device: str, tile: int, batch: int, steps: int) -> dict[str, Any]:
    """Forward and backward steps per second in fp32 and in bf16 with channels_last."""
    import torch

    from terraseg.pipeline.model.config import ModelConfig
    from terraseg.pipeline.model.deeplab import build_model

    config = ModelConfig(backbone=backbone, in_channels=4, num_classes=5)
    model: Any = build_model(config).to(device)
    x = torch.randn(batch, 4, tile, tile, device=device)
    fp32 = _step_rate(model, x, steps, bf16=False)
    model = model.to(memory_format=torch.channels_last)
    fast = _step_rate(model, x.to(memory_format=torch.channels_last), steps, bf16=True)
    return {
        "part": "model",
        "backbone": backbone,
        "fp32_steps_s": round(fp32["rate"], 3),
        "bf16_channels_last_steps_s": round(fast["rate"], 3),
        "speed_up": round(fast["rate"] / fp32["rate"], 2),
        "peak_gib": round(max(fp32["peak"], fast["peak"]) / 2**30, 2),
    }


def _step_rate(model: Any, x: Any, steps: int, *, bf16: bool) -> dict[str, float]:
    """Steps per second of forward + backward after two warm-up steps, and memory peak."""
    import torch

    cuda = x.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for step in range(steps + 2):
        if step == 2:
            if cuda:
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(x).float().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    peak = float(torch.cuda.max_memory_allocated()) if cuda else 0.0
    return {"rate": steps / (time.perf_counter() - start), "peak": peak}


def _make_data(root: Path, scene_size: int, tile: int) -> Path:
    """Synthesize scenes and tile two of them; return the scene to predict."""
    _terraseg("synth", str(root / "data"), "--scenes", "3", "--size", str(scene_size),
              "--seed", "5")  # fmt: skip
    scenes = sorted((root / "data").glob("scene_*.tif"))
    _terraseg("tile", *map(str, scenes[:2]), "--labels", str(root / "data" / "labels.gpkg"),
              "--out", str(root / "store.zarr"), "--tile-size", str(tile))  # fmt: skip
    return scenes[-1]


def train_epoch(
    root: Path, device: str, gpus: int, tile: int, batch: int, backbone: str
) -> dict[str, Any]:
    """One epoch of ``terraseg train`` on every GPU; its wall time."""
    start = time.perf_counter()
    _terraseg("train", "--data", str(root / "store.zarr"), "--out", str(root / "run"),
              "--backbone", backbone, "--devices", str(gpus), "--accelerator", device,
              "--epochs", "1", "--batch-size", str(batch), "--crop-size", str(tile // 2),
              "--samples-per-epoch", str(16 * batch), "--no-track")  # fmt: skip
    return {"part": "train", "devices": gpus, "epoch_s": round(time.perf_counter() - start, 1)}


def predict_scene(root: Path, scene: Path, device: str, gpus: int) -> dict[str, Any]:
    """Pipeline megapixels per second on every GPU, beside the model alone."""
    import rasterio

    start = time.perf_counter()
    _terraseg("predict", str(scene), "--model", str(root / "run" / "model"), "--out",
              str(root / "predictions"), "--device", device, "--devices", str(gpus))  # fmt: skip
    seconds = time.perf_counter() - start
    with rasterio.open(scene) as src:
        megapixels = src.width * src.height / 1e6
    model_seconds = _model_only(root / "run" / "model", scene, device)
    return {
        "part": "predict",
        "devices": gpus,
        "seconds": round(seconds, 1),
        "pipeline_mpx_s": round(megapixels / seconds, 2),
        "model_only_mpx_s_one_gpu": round(megapixels / model_seconds, 2),
    }


def _model_only(model: Path, scene: Path, device: str) -> float:
    """Seconds the model alone takes for the scene's tiles on one device, batches of 8."""
    import numpy as np

    from terraseg.pipeline.artifact import weights_digest
    from terraseg.pipeline.prediction.config import PredictConfig
    from terraseg.pipeline.prediction.inference import batch_predictor, open_model
    from terraseg.pipeline.prediction.job import plan_file

    artifact = open_model(str(model))
    job = plan_file(str(model), artifact, scene, model.parent, PredictConfig(device=device))
    tiles = sum(len(job.plan.tiles(*block)) for block in job.plan.blocks)
    predict = batch_predictor(str(model), device, "auto", "none", None, None,
                              weights_digest(artifact))  # fmt: skip
    batch = np.random.default_rng(0).normal(size=(8, 4, job.tile, job.tile)).astype(np.float32)
    predict(batch)  # warm-up
    start = time.perf_counter()
    for _ in range(-(-tiles // len(batch))):
        predict(batch)
    return time.perf_counter() - start


def _terraseg(*args: str) -> None:
    """Run a terraseg command quietly; stop with its last error line if it fails."""
    done = subprocess.run([*TERRASEG, "-q", *args], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise click.ClickException(f"terraseg {args[0]} failed: {lines[-1]}")
