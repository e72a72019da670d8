"""From class-map rasters to one GeoPackage: blocks, merge, post-processing and writing.

The block tasks are run by a caller-supplied mapper (Dask in ``workflows``, a plain
loop in tests) that yields their results in window order. Block tasks write their
final polygons to scratch files next to the output. The driver merges the edge pieces
one row of blocks at a time (:mod:`pipeline.vectorize_merge`), writing each polygon
closed by a row to a scratch file too, so it holds only the groups that cross the
current line. Everything is then streamed into the GeoPackage in a fixed order
(rasters as given; per row of blocks its blocks' polygons in row-major order, then
the merged polygons that the row closed), so the file does not depend on which
worker ran what.
"""

from __future__ import annotations

import colorsys
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
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
    Pieces,
    RasterInfo,
    VectorizeConfig,
    block_plan,
    finalize,
    load_features,
    post_process_merged,
    save_features,
    top_range,
)
from pipeline.vectorize_merge import Batch, EdgeMerger, HoleFilter

# Runs a raster's block tasks; yields their results in the order of the windows.
BlockMapper = Callable[
    [RasterInfo, Sequence[Window], VectorizeConfig, str], Generator[BlockResult, None, None]
]


@dataclass
class RasterParts:
    """Where one raster's polygons wait to be written."""

    info: RasterInfo
    files: Iterable[str]  # finalized polygons, in writing order (produced as they are read)


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
) -> Generator[BlockResult, None, None]:
    """Run every block in this process, one after another."""
    from pipeline.vectorize import polygonize_block

    return (polygonize_block(info, w, config, workdir) for w in windows)


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
        map_blocks: Runs the block tasks of one raster and yields their results in
            the order of the windows (it may run ahead, but should not hold them all).
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
                RasterParts(info, _raster_files(info, config, map_blocks, workdir / f"raster-{k}"))
                for k, info in enumerate(infos)
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


def _raster_files(
    info: RasterInfo, config: VectorizeConfig, map_blocks: BlockMapper, workdir: Path
) -> Iterator[str]:
    """Merge a raster's blocks one by one; yield the scratch files of finished polygons.

    ``workdir`` is the raster's own scratch folder (block files are named by window).

    Raises:
        ConfigError: The raster holds values missing from its class table (raised
            once all its blocks have been read).

    """
    merger = EdgeMerger(info.shape, config.block_size)
    holes = HoleFilter(active=config.fill_holes > 0)
    values: set[int] = set()
    workdir.mkdir()
    results = map_blocks(info, block_plan(info, config), config, str(workdir))
    with closing(results) as stream:
        for result in stream:
            window = result.window
            values.update(result.values)
            if result.final_file:
                holes.add(Batch(result.final_file, *result.final_tops))
            closed = merger.add_block(result.edges, window)
            del result
            name = f"merged-{window.row_off}-{window.col_off}.pkl"
            _close(closed, info, config, holes, workdir / name)
            # Blocks still to come start at this row, or at the next one after the last column.
            next_top = window.row_off if window.col_end < info.shape[1] else window.row_end
            yield from holes.release(merger.open_top, next_top)
    if info.classes is not None:
        ensure_ids_known(info.classes, values, path=info.path)


def _close(
    closed: Pieces, info: RasterInfo, config: VectorizeConfig, holes: HoleFilter, file: Path
) -> None:
    """Post-process the polygons closed by a block and queue them as one batch."""
    kept, anchors, filled = post_process_merged(closed, info, config)
    holes.add_holes(filled)
    if not len(kept):
        return
    features = finalize(kept, info, simplified=config.simplify > 0)
    if anchors is not None:
        features["anchor"] = anchors  # before hole filling: a filled polygon may cover its own
    save_features(file, features)
    holes.add(Batch(str(file), *top_range(kept.geoms)))


def _write(path: Path, parts: Sequence[RasterParts], config: VectorizeConfig) -> VectorizeSummary:
    """Write the layers and their style; with one layer, while the rasters are merged."""
    schema = polygon_schema(any(p.info.confidence for p in parts))
    counts: Counter[tuple[int, str]] = Counter()
    if config.layer_per_class:  # every layer reads all files: finish them first
        parts = [RasterParts(p.info, list(p.files)) for p in parts]
        table = _style_table(parts, _ids_in(parts), config)
        layers = _layer_classes(table, config)
    else:
        layers = {config.layer: None}
    for layer, class_id in layers.items():
        batches = _batches(parts, schema, class_id, counts)
        write_layer(path, layer, batches, schema, parts[0].info.crs_wkt)
    if not config.layer_per_class:
        table = _style_table(parts, {i for i, _ in counts}, config)
    write_styles(path, {layer: categorized_qml(table) for layer in layers})
    per_class: Counter[str] = Counter()
    for (_, name), n in counts.items():
        per_class[name] += n
    return VectorizeSummary(
        path, list(layers), sum(per_class.values()), dict(sorted(per_class.items()))
    )


def _layer_classes(table: ClassTable, config: VectorizeConfig) -> dict[str, int | None]:
    """Layer name -> class id written to it, one layer per class."""
    dropped = config.background_id if config.drop_background else None
    return {c.name: c.id for c in table.classes if c.id != dropped}


def _batches(
    parts: Sequence[RasterParts],
    schema: pa.Schema,
    class_id: int | None,
    counts: Counter[tuple[int, str]],
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of ``class_id`` (``None``: all), counting ``(id, name)`` written."""
    for part in parts:
        table = part.info.classes
        for file in part.files:
            features = load_features(file)
            if class_id is not None:
                keep = features["class_id"] == class_id
                if not keep.any():
                    continue
                features = {k: v[keep] for k, v in features.items()}
            ids = np.unique(features["class_id"])
            names = {int(i): table.name_of(int(i)) if table else f"class_{i}" for i in ids}
            counts.update((int(i), names[int(i)]) for i in features["class_id"])
            yield feature_batch(features, names, part.info.source, schema)


def _style_table(
    parts: Sequence[RasterParts], ids: set[int], config: VectorizeConfig
) -> ClassTable:
    """Pick the first raster's class table, or make one up from the ids written."""
    for part in parts:
        if part.info.classes is not None:
            return part.info.classes
    ids = ids or {config.background_id}
    return class_table([(i, f"class_{i}", _palette(k)) for k, i in enumerate(sorted(ids))])


def _ids_in(parts: Sequence[RasterParts]) -> set[int]:
    """The class ids in the parts' files."""
    ids: set[int] = set()
    for part in parts:
        for file in part.files:
            ids.update(int(i) for i in np.unique(load_features(file)["class_id"]))
    return ids


def _palette(k: int) -> tuple[int, int, int]:
    """Distinct colours by golden-ratio hue steps."""
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)
