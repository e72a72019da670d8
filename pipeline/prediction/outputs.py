"""Prediction outputs: block results in a scratch Zarr store, then Cloud-Optimized GeoTIFFs.

Blocks write their interiors into a scratch store whose chunks are the block
interiors, so concurrent writers never touch the same chunk. When every block
is done, the class map (class ids, uint8, nodata 255, colour table, mode overviews; see
:mod:`terraseg.pipeline.prediction.class_cog`) and optionally the probabilities (one band
per model output, in class-id order, plus a max-probability confidence band, average
overviews, an internal
mask for nodata; uint8 bands scaled by 1/255) are copied into COGs under
temporary names and renamed. Each COG gets a QGIS style beside it
(:mod:`terraseg.pipeline.prediction.styles`), written the same way after it. Tags record
the model and the source, so a re-run can tell a complete, current output from a
stale one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from numpy.typing import NDArray
from rasterio.enums import ColorInterp, Resampling

from terraseg.pipeline.chunk_writer import write_region
from terraseg.pipeline.classes import CLASSES_TAG, IGNORE_LABEL, ClassTable
from terraseg.pipeline.errors import IncompleteOutputError
from terraseg.pipeline.files import (
    PARTIAL_SUFFIX,
    atomic_output,
    partial_path,
    remove_path,
    write_text,
)
from terraseg.pipeline.grid import Window
from terraseg.pipeline.prediction.class_cog import COG_BLOCK, write_class_cog
from terraseg.pipeline.prediction.overviews import overview_factors
from terraseg.pipeline.prediction.styles import (
    class_map_pam,
    class_map_qml,
    confidence_qml,
    pam_path,
    style_path,
)
from terraseg.pipeline.remote import (
    RemotePath,
    fsspec_url,
    is_remote,
    local_folder,
    remote_exists,
    upload_file,
)

COG_OPTIONS: dict[str, str | int] = {
    "compress": "deflate",
    "blocksize": 512,
    "bigtiff": "if_safer",
    "num_threads": "all_cpus",
}

UINT8_PROBABILITY_SCALE = 1.0 / 255.0  # stored value 255 is probability 1
# TIFF predictors by probability type: horizontal differencing (2) for integers,
# floating-point differencing (3) for floats.
PROBABILITY_PREDICTORS = {"uint8": 2, "float32": 3}
# GTiff creation options that give the COG layout from a source with overviews.
PROBABILITY_COG_OPTIONS: dict[str, str | int | bool] = {
    "tiled": True,
    "blockxsize": COG_BLOCK,
    "blockysize": COG_BLOCK,
    "compress": "deflate",
    "interleave": "pixel",
    "photometric": "MINISBLACK",  # not RGB, which GDAL picks for 3 or 4 uint8 bands
    "bigtiff": "if_safer",
    "num_threads": "all_cpus",
}


@dataclass(frozen=True)
class OutputPaths:
    """Where one input's predictions go, and the scratch store of this run's blocks."""

    classes: Path
    probabilities: Path | None
    scratch: Path
    remote: str | None = None  # the output folder's URL, when on object storage

    @classmethod
    def for_input(
        cls, out_dir: Path, raster: Path, probabilities: bool, run_id: str
    ) -> OutputPaths:
        """``<stem>_classes.tif`` and ``<stem>_probabilities.tif`` in ``out_dir``.

        The scratch store's name holds ``run_id``: blocks of another run (a dead
        one, or one racing this) are never mixed into this run's outputs. An
        ``out_dir`` on object storage is written in its staging folder on this disk
        (:func:`~terraseg.pipeline.remote.local_folder`) and uploaded when complete.
        """
        local = local_folder(out_dir)
        return cls(
            local / f"{raster.stem}_classes.tif",
            local / f"{raster.stem}_probabilities.tif" if probabilities else None,
            partial_path(local / f"{raster.stem}_blocks-{run_id}.zarr"),
            fsspec_url(out_dir).rstrip("/") if is_remote(out_dir) else None,
        )

    def rasters(self) -> list[Path]:
        """The COGs."""
        return [p for p in (self.classes, self.probabilities) if p is not None]

    def styles(self) -> list[Path]:
        """The styles beside the COGs: QGIS's ``.qml`` and the class map's ``.aux.xml``.

        The ``.aux.xml`` holds GDAL category names and the attribute table.
        """
        return [*(style_path(p) for p in self.rasters()), pam_path(self.classes)]

    def finals(self) -> list[Path]:
        """The output files: the COGs, then their styles."""
        return [*self.rasters(), *self.styles()]

    def published(self) -> list[Path]:
        """Where the outputs are read: :meth:`finals`, or their objects when remote."""
        if self.remote is None:
            return self.finals()
        return [RemotePath(f"{self.remote}/{path.name}") for path in self.finals()]

    def stale_scratch(self) -> list[Path]:
        """Scratch stores of other runs for the same output (left by interrupted runs)."""
        stem = self.classes.name.removesuffix("_classes.tif")
        pattern = f".{stem}_blocks-*{PARTIAL_SUFFIX}.zarr"
        return [p for p in self.classes.parent.glob(pattern) if p != self.scratch]


def is_current(paths: OutputPaths, tags: dict[str, str]) -> bool:
    """True when every output exists and the COGs carry exactly these provenance tags.

    A style is written after its COG: a missing one marks an interrupted run.
    Outputs on object storage are looked up there: the styles' objects, and the
    COGs' tags read through GDAL (``/vsis3/``, ``/vsigs/``), never from a cache.
    """
    if paths.remote is not None:
        return _remote_current(paths, tags)
    if not all(path.exists() for path in paths.styles()):
        return False
    return all(path.exists() and _has_tags(path, tags) for path in paths.rasters())


def _has_tags(path: Path, tags: dict[str, str]) -> bool:
    """Whether the raster ``path`` opens and carries exactly these values of ``tags``."""
    try:
        with rasterio.open(path) as src:
            found = src.tags()
    except rasterio.errors.RasterioIOError:
        return False
    return all(found.get(key) == value for key, value in tags.items())


def _remote_current(paths: OutputPaths, tags: dict[str, str]) -> bool:
    """:func:`is_current` of outputs on object storage."""
    published = paths.published()
    rasters, styles = published[: len(paths.rasters())], published[len(paths.rasters()) :]
    if not all(remote_exists(path) for path in [*styles, *rasters]):
        return False
    with rasterio.Env(CPL_VSIL_CURL_NON_CACHED=str(rasters[0].parent)):
        return all(_has_tags(path, tags) for path in rasters)


def publish(paths: OutputPaths) -> list[Path]:
    """Upload committed outputs to their folder on object storage; return where they are.

    The COGs go first, their styles after them (a style marks its COG complete,
    as on disk); each staged file is removed once uploaded. Local outputs are
    already where they belong.

    Raises:
        RemoteError: An upload failed; the objects uploaded before it stay, and
            a next run redoes the file (its styles are missing).
    """
    if paths.remote is None:
        return paths.finals()
    published = paths.published()
    for local, remote in zip(paths.finals(), published, strict=True):
        upload_file(local, remote)
    for local in paths.finals():
        remove_path(local)
    return published


def create_scratch(
    paths: OutputPaths,
    shape: tuple[int, int],
    chunks: tuple[int, int],
    blocks: tuple[int, int],
    classes: int,
    dtype: str | None,
) -> None:
    """The scratch store for block results (``dtype`` None: no probabilities).

    Idempotent: a store that exists is kept, so a start task run again (after a
    worker was lost) never removes blocks this run has written. ``chunks`` is the
    block step per axis: every block interior covers whole chunks of its own.
    ``blocks`` is the block count per axis: the ``written`` array records each
    block once its interior is stored.
    """
    root = zarr.open_group(str(paths.scratch), mode="a", zarr_format=3)
    arrays: dict[str, dict[str, Any]] = {
        "written": {"shape": blocks, "chunks": (1, 1), "dtype": "uint8", "fill_value": 0},
        "classes": {"shape": shape, "chunks": chunks, "dtype": "uint8", "fill_value": IGNORE_LABEL},
    }
    if dtype is not None:
        arrays["probabilities"] = {
            "shape": (classes + 1, *shape),
            "chunks": (classes + 1, *chunks),
            "dtype": dtype,
            "fill_value": 0,
        }
    for name, spec in arrays.items():
        if name not in root:
            root.create_array(name, **spec)


def write_block(
    paths: OutputPaths,
    block: tuple[int, int],
    interior: Window,
    classes: NDArray[np.uint8],
    probs: NDArray[np.float32] | None,
    probability_dtype: str = "uint8",
) -> None:
    """Store one block's interior in the scratch store (its chunks are block interiors)."""
    corner = (interior.row_off, interior.col_off)
    write_region(paths.scratch, "classes", corner, classes)
    if probs is not None:
        stacked = np.concatenate([probs, probs.max(axis=0, keepdims=True)])
        if probability_dtype == "uint8":
            stacked = np.rint(stacked * 255.0).astype(np.uint8)
        write_region(paths.scratch, "probabilities", (0, *corner), stacked)
    write_region(paths.scratch, "written", block, np.ones((1, 1), np.uint8))


def missing_blocks(paths: OutputPaths) -> list[tuple[int, int]]:
    """Blocks of the plan whose interior this run has not stored."""
    root = zarr.open_group(str(paths.scratch), mode="r", zarr_format=3)
    array: Any = root["written"]
    written = np.asarray(array[...])
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(written == 0), strict=True)]


def assemble(
    paths: OutputPaths, profile: dict[str, Any], table: ClassTable, tags: dict[str, str]
) -> None:
    """Copy the scratch store into the final COGs, then remove it.

    Raises:
        IncompleteOutputError: A block of the plan was not stored by this run
            (nothing is written under the final names).
    """
    missing = missing_blocks(paths)
    if missing:
        raise IncompleteOutputError(
            f"{len(missing)} blocks were not written (first: {missing[0]}); output not "
            "committed, run again",
            path=paths.classes,
        )
    root = zarr.open_group(str(paths.scratch), mode="r", zarr_format=3)
    all_tags = {**tags, CLASSES_TAG: json.dumps(table.to_dict())}
    classes: Any = root["classes"]
    write_class_cog(
        paths.classes,
        lambda start, stop: classes[start:stop],
        profile,
        classes=table.id_limit,
        nodata=IGNORE_LABEL,
        colormap=table.colormap(),
        tags=all_tags,
        description="class",
        options=COG_OPTIONS,
    )
    write_text(style_path(paths.classes), class_map_qml(table))
    write_text(pam_path(paths.classes), class_map_pam(table))
    if paths.probabilities is not None:
        probs: Any = root["probabilities"]
        names = [f"p_{name}" for name in table.names] + ["confidence"]
        _write_probability_cog(paths.probabilities, probs, classes, profile, all_tags, names)
        style = confidence_qml(band=len(names), mask_band=len(names) + 1)
        write_text(style_path(paths.probabilities), style)
    remove_path(paths.scratch)


def _staging_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """A tiled GeoTIFF on the raster's grid, compressed for a copy that is read back once."""
    return {
        "driver": "GTiff",
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "zstd",  # fast to write and to read back, still small on disk
        "zstd_level": 1,
        "num_threads": "all_cpus",
        "bigtiff": "if_safer",
        **{key: profile[key] for key in ("crs", "transform", "width", "height")},
    }


def _write_probability_cog(
    path: Path,
    probs: Any,
    classes: Any,
    profile: dict[str, Any],
    tags: dict[str, str],
    descriptions: list[str],
) -> None:
    """Copy the scratch probabilities into a COG with average overviews and a nodata mask.

    They are staged in a tiled GeoTIFF a scratch chunk at a time, so that each
    chunk is read and decoded once (windows of 512 px decoded each 1152-px chunk up
    to nine times); the mask is where the class map has a class. The staging file
    gets its overviews, and GDAL's GTiff driver copies it with them into the COG
    layout (``COPY_SRC_OVERVIEWS``): GDAL's COG driver would mark 3 or 4 uint8
    bands as RGB, with no option to say otherwise.
    """
    staging = partial_path(path.with_name(path.stem + "_staging.tif"))
    try:
        with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
            _stage_probabilities(staging, probs, classes, profile, tags, descriptions)
            with atomic_output(path) as tmp:
                rasterio.shutil.copy(
                    staging,
                    tmp,
                    driver="GTiff",
                    copy_src_overviews=True,
                    predictor=PROBABILITY_PREDICTORS[str(probs.dtype)],
                    **PROBABILITY_COG_OPTIONS,
                )
    finally:
        remove_path(staging)


def _stage_probabilities(
    staging: Path,
    probs: Any,
    classes: Any,
    profile: dict[str, Any],
    tags: dict[str, str],
    descriptions: list[str],
) -> None:
    """Write the probabilities, their mask and their average overviews to ``staging``."""
    staging_profile = {
        **_staging_profile(profile),
        "count": probs.shape[0],
        "dtype": str(probs.dtype),
        "photometric": "MINISBLACK",
    }
    shape = (profile["height"], profile["width"])
    with rasterio.open(staging, "w", **staging_profile) as dst:
        dst.update_tags(**tags)
        _describe_probabilities(dst, descriptions)
        for window in chunk_windows(shape, classes.chunks):
            target = window.to_rasterio()
            dst.write(probs[(slice(None), *window.slices())], window=target)
            valid = classes[window.slices()] != IGNORE_LABEL
            dst.write_mask(valid.astype(np.uint8) * 255, window=target)
        factors = overview_factors(*shape, COG_BLOCK)  # the levels GDAL's COG driver makes
        if factors:
            dst.build_overviews(factors, Resampling.average)


def _describe_probabilities(dst: Any, descriptions: list[str]) -> None:
    """Band names, grey/undefined colour interpretation, and for uint8 a scale of 1/255.

    GDAL and QGIS apply the scale, so a uint8 band reads as a probability in [0, 1].
    """
    dst.descriptions = tuple(descriptions)
    dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (dst.count - 1)
    if dst.dtypes[0] == "uint8":
        dst.scales = (UINT8_PROBABILITY_SCALE,) * dst.count
        dst.offsets = (0.0,) * dst.count


def chunk_windows(shape: tuple[int, int], chunks: tuple[int, int]) -> list[Window]:
    """Windows of the chunks of a 2-D array, row-major (the last ones partial)."""
    rows, cols = shape
    return [
        Window(r, c, min(chunks[0], rows - r), min(chunks[1], cols - c))
        for r in range(0, rows, chunks[0])
        for c in range(0, cols, chunks[1])
    ]
