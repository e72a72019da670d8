"""From class-map rasters to one GeoPackage: blocks, merge, post-processing and writing.

The block tasks are run by a caller-supplied mapper (Dask in ``workflows``, a plain
loop in tests). Block tasks write their final polygons to scratch files next to the
output; the driver holds only the edge pieces of one raster at a time, then streams
everything into the GeoPackage in a fixed order (rasters as given, blocks in row-major
order, then the merged polygons), so the file does not depend on which worker ran
what.
"""

from __future__ import annotations

import colorsys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline.classes import ClassTable, class_table, ensure_ids_known
from pipeline.errors import CRSError, OutputExistsError
from pipeline.files import atomic_output, partial_path, remove_path
from pipeline.gpkg import categorized_qml, feature_batch, polygon_schema, write_layer, write_styles
from pipeline.grid import Window
from pipeline.vectorize import (
    BlockResult,
    GeomArray,
    RasterInfo,
    VectorizeConfig,
    block_plan,
    finalize,
    inside_any,
    load_features,
    merge_raster_edges,
    save_features,
)

BlockMapper = Callable[[RasterInfo, Sequence[Window], VectorizeConfig, str], list[BlockResult]]


@dataclass
class RasterParts:
    """Where one raster's polygons wait to be written."""

    info: RasterInfo
    files: list[str]  # block-final polygons, in row-major block order
    merged_file: str | None  # polygons merged across block lines, already post-processed
    filled: GeomArray  # holes filled after merging (pixel coordinates)


@dataclass
class VectorizeSummary:
    """What was written."""

    path: Path
    layers: list[str]
    polygons: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    blocks: int = 0


def run_blocks_in_process(
    info: RasterInfo, windows: Sequence[Window], config: VectorizeConfig, workdir: str
) -> list[BlockResult]:
    """Run every block in this process, one after another."""
    from pipeline.vectorize import polygonize_block

    return [polygonize_block(info, w, config, workdir) for w in windows]


def vectorize_rasters(
    infos: Sequence[RasterInfo],
    out: str | Path,
    config: VectorizeConfig,
    map_blocks: BlockMapper = run_blocks_in_process,
    *,
    overwrite: bool = False,
) -> VectorizeSummary:
    """Vectorize class-map rasters into one GeoPackage.

    Args:
        infos: The rasters (see :func:`pipeline.vectorize.read_raster_info`), all in
            one CRS.
        out: The GeoPackage to write.
        config: Settings.
        map_blocks: Runs the block tasks of one raster and returns their results in
            the order of the windows.
        overwrite: Replace ``out`` if it exists.

    Returns:
        A summary of the written layers and polygons.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        CRSError: The rasters are not all in the same CRS.
        ConfigError: A raster holds values missing from its class table.

    """
    out = Path(out)
    check_output(out, overwrite=overwrite)
    _check_one_crs(infos)
    workdir = partial_path(out).with_suffix(".blocks")
    remove_path(workdir)
    workdir.mkdir(parents=True)
    try:
        with atomic_output(out) as temporary:
            parts = [
                _run_raster(k, info, config, map_blocks, workdir) for k, info in enumerate(infos)
            ]
            summary = _write(temporary, parts, config)
        summary.path = out
        return summary
    finally:
        remove_path(workdir)


def check_output(out: str | Path, *, overwrite: bool) -> None:
    """Refuse to replace an existing output unless asked to.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.

    """
    if Path(out).exists() and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", path=out)


def _check_one_crs(infos: Sequence[RasterInfo]) -> None:
    from rasterio.crs import CRS

    first = CRS.from_wkt(infos[0].crs_wkt)
    for info in infos[1:]:
        if CRS.from_wkt(info.crs_wkt) != first:
            raise CRSError(
                f"CRS differs from {infos[0].source}; one GeoPackage layer holds one CRS "
                "(reproject first or vectorize separately)",
                path=info.path,
            )


def _run_raster(
    index: int, info: RasterInfo, config: VectorizeConfig, map_blocks: BlockMapper, workdir: Path
) -> RasterParts:
    windows = block_plan(info, config)
    results = map_blocks(info, windows, config, str(workdir))
    if info.classes is not None:
        values = {v for r in results for v in r.values}
        ensure_ids_known(info.classes, values, path=info.path)
    merged, filled = merge_raster_edges(results, info, config)
    files = [r.final_file for r in results if r.final_file]
    merged_file = None
    if len(merged):
        merged_file = str(workdir / f"merged-{index}.pkl")
        save_features(merged_file, finalize(merged, info, simplified=config.simplify > 0))
    return RasterParts(info, files, merged_file, filled)


def _write(path: Path, parts: Sequence[RasterParts], config: VectorizeConfig) -> VectorizeSummary:
    with_confidence = any(p.info.confidence for p in parts)
    schema = polygon_schema(with_confidence)
    table = _style_table(parts, config)
    summary = VectorizeSummary(path, [])
    counts: Counter[str] = Counter()
    layers = _layer_classes(table, config)
    for layer, class_id in layers.items():
        batches = _batches(parts, schema, class_id, counts)
        write_layer(path, layer, batches, schema, parts[0].info.crs_wkt)
        summary.layers.append(layer)
    write_styles(path, {layer: categorized_qml(table) for layer in layers})
    summary.per_class = dict(sorted(counts.items()))
    summary.polygons = sum(counts.values())
    return summary


def _layer_classes(table: ClassTable, config: VectorizeConfig) -> dict[str, int | None]:
    """Layer name -> class id written to it (``None``: all classes)."""
    if not config.layer_per_class:
        return {config.layer: None}
    dropped = config.background_id if config.drop_background else None
    return {c.name: c.id for c in table.classes if c.id != dropped}


def _batches(
    parts: Sequence[RasterParts], schema: pa.Schema, class_id: int | None, counts: Counter[str]
) -> Iterator[pa.RecordBatch]:
    for part in parts:
        table = part.info.classes
        for file in [*part.files, part.merged_file]:
            if file is None:
                continue
            features = load_features(file)
            keep = np.ones(len(features["class_id"]), bool)
            if file != part.merged_file:  # block finals inside holes filled after merging
                keep &= ~inside_any(_points(features["anchor"]), part.filled)
            if class_id is not None:
                keep &= features["class_id"] == class_id
            if not keep.any():
                continue
            features = {k: v[keep] for k, v in features.items()}
            ids = np.unique(features["class_id"])
            names = {int(i): table.name_of(int(i)) if table else f"class_{i}" for i in ids}
            counts.update(names[int(i)] for i in features["class_id"])
            yield feature_batch(features, names, part.info.source, schema)


def _points(xy: np.ndarray) -> GeomArray:
    import shapely

    return np.asarray(shapely.points(xy), dtype=object) if len(xy) else np.empty(0, object)


def _style_table(parts: Sequence[RasterParts], config: VectorizeConfig) -> ClassTable:
    """Pick the first raster's class table, or make one up from the ids found."""
    for part in parts:
        if part.info.classes is not None:
            return part.info.classes
    ids: set[int] = set()
    for part in parts:
        for file in [*part.files, *filter(None, [part.merged_file])]:
            ids.update(int(i) for i in np.unique(load_features(file)["class_id"]))
    if not ids:
        ids = {config.background_id}
    return class_table([(i, f"class_{i}", _palette(k)) for k, i in enumerate(sorted(ids))])


def _palette(k: int) -> tuple[int, int, int]:
    """Distinct colours by golden-ratio hue steps."""
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)
