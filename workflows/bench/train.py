"""``terraseg bench train``: training throughput with the Zarr loader beside in-memory tensors.

The same model, optimizer and batch size train for the same number of steps twice
in one run: once fed by the real DataLoader over the store (crops, augmentation,
worker processes), once fed by one pre-made batch already in memory. The ratio is
what the loader costs; the loader alone is also timed without the model.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args

import click

from terraseg.pipeline.model.config import BackboneName


@click.command("train")
@click.option("--data", type=click.Path(exists=True, path_type=Path), default=None,
              help="A store from `terraseg tile` (default: generate a small one).")  # fmt: skip
@click.option("--backbone", type=click.Choice(get_args(BackboneName)), default="mobilenetv2",
              show_default=True)  # fmt: skip
@click.option("--width-multiplier", type=float, default=1.0, show_default=True)
@click.option("--crop-size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=2), default=8, show_default=True)
@click.option("--num-workers", type=click.IntRange(min=0), default=2, show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=10, show_default=True,
              help="Timed training steps per variant (after 2 warm-up steps).")  # fmt: skip
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch CPU threads (0: torch's default).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_train(
    data: Path | None,
    backbone: str,
    width_multiplier: float,
    crop_size: int,
    batch_size: int,
    num_workers: int,
    steps: int,
    threads: int,
    as_json: bool,
) -> None:
    """Samples per second: Zarr loader alone, training with it, training from memory."""
    from terraseg.pipeline.training.config import TrainConfig

    config = TrainConfig.model_validate(
        {
            # one network: the bench times the training step of the architecture
            "model": {"backbone": backbone, "width_multiplier": width_multiplier, "members": 1},
            "data": {"crop_size": crop_size, "batch_size": batch_size,
                     "num_workers": num_workers, "samples_per_epoch": batch_size * (steps + 2)},
            "accelerator": "cpu",
            "threads": threads,
        }
    )  # fmt: skip
    with _store(data) as store:
        results = measure(config, store, steps)
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    for key, value in results.items():
        click.echo(f"{key:32s} {value}")


@contextmanager
def _store(data: Path | None) -> Iterator[Path]:
    if data is not None:
        yield data
        return
    with tempfile.TemporaryDirectory(prefix="terraseg-bench-") as folder:
        click.echo("writing a sample store (4 scenes of 512 x 512 at 1 m)", err=True)
        yield write_sample_store(Path(folder), scenes=4, size=512, tile=256, resolution=1.0)


def write_sample_store(
    folder: Path, *, scenes: int, size: int | str, tile: int, resolution: float, seed: int = 11
) -> Path:
    """Generate ``terraseg synth`` scenes and tile them in this process (no Dask cluster)."""
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.executor import InProcessExecutor
    from terraseg.pipeline.settings import build_config
    from terraseg.pipeline.synth.config import SynthConfig
    from terraseg.pipeline.synth.writer import synthesize
    from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes

    synth = {"scenes": scenes, "size": size, "seed": seed, "resolution": resolution, "workers": 1}
    outputs = synthesize(build_config(SynthConfig, synth), folder / "scenes")
    config = TileConfig.model_validate({"tile_size": tile, "split_block": 1, "val_fraction": 0.25})
    classes = read_classes(outputs.classes)
    plans, table = prepare_tiling(
        outputs.scenes, vector_labels=outputs.labels[0], classes=classes, config=config
    )
    store = folder / "data.zarr"
    tile_scenes(store, plans, config, table, InProcessExecutor())
    return store


def measure(config: Any, store: Path, steps: int) -> dict[str, Any]:
    """Loader alone, training fed by the loader, training fed from memory: samples/s each."""
    import torch

    from terraseg.pipeline.training.components import (
        build_network,
        make_loaders,
        make_step_context,
        resolve_model_config,
    )
    from terraseg.pipeline.training.dataset import read_store_info
    from terraseg.workflows.train_run import init_distributed

    torch.manual_seed(0)
    ctx = init_distributed("cpu")
    if config.threads:
        torch.set_num_threads(config.threads)
    info = read_store_info(store, config.data.min_valid_fraction)
    loader, _, _, _ = make_loaders(config, info, ctx)
    batches = list(_take(loader, 2))  # warm the workers up
    loader_rate = _rate(lambda: _take(loader, steps), config.data.batch_size, steps)
    _, trained = build_network(resolve_model_config(config, info), config, ctx, None)
    step_ctx = make_step_context(config, info, ctx, trained, steps + 2)
    from terraseg.pipeline.training.loop import train_step

    def train_from(source: Iterable[Any]) -> None:
        for batch in source:
            train_step(step_ctx, [batch])

    train_from(batches)  # warm-up
    zarr_rate = _rate(lambda: train_from(_take(loader, steps)), config.data.batch_size, steps)
    memory_rate = _rate(lambda: train_from([batches[0]] * steps), config.data.batch_size, steps)
    return {
        "store": str(store),
        "model": f"{config.model.backbone} x{config.model.width_multiplier}",
        "crop": config.data.crop_size,
        "batch": config.data.batch_size,
        "num_workers": config.data.num_workers,
        "torch_threads": torch.get_num_threads(),
        "loader_only_samples_per_s": round(loader_rate, 2),
        "train_zarr_samples_per_s": round(zarr_rate, 2),
        "train_memory_samples_per_s": round(memory_rate, 2),
        "loader_overhead": round(1.0 - zarr_rate / memory_rate, 4),
    }


def _take(loader: Iterable[Any], count: int) -> Iterator[Any]:
    """``count`` batches, cycling the loader as often as needed."""
    taken = 0
    while taken < count:
        for batch in loader:
            yield batch
            taken += 1
            if taken == count:
                return


def _rate(work: Any, batch: int, steps: int) -> float:
    start = time.perf_counter()
    result = work()
    if isinstance(result, Iterator):
        for _ in result:
            pass
    return batch * steps / (time.perf_counter() - start)
