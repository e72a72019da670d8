"""``terraseg bench tile``: tiling throughput beside plain rasterio reads of the same files."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np
import rasterio

from terraseg.pipeline.grid import Window
from terraseg.workflows.bench_utils import TreeRSS, bench_workdir, seconds
from terraseg.workflows.cli.options import renamed_opt
from terraseg.workflows.cluster import WORKER_GDAL_CACHEMAX_MB


@click.command("tile")
@click.option(
    "--scene-size",
    "size",
    type=click.IntRange(min=256),
    default=8192,
    show_default=True,
    help="Side of the synthetic scene in pixels.",
)
@renamed_opt("--size", "--scene-size", "the rows and columns of the generated scene")
@click.option("--scenes", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--tile-size", type=click.IntRange(min=64), default=512, show_default=True)
@click.option("--chunks-per-task", type=click.IntRange(min=1), default=2, show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Dask worker processes.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Threads per worker.",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep data here (reused when present) instead of a temporary folder.",
)
def bench_tile(
    size: int,
    scenes: int,
    tile_size: int,
    chunks_per_task: int,
    workers: int,
    threads: int,
    workdir: Path | None,
) -> None:
    """Tile synthetic scenes; compare MB/s of source pixels with plain reads in the same run."""
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.files import remove_path
    from terraseg.pipeline.settings import build_config
    from terraseg.pipeline.synth.config import SynthConfig
    from terraseg.pipeline.synth.writer import synthesize
    from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes
    from terraseg.workflows.cluster import dask_client
    from terraseg.workflows.executor import DaskExecutor

    with bench_workdir(workdir) as folder:
        data = folder / f"scenes-{size}x{scenes}"
        if not (data / "classes.yaml").exists():
            click.echo(
                f"writing {scenes} synthetic scene(s) of {size} x {size} to {data}", err=True
            )
            synthesize(build_config(SynthConfig, {"scenes": scenes, "size": size, "seed": 1}), data)
        images = sorted(data.glob("scene_*.tif"))
        megabytes = sum(_nbytes(path) for path in images) / 1e6
        sequential, threaded, cores = _plain_reads(images, tile_size)

        config = TileConfig.model_validate(
            {"tile_size": tile_size, "chunks_per_task": chunks_per_task}
        )
        plans, table = prepare_tiling(
            images,
            vector_labels=data / "labels.gpkg",
            classes=read_classes(data / "classes.yaml"),
            config=config,
        )
        store = folder / "bench.zarr"
        remove_path(store)
        with (
            dask_client(None, workers=workers, threads_per_worker=threads) as client,
            TreeRSS() as rss,
        ):
            executor = DaskExecutor(client)
            tiled = seconds(lambda: tile_scenes(store, plans, config, table, executor))
        remove_path(store)

    rows = [
        ("plain read, sequential", sequential),
        (f"plain read, {cores} threads", threaded),
        (f"terraseg tile, {workers}x{threads}, {chunks_per_task}x{chunks_per_task} chunks", tiled),
    ]
    click.echo(
        f"source pixels: {megabytes:.0f} MB in {len(images)} scene(s) of {size} x {size} x 4 bands"
    )
    _report(rows, megabytes)
    click.echo(f"peak RSS of all terraseg processes: {rss.peak_mib:.0f} MiB")


def _report(rows: list[tuple[str, float]], megabytes: float) -> None:
    """One line per way of reading, then terraseg's throughput relative to plain reads."""
    for name, elapsed in rows:
        click.echo(f"{name:<40} {elapsed:8.2f} s {megabytes / elapsed:9.1f} MB/s")
    (_, sequential), (_, threaded), (_, tiled) = rows
    ratios = f"{sequential / tiled:.2f}x sequential, {threaded / tiled:.2f}x threaded"
    click.echo(f"terraseg throughput relative to a plain read: {ratios}")


def _plain_reads(images: list[Path], tile_size: int) -> tuple[float, float, int]:
    """Seconds to read every tile window of ``images`` in one thread, then in one per core."""
    from terraseg.pipeline.grid import plan_blocks

    windows = {path: plan_blocks(_shape(path), tile_size) for path in images}
    # the plain reads get the same small block cache as tiling workers
    os.environ["GDAL_CACHEMAX"] = str(WORKER_GDAL_CACHEMAX_MB)
    sequential = seconds(lambda: [_read_many((p, windows[p])) for p in images])
    cores = os.cpu_count() or 1
    jobs = [(p, windows[p][i::cores]) for p in images for i in range(cores)]
    with ThreadPoolExecutor(cores) as pool:
        threaded = seconds(lambda: list(pool.map(_read_many, jobs)))
    return sequential, threaded, cores


def _shape(path: Path) -> tuple[int, int]:
    with rasterio.open(path) as src:
        return (src.height, src.width)


def _nbytes(path: Path) -> int:
    with rasterio.open(path) as src:
        return int(src.width * src.height * src.count * np.dtype(src.dtypes[0]).itemsize)


def _read_many(job: tuple[Path, list[Window]]) -> int:
    path, windows = job
    with rasterio.open(path) as src:  # one handle per thread: datasets are not thread-safe
        return sum(int(src.read(window=w.to_rasterio()).nbytes) for w in windows)
