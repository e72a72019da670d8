"""Vectorizing from Python: class-map rasters into one GeoPackage of polygons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.workflows.api.settings import ConfigSource, stage_config

if TYPE_CHECKING:
    from terraseg.pipeline.vectorize.layers import VectorizeSummary
    from terraseg.pipeline.vectorize.rasters import RasterInfo


def vectorize(
    rasters: Sequence[str | Path],
    out: str | Path,
    *,
    classes: str | Path | None = None,
    confidence: Sequence[str | Path] = (),
    overwrite: bool = False,
    scheduler: str | None = None,
    workers: int | None = None,
    config: ConfigSource = None,
    progress: bool = False,
    **settings: Any,
) -> VectorizeSummary:
    """Polygonize class-map rasters into one GeoPackage with class, area and source.

    Blocks run as Dask tasks; polygons cut by block lines are merged, so the result
    equals one pass over the whole raster. A raster given twice is vectorized once;
    a second run writing the same GeoPackage is refused while the first one runs.

    Args:
        rasters: Class rasters: files, folders, globs or ``.txt`` lists.
        out: The GeoPackage to write.
        classes: Classes YAML (default: the names and colours in the rasters' tags).
        confidence: Probability rasters on the same grids, one per class raster, in
            order: each polygon gets the mean of their ``confidence`` band.
        overwrite: Replace ``out`` if it exists.
        scheduler: A Dask scheduler address (default: a LocalCluster).
        workers: Worker processes of the LocalCluster.
        config: A vectorize YAML file or :class:`VectorizeConfig`.
        progress: Draw a progress bar per raster on stderr.
        **settings: Vectorize settings as in ``configs/vectorize.yaml``
            (``min_area``, ``simplify``, ``fill_holes``, ``layer_per_class``...).

    Returns:
        The GeoPackage's path, layers, and polygon counts per class.
    """
    from terraseg.pipeline.classes import read_classes
    from terraseg.pipeline.remote import as_location
    from terraseg.pipeline.vectorize.driver import check_output, vectorize_rasters
    from terraseg.pipeline.vectorize.layers import check_class_layers
    from terraseg.pipeline.vectorize.rasters import read_raster_info
    from terraseg.workflows.cluster import dask_client
    from terraseg.workflows.executor import DaskExecutor

    pairs = raster_pairs(rasters, confidence)
    path = as_location(out)  # s3://: written on this disk, uploaded when complete
    check_output(path, overwrite=overwrite)  # before a cluster starts
    vectorize_config = stage_config(VectorizeConfig, config, settings)
    table = read_classes(Path(classes)) if classes else None
    infos = [read_raster_info(raster, table, prob) for raster, prob in pairs]
    check_class_layers(infos, vectorize_config, Path(classes) if classes else None)
    with dask_client(scheduler, workers=workers) as client, BlockBars(progress) as bars:
        return vectorize_rasters(
            infos, path, vectorize_config, DaskExecutor(client), overwrite=overwrite, progress=bars
        )


def raster_pairs(
    rasters: Sequence[str | Path], confidences: Sequence[str | Path]
) -> list[tuple[Path, Path | None]]:
    """Class rasters with their probability rasters, from files, folders, globs or lists.

    Each argument is expanded on its own (folders and globs in name order), so the
    n-th probability raster goes with the n-th class raster.

    Returns:
        ``(class raster, probability raster or None)`` pairs, absolute paths:
        Dask workers do not share this process's working directory.

    Raises:
        ConfigError: ``confidences`` names another number of rasters.
        InputError: An argument matches no file.
    """
    from terraseg.pipeline.rasters import expand_inputs

    paths = [p for item in rasters for p in expand_inputs([item], what="class raster")]
    probs = [p for item in confidences for p in expand_inputs([item], what="probability raster")]
    if not probs:
        return [(path, None) for path in paths]
    if len(probs) != len(paths):
        raise ConfigError(
            f"{len(probs)} confidence rasters for {len(paths)} class rasters; "
            "give one per class raster, in the same order"
        )
    return list(zip(paths, probs, strict=True))


class BlockBars:
    """One progress bar per raster, fed by the driver's block progress calls."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def __call__(self, info: RasterInfo, done: int, total: int) -> None:
        """Start a bar at a raster's first call, advance it, close it at its last block."""
        from tqdm import tqdm

        if done == 0 or self.bar is None:
            self.close()
            label = f"vectorize {info.source}"
            self.bar = tqdm(total=total, desc=label, unit="block", disable=not self.enabled)
        self.bar.update(done - self.bar.n)
        if done == total:
            self.close()

    def close(self) -> None:
        """Close the open bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> BlockBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
