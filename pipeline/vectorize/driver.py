"""The vectorize driver: from class-map rasters to one GeoPackage, with tasks on an executor.

The block tasks (:func:`terraseg.pipeline.vectorize.blocks.polygonize_block`) run on the
executor given (:class:`terraseg.pipeline.executor.InProcessExecutor` in process, a
``DaskExecutor`` on a cluster) and write their final polygons to scratch files next to
the output. The driver takes their results in window order, at most two rows of
blocks (and at least two tasks per worker thread) ahead, and merges the edge pieces
one block at a time (:mod:`terraseg.pipeline.vectorize.merge`), writing each polygon closed by
a block to a scratch file too, so it holds only the groups that cross the line
between done and pending blocks. Everything is then streamed into the GeoPackage in a
fixed order (rasters as given; per block its final polygons, then the merged polygons
that the block closed; see :mod:`terraseg.pipeline.vectorize.layers`), so the file does not
depend on which worker ran what.
"""

from __future__ import annotations

import glob
import hashlib
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from pathlib import Path

from terraseg.pipeline.classes import ensure_ids_known
from terraseg.pipeline.errors import CRSError, OutputExistsError
from terraseg.pipeline.executor import Executor, ordered_map
from terraseg.pipeline.files import atomic_output, partial_path, remove_path
from terraseg.pipeline.grid import Window
from terraseg.pipeline.locks import output_lock
from terraseg.pipeline.remote import as_input, is_remote, remote_exists, staged_file, upload_file
from terraseg.pipeline.vectorize.blocks import BlockResult, block_plan, polygonize_block
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.features import SCRATCH_SUFFIX, finalize, save_features
from terraseg.pipeline.vectorize.geometry import top_range
from terraseg.pipeline.vectorize.gpkg import WRITE_ERRORS, write_error
from terraseg.pipeline.vectorize.holes import Batch, HoleFilter, post_process_merged
from terraseg.pipeline.vectorize.layers import (
    RasterParts,
    VectorizeSummary,
    check_class_layers,
    write_layers,
)
from terraseg.pipeline.vectorize.ledger import BlockLedger
from terraseg.pipeline.vectorize.merge import EdgeMerger
from terraseg.pipeline.vectorize.pieces import Pieces
from terraseg.pipeline.vectorize.rasters import RasterInfo, unique_rasters

# Called after each block of a raster with (raster, blocks done, blocks planned),
# and once with 0 blocks done before the first.
BlockProgress = Callable[[RasterInfo, int, int], None]


def vectorize_rasters(
    infos: Sequence[RasterInfo],
    out: str | Path,
    config: VectorizeConfig,
    executor: Executor,
    *,
    overwrite: bool = False,
    progress: BlockProgress | None = None,
) -> VectorizeSummary:
    """Vectorize class-map rasters into one GeoPackage.

    A raster given more than once (the same resolved path) is vectorized once. The
    lock of ``out`` is held for the whole run, and the GeoPackage is renamed into
    place only after every planned block of every raster reported its result.

    Args:
        infos: The rasters (see :func:`terraseg.pipeline.vectorize.rasters.read_raster_info`),
            all in one CRS.
        out: The GeoPackage to write.
        config: Settings.
        executor: Runs the block tasks. On a cluster, the scratch folder next to
            ``out`` must be on a file system the workers share with this process,
            like the rasters themselves.
        overwrite: Replace ``out`` if it exists.
        progress: Told about every block taken (see :data:`BlockProgress`).

    Returns:
        A summary of the written layers and polygons.

    Raises:
        LockedError: Another live run is writing ``out``.
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        InputError: A raster is given twice with different confidence rasters, or a
            class name cannot name a layer (with ``layer_per_class``).
        CRSError: The rasters are not all in the same CRS.
        ConfigError: A raster holds values missing from its class table.
        IncompleteOutputError: A planned block reported no result (nothing committed).
        FileSystemError: The GeoPackage cannot be written (a full disk, the file-size
            limit).
    """
    target, out = out, staged_file(out)  # a GeoPackage bound for a bucket is made here first
    infos = unique_rasters(infos)
    _check_one_crs(infos)
    check_class_layers(infos, config)
    with output_lock(target) as holder:
        _refuse_existing(target, overwrite=overwrite)
        scratch = _scratch_folder(out, holder.run_id)
        try:
            summary = _write_output(infos, out, config, executor, scratch, progress)
        finally:
            remove_path(scratch)
        if is_remote(target):  # committed on this disk: now one upload, then the copy goes
            upload_file(out, target)
            remove_path(out)
            summary.path = as_input(target)
        return summary


def check_output(out: str | Path, *, overwrite: bool) -> None:
    """Refuse early (before a cluster starts) an output that a run would refuse.

    Args:
        out: The GeoPackage to write.
        overwrite: Whether replacing it was asked for.

    Raises:
        OutputExistsError: ``out`` exists and ``overwrite`` is false.
        LockedError: Another live run is writing ``out``.
    """
    _refuse_existing(out, overwrite=overwrite)
    with output_lock(out):  # taken and given back: only to refuse at once
        pass


def _refuse_existing(out: str | Path, *, overwrite: bool) -> None:
    exists = remote_exists(out) if is_remote(out) else Path(out).exists()
    if exists and not overwrite:
        raise OutputExistsError("output exists; pass --overwrite to replace it", path=out)


def _scratch_folder(out: Path, run_id: str) -> Path:
    """A fresh scratch folder of this run beside ``out``; those of earlier runs are removed.

    The run id in its name keeps block tasks of an earlier, interrupted run (which
    may still be running on a cluster) from writing into this run's folder.
    """
    partial = partial_path(out).name
    stem = partial[: len(partial) - len(out.suffix)]  # ".name.partial"
    for stale in out.parent.glob(f"{glob.escape(stem)}.*blocks"):
        remove_path(stale)  # under the lock: no live run owns it
    folder = out.parent / f"{stem}.{run_id}.blocks"
    folder.mkdir(parents=True)
    return folder


def _write_output(
    infos: Sequence[RasterInfo],
    out: Path,
    config: VectorizeConfig,
    executor: Executor,
    scratch: Path,
    progress: BlockProgress | None,
) -> VectorizeSummary:
    """Write the GeoPackage under a temporary name; rename it once every block reported."""
    ledger = BlockLedger()
    with atomic_output(out) as temporary:
        parts = [
            RasterParts(info, _raster_files(k, info, config, executor, scratch, ledger, progress))
            for k, info in enumerate(infos)
        ]
        try:
            summary = write_layers(temporary, parts, config)
        except WRITE_ERRORS as exc:  # a full disk, in GDAL's or SQLite's words
            raise write_error(out, temporary, exc) from exc
        summary.blocks = ledger.check(infos, config)
    summary.path = out
    return summary


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


def block_results(
    executor: Executor,
    info: RasterInfo,
    windows: Sequence[Window],
    config: VectorizeConfig,
    workdir: str,
) -> Generator[BlockResult, None, None]:
    """Run :func:`polygonize_block` over ``windows`` on ``executor``; yield results in order.

    At most two rows of blocks (and at least two tasks per worker thread) are
    submitted ahead of the result being taken; each task is released as soon as its
    result is taken, and tasks still queued are cancelled when the generator is
    closed.

    Args:
        executor: Runs the tasks.
        info: The raster.
        windows: Its blocks, in the order of :func:`block_plan`.
        config: Settings.
        workdir: The raster's scratch folder (block files are named by window).

    Yields:
        One result per window, in the order of ``windows``.
    """
    token = _token(repr(info), config.model_dump_json(), workdir)
    per_row = sum(1 for w in windows if w.row_off == windows[0].row_off)
    ahead = max(2 * per_row, 2 * executor.threads, 1)

    def key(window: Window) -> str:
        return f"polygonize_block-{token}-{window.row_off}-{window.col_off}"

    yield from ordered_map(
        executor, _polygonize, windows, info, config, workdir, key=key, ahead=ahead
    )


def _polygonize(
    window: Window, info: RasterInfo, config: VectorizeConfig, workdir: str
) -> BlockResult:
    """:func:`polygonize_block` with the window first (the item of :func:`ordered_map`)."""
    return polygonize_block(info, window, config, workdir)


def _token(*parts: str) -> str:
    """A short deterministic name for ``parts`` (task keys)."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


def _raster_files(
    number: int,
    info: RasterInfo,
    config: VectorizeConfig,
    executor: Executor,
    scratch: Path,
    ledger: BlockLedger,
    progress: BlockProgress | None,
) -> Iterator[str]:
    """Merge a raster's blocks one by one; yield the scratch files of finished polygons.

    The raster (number ``number`` of the run) gets its own folder in ``scratch``
    (block files are named by window); each block taken is recorded in ``ledger``.

    Raises:
        ConfigError: The raster holds values missing from its class table (raised
            once all its blocks have been read).
    """
    merger = EdgeMerger(info.shape, config.block_size)
    holes = HoleFilter(active=config.fill_holes > 0)
    values: set[int] = set()
    workdir = scratch / f"raster-{number}"
    workdir.mkdir()
    windows = block_plan(info, config)
    if progress is not None:
        progress(info, 0, len(windows))
    with closing(block_results(executor, info, windows, config, str(workdir))) as stream:
        for done, result in enumerate(stream, 1):
            window = result.window
            ledger.report(number, window)
            values.update(result.values)
            if result.final_file:
                holes.add(Batch(result.final_file, *result.final_tops))
            closed = merger.add_block(result.edges, window)
            del result
            name = f"merged-{window.row_off}-{window.col_off}{SCRATCH_SUFFIX}"
            _close(closed, info, config, holes, workdir / name)
            if progress is not None:
                progress(info, done, len(windows))
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
