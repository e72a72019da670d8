"""``terraseg bench predict``: end-to-end prediction beside the model alone and a naive baseline.

Three measurements on the same raster and tiles, in one run:

- model only: terraseg's predictor over as many tiles as the plan has, from memory,
  shared among the threads of the pipeline's cluster (same streams, process and
  malloc settings), timed just before and just after each tuned pipeline run, as
  a small VM's speed drifts by several percent within a minute: each run is
  compared with the mean of the two, and ``--repeats`` runs give medians;
- baseline: a script of its own (a fresh process with default settings) reading
  tile by tile, batch size 1, accumulating into whole-raster arrays, then writing
  a plain GeoTIFF (no blocks, no prefetch, no tuning), run just before each tuned
  pipeline run for the same reason, its memory not counted in the pipeline's peak;
- terraseg: the real pipeline on a LocalCluster, COGs included, once with the
  glibc malloc tunables the CLI applies and once without.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

import click
import numpy as np

from terraseg.pipeline.model.config import BackboneName
from terraseg.workflows.bench_utils import TreeRSS, bench_workdir
from terraseg.workflows.cli.options import renamed_opt


@click.command("predict")
@click.option("--scene-size", "size", type=click.IntRange(min=256), default=2048,
              show_default=True, help="Side of the synthetic scene in pixels.")  # fmt: skip
@renamed_opt("--size", "--scene-size", "the rows and columns of the generated scene")
@click.option(
    "--backbone",
    type=click.Choice(get_args(BackboneName)),
    default="mobilenetv2",
    show_default=True,
)
@click.option("--tile", type=click.IntRange(min=64), default=512, show_default=True)
@click.option(
    "--overlap", type=click.FloatRange(0, 0.5, max_open=True), default=0.25, show_default=True
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Tiles per pass [1 on CPU]."
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "int8"]),
    default="auto",
    show_default=True,
    help="Inference precision of terraseg and the model-only row (the baseline is fp32).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--files",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Rasters per run (copies of the scene), as when predicting a folder.",
)
@click.option(
    "--repeats",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Tuned terraseg runs, each followed by the model-only passes; medians are printed.",
)
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=None)
def bench_predict(
    size: int,
    backbone: str,
    tile: int,
    overlap: float,
    batch_size: int | None,
    precision: str,
    workers: int,
    files: int,
    repeats: int,
    workdir: Path | None,
) -> None:
    """Megapixels per second of terraseg predict, the model alone, and a naive baseline."""
    from terraseg.pipeline.prediction.config import PredictConfig
    from terraseg.pipeline.prediction.inference import cached_model
    from terraseg.pipeline.prediction.job import plan_files
    from terraseg.pipeline.settings import build_config
    from terraseg.pipeline.synth.config import SynthConfig
    from terraseg.pipeline.synth.writer import synthesize

    environment = os.environ.copy()  # before any cluster: Dask's nanny writes into it
    with bench_workdir(workdir) as folder:
        data = folder / f"scene-{size}"
        if not (data / "classes.yaml").exists():
            synthesize(build_config(SynthConfig, {"scenes": 1, "size": size, "seed": 2}), data)
        rasters = _copies(data / "scene_000.tif", files, folder / f"files-{size}")
        scene = data / "scene_000.tif"
        model = str(_bench_model(folder / f"model-{backbone}-{tile}", backbone, tile, scene))
        artifact = cached_model(model)
        config = PredictConfig(
            overlap=overlap, batch_size=batch_size, precision=precision, overwrite=True
        )
        jobs, _ = plan_files(model, artifact, rasters, folder / "out", config)
        job = jobs[0]
        tiles = files * sum(len(job.plan.tiles(*block)) for block in job.plan.blocks)
        megapixels = files * size * size / 1e6

        runs, tuned_rss, forward, baselines = _terraseg(
            jobs,
            workers,
            tunables=True,
            forward_tiles=tiles,
            repeats=repeats,
            baseline=lambda: sum(
                _baseline_process(j, folder / "baseline.tif", environment) for j in jobs
            ),
        )
        (plain,), plain_rss, _, _ = _terraseg(jobs, workers, tunables=False)

    # each run against the model-only passes just before and after it
    ratios = [(forward[r] + forward[r + 1]) / 2 / runs[r] for r in range(repeats)]
    speedups = [baseline / run for baseline, run in zip(baselines, runs, strict=True)]
    tuned = statistics.median(runs)

    from terraseg.pipeline.prediction.inference import inference_dtype

    # int8 quantizes the backbone; the rest runs as auto would
    rest = str(inference_dtype("auto" if precision == "int8" else precision, "cpu"))
    dtype = rest.removeprefix("torch.")
    if precision == "int8":
        dtype = f"int8 backbone, {dtype} rest"
    scenes = f"{files} files of " if files > 1 else ""
    click.echo(
        f"{backbone}, {tiles} tiles of {tile} px, {overlap:.0%} overlap, {scenes}{size} x {size}"
        f" px, {dtype}"
    )
    rows = [
        ("model only (forward)", statistics.median(forward), None),
        ("baseline (naive)", statistics.median(baselines), None),
        ("terraseg, malloc tuned", tuned, tuned_rss),
        ("terraseg, default malloc", plain, plain_rss),
    ]
    for name, seconds, rss in rows:
        peak = f"  peak RSS {rss:.0f} MiB" if rss else ""
        click.echo(f"{name:<26} {seconds:8.1f} s {megapixels / seconds:7.3f} Mpx/s{peak}")
    click.echo(
        "model only around the terraseg runs: "
        + " / ".join(f"{seconds:.1f}" for seconds in forward)
        + " s; baseline before each: "
        + " / ".join(f"{seconds:.1f}" for seconds in baselines)
        + " s; terraseg runs: "
        + " / ".join(f"{seconds:.1f}" for seconds in runs)
        + " s"
    )
    spread = f" (runs {min(ratios):.2f}-{max(ratios):.2f})" if repeats > 1 else ""
    speedup_spread = f" (runs {min(speedups):.2f}-{max(speedups):.2f}x)" if repeats > 1 else ""
    click.echo(
        f"terraseg / model only: {statistics.median(ratios):.2f}{spread}; "
        f"/ baseline: {statistics.median(speedups):.2f}x{speedup_spread}; "
        f"malloc tuning: {plain / tuned:.2f}x"
    )


def _bench_model(folder: Path, backbone: str, tile: int, scene: Path) -> Path:
    """An untrained model of the chosen backbone (speed does not depend on the weights).

    Its int8 calibration observes four tiles of ``scene``.
    """
    import torch

    from terraseg.pipeline.artifact import CALIBRATION, ModelArtifact, Normalization, save_artifact
    from terraseg.pipeline.classes import default_class_table
    from terraseg.pipeline.model.config import ModelConfig
    from terraseg.pipeline.model.deeplab import build_model
    from terraseg.pipeline.model.inference import inference_network
    from terraseg.pipeline.model.quantization import calibrate

    if (folder / CALIBRATION).exists():
        return folder
    config = ModelConfig.model_validate({"backbone": backbone, "in_channels": 4, "num_classes": 5})
    torch.manual_seed(0)
    model = build_model(config)
    artifact = ModelArtifact(
        config.model_dump(mode="json"),
        ["red", "green", "blue", "nir"],
        Normalization([100.0] * 4, [50.0] * 4),
        default_class_table(),
        tile,
        model.state_dict(),
    )
    tiles = torch.from_numpy(_scene_tiles(scene, artifact.normalization, tile, count=4))
    artifact.calibration = calibrate(inference_network(artifact.build_model(), "cpu"), [tiles])
    return save_artifact(artifact, folder)


def _scene_tiles(scene: Path, normalization: Any, tile: int, count: int) -> np.ndarray:
    """``count`` normalized tiles along the scene's diagonal, (count, bands, tile, tile)."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(scene) as src:
        span = max(0, min(src.height, src.width) - tile)
        offsets = np.linspace(0, span, count).astype(int)
        return np.stack(
            [
                normalization.apply(src.read(window=Window(o, o, tile, tile), boundless=True))
                for o in offsets
            ]
        )


def _copies(scene: Path, files: int, folder: Path) -> list[Path]:
    """``files`` rasters with the scene's pixels: the scene, then links to it under other names."""
    folder.mkdir(exist_ok=True)
    copies = [scene]
    for index in range(1, files):
        copy = folder / f"scene_{index:03d}.tif"
        if not copy.exists():
            os.link(scene, copy)
        copies.append(copy)
    return copies


def _model_only(job: Any, tiles: int) -> tuple[float, float]:
    """Forward passes of terraseg's own predictor (same precision and layout) from memory.

    Returns the clock times (``time.time``) of the first pass's start and the last
    one's end, after a warm-up pass that is not timed.
    """
    config = job.config
    predict = _warm(job)
    batch_size = config.batch_for("cpu")
    batch = np.random.default_rng(0).standard_normal(
        (batch_size, len(job.raster.bands), job.tile, job.tile), dtype=np.float32
    )
    predict(batch)  # warm-up: the first pass of a shape prepares its kernels
    start = time.time()
    for first in range(0, tiles, batch_size):
        predict(batch[: min(batch_size, tiles - first)])
    return start, time.time()


def _streams_only(client: Any, job: Any, tiles: int) -> float:
    """Wall seconds of ``tiles`` forward passes shared among all the cluster's threads.

    From the first stream's first timed pass to the last stream's end: neither the
    warm-up passes nor the task scheduling count.
    """
    streams = sum(client.nthreads().values())
    shares = [len(range(i, tiles, streams)) for i in range(streams)]
    spans: list[tuple[float, float]] = client.gather(
        [client.submit(_model_only, job, n, pure=False) for n in shares if n]
    )
    return max(end for _, end in spans) - min(start for start, _ in spans)


def _baseline_process(job: Any, out: Path, environment: dict[str, str]) -> float:
    """Run :func:`_baseline` as a script of its own: a fresh process with default settings.

    ``environment`` is the user's, taken before any cluster started; the malloc
    tunables are left out.
    """
    import pickle
    import subprocess
    import sys

    env = {k: v for k, v in environment.items() if k != "GLIBC_TUNABLES"}
    code = (
        "import pickle, sys; from terraseg.pipeline.prediction.inference import open_model; "
        "from terraseg.workflows.bench.predict import _baseline; "
        "job, out = pickle.loads(sys.stdin.buffer.read()); "
        "print(_baseline(open_model(job.model), job, out))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=pickle.dumps((job, out)),
        capture_output=True,
        env=env,
        check=True,
    )
    return float(done.stdout.decode().strip().splitlines()[-1])


def _baseline(artifact: Any, job: Any, out: Path) -> float:
    """One process, whole-raster accumulators, one tile per forward pass, plain GeoTIFF."""
    import rasterio
    import torch

    from terraseg.pipeline.prediction.blending import tile_weights

    model = artifact.build_model()
    start = time.perf_counter()
    with rasterio.open(job.raster.path) as src:
        shape = (src.height, src.width)
        probs = np.zeros((artifact.classes.num_classes, *shape), np.float32)
        weights = np.zeros(shape, np.float32)
        overlap = job.config.overlap_pixels(job.tile)
        for block in job.plan.blocks:
            for t in job.plan.tiles(*block):
                x = artifact.normalization.apply(src.read(window=t.to_rasterio()))
                with torch.inference_mode():
                    p = torch.softmax(model(torch.from_numpy(x[None])), dim=1)[0].numpy()
                w = tile_weights((t.row_off, t.col_off), t.shape, shape, overlap, "spline")
                probs[:, t.row_off : t.row_end, t.col_off : t.col_end] += p * w
                weights[t.row_off : t.row_end, t.col_off : t.col_end] += w
        classes = (probs / np.maximum(weights, 1e-12)).argmax(axis=0).astype(np.uint8)
        profile = {
            "driver": "GTiff",
            "width": shape[1],
            "height": shape[0],
            "count": 1,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "compress": "deflate",
        }
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(classes[None])
    return time.perf_counter() - start


def _terraseg(
    jobs: list[Any],
    workers: int,
    *,
    tunables: bool,
    forward_tiles: int = 0,
    repeats: int = 1,
    baseline: Callable[[], float] | None = None,
) -> tuple[list[float], float, list[float], list[float]]:
    """Seconds of ``repeats`` pipeline runs over ``jobs``, peak RSS, forward passes, baselines.

    ``forward_tiles`` forward passes run alone on the pipeline's workers, so the
    model is timed with the same streams and process and malloc settings: once
    before the first run and once after each. ``baseline`` (seconds of the naive
    script) runs just before each run, outside the peak RSS.
    """
    from terraseg.pipeline.prediction.driver import predict_files
    from terraseg.workflows.cluster import dask_client
    from terraseg.workflows.executor import DaskExecutor
    from terraseg.workflows.workers import configure_workers, worker_threads

    job = jobs[0]
    with (
        dask_client(
            None,
            workers=workers,
            threads_per_worker=worker_threads("cpu", workers, job.config.threads),
            tune_malloc=tunables,
        ) as client,
        TreeRSS() as rss,
    ):
        configure_workers(client, "cpu", job.config.threads)
        client.run(_preload, job)
        forward = [_streams_only(client, job, forward_tiles)] if forward_tiles else []
        runs, baselines = [], []
        for _ in range(repeats):
            if baseline is not None:
                with rss.paused():
                    baselines.append(baseline())
            start = time.perf_counter()
            outcomes = predict_files(jobs, DaskExecutor(client))
            runs.append(time.perf_counter() - start)
            for outcome in outcomes:
                if outcome.error:
                    raise click.ClickException(outcome.error)
            if forward_tiles:
                forward.append(_streams_only(client, job, forward_tiles))
    return runs, rss.peak_mib, forward, baselines


def _preload(job: Any) -> None:
    """:func:`_warm` on a worker, returning nothing (the predictor stays there)."""
    _warm(job)


def _warm(job: Any) -> Any:
    """Load the model before timing (as a long batch run amortizes it); return its predictor."""
    from terraseg.pipeline.prediction.tasks import job_predictor

    return job_predictor(job)
