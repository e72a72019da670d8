"""``terraseg bench vectorize``: block-parallel vectorize beside ``gdal_polygonize``.

Both run on the same generated class map in the same run; the benchmark checks that
they give the same polygon count and total area per class, and reports polygons per
second, seconds per megapixel and the peak resident memory of each process tree.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np
import numpy.typing as npt

from terraseg.workflows.bench_utils import TreeRSS, bench_workdir
from terraseg.workflows.cli.options import renamed_opt

GDAL_POLYGONIZE = ("gdal_polygonize", "gdal_polygonize.py")
INSTALL_HINT = "install GDAL's command-line tools, e.g. `apt-get install -y gdal-bin`"


@dataclass
class Run:
    """One measured run."""

    name: str
    seconds: float
    peak_rss_mib: float
    driver_peak_rss_mib: float
    polygons: int
    area_per_class: dict[int, float]


@click.command("vectorize")
@click.option("--scene-size", "size", type=click.IntRange(min=64), default=4000,
              show_default=True, help="Rows and columns of the generated class map.")  # fmt: skip
@renamed_opt("--size", "--scene-size", "the rows and columns of the generated scene")
@click.option("--block-size", type=click.IntRange(min=16), default=2048, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--raster", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Use this class map instead of generating one.")  # fmt: skip
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the raster and outputs here (default: a temporary folder).")  # fmt: skip
@click.option("--skip-gdal", is_flag=True, help="Measure only terraseg vectorize.")
def bench_vectorize(
    size: int,
    block_size: int,
    workers: int,
    raster: Path | None,
    workdir: Path | None,
    skip_gdal: bool,
) -> None:
    """Vectorize a generated 5-class map (EPSG:32633, 0.5 m) beside gdal_polygonize."""
    gdal = None if skip_gdal else find_gdal_polygonize()
    with bench_workdir(workdir) as folder:
        if raster is None:
            raster = folder / f"classmap-{size}.tif"
            if not raster.exists():
                click.echo(f"writing {size} x {size} class map to {raster}", err=True)
                write_structured_classmap(raster, size)
        megapixels = _megapixels(raster)
        runs = [run_terraseg(raster, folder / "terraseg.gpkg", block_size, workers)]
        if gdal is not None:
            runs.append(run_gdal(gdal, raster, folder / "gdal.gpkg"))
        _report(runs, megapixels)


def find_gdal_polygonize() -> str:
    """Find ``gdal_polygonize`` on the PATH.

    Raises:
        click.ClickException: It is not installed; the message says how to install it.

    """
    for name in GDAL_POLYGONIZE:
        found = shutil.which(name)
        if found:
            return found
    raise click.ClickException(f"gdal_polygonize not found on PATH; {INSTALL_HINT}")


# --------------------------------------------------------------------------- data


def write_structured_classmap(path: Path, size: int, classes: int = 5, seed: int = 0) -> None:
    """Write a uint8 class map of smooth blobs at two scales, window by window.

    Two low-resolution random fields per class (64 px and 12 px cells) are
    interpolated bilinearly over each window and the class is the argmax, so the
    map is continuous across windows while no window holds more than its own pixels.
    """
    import rasterio
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    coarse = rng.random((classes, size // 64 + 2, size // 64 + 2), dtype=np.float32)
    fine = rng.random((classes, size // 12 + 2, size // 12 + 2), dtype=np.float32)
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": 1, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": from_origin(500000.0, 5200000.0, 0.5, 0.5),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "BIGTIFF": "IF_SAFER",
    }  # fmt: skip
    step = 1024
    with rasterio.open(path, "w", **profile) as dst:
        for r0 in range(0, size, step):
            for c0 in range(0, size, step):
                rows, cols = slice(r0, min(size, r0 + step)), slice(c0, min(size, c0 + step))
                field = _bilinear(coarse, rows, cols, 64) + 0.35 * _bilinear(fine, rows, cols, 12)
                window = ((rows.start, rows.stop), (cols.start, cols.stop))
                dst.write(np.argmax(field, axis=0).astype(np.uint8), 1, window=window)


def _bilinear(grid: npt.NDArray[np.float32], rows: slice, cols: slice, cell: int) -> Any:
    """``grid`` (classes, r, c) of ``cell``-pixel cells, interpolated at pixel centres."""

    def weights(s: slice) -> tuple[npt.NDArray[np.intp], Any]:
        pos = (np.arange(s.start, s.stop, dtype=np.float32) + 0.5) / cell
        index = np.floor(pos).astype(np.intp)
        return index, (pos - index)[None, :]

    ri, rf = weights(rows)
    ci, cf = weights(cols)
    by_row = grid[:, ri, :] * (1 - rf[..., None]) + grid[:, ri + 1, :] * rf[..., None]
    return by_row[:, :, ci] * (1 - cf) + by_row[:, :, ci + 1] * cf


def _megapixels(raster: Path) -> float:
    import rasterio

    with rasterio.open(raster) as src:
        return float(src.width * src.height) / 1e6


# --------------------------------------------------------------------------- runs


def run_terraseg(raster: Path, out: Path, block_size: int, workers: int) -> Run:
    """Vectorize on a LocalCluster of ``workers`` processes (cluster start not timed)."""
    from terraseg.pipeline.vectorize.config import VectorizeConfig
    from terraseg.pipeline.vectorize.driver import vectorize_rasters
    from terraseg.pipeline.vectorize.rasters import read_raster_info
    from terraseg.workflows.cluster import dask_client
    from terraseg.workflows.executor import DaskExecutor

    config = VectorizeConfig.model_validate({"block_size": block_size})
    info = read_raster_info(raster)
    with TreeRSS() as rss, dask_client(workers=workers, memory_limit=None) as client:
        start = time.perf_counter()
        vectorize_rasters([info], out, config, DaskExecutor(client), overwrite=True)
        seconds = time.perf_counter() - start
    count, areas = areas_per_class(out, "class_id")
    name = f"terraseg vectorize ({workers} workers)"
    return Run(name, seconds, rss.peak_mib, rss.root_peak_mib, count, areas)


def run_gdal(gdal: str, raster: Path, out: Path) -> Run:
    """``gdal_polygonize`` to a GeoPackage (4-connectivity, as terraseg)."""
    import psutil

    out.unlink(missing_ok=True)
    command = [gdal, "-q", "-b", "1", "-f", "GPKG", str(raster), str(out), "polygons", "class_id"]
    start = time.perf_counter()
    process = psutil.Popen(command)
    with TreeRSS(process.pid) as rss:
        code = process.wait()
    seconds = time.perf_counter() - start
    if code != 0:
        raise click.ClickException(f"{' '.join(command)} exited with {code}")
    count, areas = areas_per_class(out, "class_id")
    name = "gdal_polygonize (1 process)"
    return Run(name, seconds, rss.peak_mib, rss.root_peak_mib, count, areas)


def areas_per_class(path: Path, column: str) -> tuple[int, dict[int, float]]:
    """Polygon count and total area per class of the first layer, read in batches."""
    import pyogrio.raw
    import shapely

    totals: defaultdict[int, float] = defaultdict(float)
    count = 0
    with pyogrio.raw.open_arrow(
        str(path), layer=0, columns=[column], batch_size=65536, use_pyarrow=True
    ) as (_meta, reader):
        for batch in reader:
            ids = batch.column(column).to_numpy()
            area = shapely.area(
                shapely.from_wkb(batch.column(batch.num_columns - 1).to_numpy(False))
            )
            for value in np.unique(ids):
                totals[int(value)] += float(area[ids == value].sum())
            count += len(ids)
    return count, dict(sorted(totals.items()))


def _report(runs: list[Run], megapixels: float) -> None:
    echo: Callable[[str], None] = click.echo
    echo(f"class map: {megapixels:.1f} Mpx")
    header = ("run", "seconds", "s/Mpx", "polygons", "poly/s", "peak RSS MiB", "main proc MiB")
    echo("{:34} {:>9} {:>8} {:>10} {:>10} {:>13} {:>14}".format(*header))
    for run in runs:
        echo(
            f"{run.name:34} {run.seconds:9.2f} {run.seconds / megapixels:8.4f} "
            f"{run.polygons:10d} {run.polygons / run.seconds:10.0f} {run.peak_rss_mib:13.0f} "
            f"{run.driver_peak_rss_mib:14.0f}"
        )
    if len(runs) == 2:
        ours, gdal = runs
        same = ours.polygons == gdal.polygons and _same_areas(
            ours.area_per_class, gdal.area_per_class
        )
        echo(f"speed-up over gdal_polygonize: {gdal.seconds / ours.seconds:.2f}x")
        echo(f"same polygon count and area per class: {'yes' if same else 'NO'}")
        for class_id, area in ours.area_per_class.items():
            theirs = gdal.area_per_class.get(class_id, 0.0)
            echo(f"  class {class_id}: {area:.2f} m² vs {theirs:.2f} m²")
        if not same:
            raise click.ClickException("terraseg and gdal_polygonize disagree")


def _same_areas(a: dict[int, float], b: dict[int, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= 1e-9 * max(1.0, b[k]) for k in a)
