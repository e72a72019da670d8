"""Raster input helpers: finding files, opening them with clear errors, reading windows."""

from __future__ import annotations

import glob
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from numpy.typing import NDArray
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import RasterioIOError

from terraseg.pipeline.errors import InputError, RasterReadError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.remote import as_input, expand_remote, is_remote, remote_identity
from terraseg.pipeline.settings import NodataOverride as NodataOverride  # re-exported

RASTER_SUFFIXES = frozenset({".tif", ".tiff", ".vrt", ".jp2", ".img", ".png", ".jpg", ".jpeg"})


@dataclass(frozen=True)
class SourceIdentity:
    """What a file was when it was read: a changed file has a different identity.

    A VRT's identity holds those of the files it reads (``parts``), so a band file
    replaced under an unchanged VRT (:mod:`terraseg.pipeline.bandfiles`) changes it too.
    """

    path: str
    size: int
    mtime_ns: int
    parts: tuple[SourceIdentity, ...] = ()
    version: str = ""  # a remote object's ETag (or its date where the server gives none)

    @classmethod
    def of(cls, path: str | Path) -> SourceIdentity:
        """The identity of ``path`` now; of a remote file, its size, date and ETag."""
        if is_remote(path):
            found = remote_identity(path)
            return cls(str(as_input(path)), found["size"], found["mtime_ns"], (), found["version"])
        stat = os.stat(path)
        parts = tuple(cls.of(f) for f in vrt_sources(path))
        return cls(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, parts)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping (``parts`` only for a VRT, ``version`` only when remote)."""
        found = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}
        found |= {"parts": [p.to_dict() for p in self.parts]} if self.parts else {}
        return found | ({"version": self.version} if self.version else {})


def vrt_sources(path: str | Path) -> list[Path]:
    """The local files a VRT reads (none for other rasters, or files GDAL cannot list)."""
    if Path(path).suffix.lower() != ".vrt" or is_remote(path):
        return []
    own = Path(path).resolve()
    with _open(path) as src:
        files = [Path(f).resolve() for f in src.files]
    return [f for f in dict.fromkeys(files) if f != own and f.is_file()]


def expand_inputs(inputs: Iterable[str | Path], *, what: str = "raster") -> list[Path]:
    """Resolve files, directories (their rasters, sorted) and glob patterns to files.

    Remote inputs (``/vsicurl/``, ``/vsis3/``, ``s3://``, ``gs://``, ``http(s)://``; see
    :mod:`terraseg.pipeline.remote`) are files when they end in a raster suffix,
    else folders or patterns listed through fsspec; they come back as
    :class:`~terraseg.pipeline.remote.RemotePath`, never looked up on this disk.

    Args:
        inputs: Paths, directories or glob patterns; a ``.txt`` file lists paths, one per line.
        what: Word used in error messages.

    Returns:
        Unique absolute paths in the order given (workers on other processes or
        machines do not share this process's working directory).

    Raises:
        InputError: An input matches nothing.
    """
    found: list[Path] = []
    for item in inputs:
        if is_remote(item):
            found.extend(expand_remote(str(item), RASTER_SUFFIXES, what))
            continue
        path = Path(item)
        if path.is_dir():
            matches = sorted(p for p in path.iterdir() if p.suffix.lower() in RASTER_SUFFIXES)
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines()]
            matches = expand_inputs(
                [ln for ln in lines if ln and not ln.startswith("#")], what=what
            )
        elif path.exists():
            matches = [path]
        else:
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
        if not matches:
            raise InputError(f"no {what} files found", path=item)
        found.extend(matches)
    return list(dict.fromkeys(path.resolve() for path in found))


def _open(path: str | Path) -> Any:
    """``rasterio.open`` whose failure names the file as :class:`RasterReadError`."""
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        reason = str(exc).split(": ", 1)[-1] if str(exc) else "cannot be opened"
        if is_remote(path) and "does not exist in the file system" in reason:
            reason = "no such object, or no access to it"  # GDAL's words for a 403 or 404
        raise RasterReadError(f"not a readable raster ({reason})", path=path) from None


@contextmanager
def open_raster(path: str | Path) -> Iterator[Any]:
    """Open a raster for reading; failures become :class:`RasterReadError` naming the file."""
    with _open(path) as src:
        yield src


def alpha_band(src: Any) -> int | None:
    """The 1-based index of an alpha band, if the raster has one."""
    for index, interp in enumerate(src.colorinterp, start=1):
        if interp == ColorInterp.alpha:
            return index
    return None


def data_bands(src: Any) -> list[int]:
    """1-based indexes of the bands that carry data (all but an alpha band)."""
    alpha = alpha_band(src)
    return [i for i in range(1, src.count + 1) if i != alpha]


def read_window(
    src: Any, window: Window, bands: list[int] | None = None, nodata: NodataOverride = None
) -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Read ``window`` of ``bands`` and a mask of valid pixels (see :func:`valid_mask`).

    Returns:
        ``(image, valid)`` with shapes (bands, rows, cols) and (rows, cols).
    """
    bands = bands or data_bands(src)
    window_rio = window.to_rasterio()
    try:
        image = src.read(bands, window=window_rio)
    except RasterioIOError as exc:
        raise RasterReadError(_read_failure(window, exc), path=src.name) from None
    return image, valid_mask(src, window, bands, image, nodata)


def read_band(src: Any, band: int, window: Window, *, masked: bool = False) -> Any:
    """Read one band of ``window``; a failed read names the file and the window.

    Raises:
        RasterReadError: GDAL cannot read the window (a damaged or truncated file).
    """
    try:
        return src.read(band, window=window.to_rasterio(), masked=masked)
    except RasterioIOError as exc:
        raise RasterReadError(_read_failure(window, exc), path=src.name) from None


def _read_failure(window: Window, exc: BaseException) -> str:
    where = f"rows {window.row_off}-{window.row_end}, columns {window.col_off}-{window.col_end}"
    return f"cannot read {where} (damaged or truncated file?): {gdal_reason(exc)}"


def gdal_reason(exc: BaseException) -> str:
    """The innermost message of a rasterio error's chain (GDAL's own words)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def valid_mask(
    src: Any,
    window: Window,
    bands: list[int],
    image: NDArray[Any],
    nodata: NodataOverride = None,
) -> NDArray[np.bool_]:
    """Valid pixels of a window already read into ``image``, by GDAL's dataset-mask rule.

    With a nodata value a pixel is invalid where every band holds it (computed
    from ``image``, without reading again); with an alpha band or an internal
    mask, GDAL's dataset mask decides; otherwise every pixel is valid.

    Args:
        src: The open raster.
        window: The window ``image`` was read from.
        bands: The 1-based bands of ``image``.
        image: The pixels, (bands, rows, cols).
        nodata: Overrides the raster's own nodata value: a value (an alpha band or
            internal mask still applies), or ``"none"``: every pixel is valid.
    """
    if nodata == "none":
        return np.ones(window.shape, dtype=bool)
    flags = {flag for b in bands for flag in src.mask_flag_enums[b - 1]}
    if nodata is None and MaskFlags.nodata in flags and src.nodata is not None:
        return valid_unless(image, src.nodata)
    masked = flags & {MaskFlags.alpha, MaskFlags.per_dataset}
    valid = (
        np.asarray(src.dataset_mask(window=window.to_rasterio()) > 0)
        if masked
        else np.ones(window.shape, dtype=bool)
    )
    return valid if nodata is None else valid & valid_unless(image, float(nodata))


def valid_unless(image: NDArray[Any], nodata: float) -> NDArray[np.bool_]:
    """Pixels where not every band of ``image`` (bands, rows, cols) holds ``nodata``.

    ``nodata`` is compared in the image's type (a float32 raster holds -1e20 as the
    nearest float32); a value the type cannot hold marks no pixel.
    """
    floating = np.issubdtype(image.dtype, np.floating)
    if np.isnan(nodata):
        invalid = np.isnan(image) if floating else np.zeros(image.shape, bool)
    elif not floating and not _fits(nodata, image.dtype):
        invalid = np.zeros(image.shape, bool)
    else:
        invalid = image == np.asarray(nodata).astype(image.dtype)
    return np.asarray(~invalid.all(axis=0))


def _fits(value: float, dtype: Any) -> bool:
    """Whether an integer type holds ``value`` exactly."""
    info = np.iinfo(dtype)
    return float(value).is_integer() and info.min <= value <= info.max


def check_nodata_fits(nodata: NodataOverride, dtype: str, path: str | Path) -> None:
    """Refuse a nodata value that no pixel of ``dtype`` can hold (say -9999 for uint8).

    Raises:
        InputError: The message names the value and the data type.
    """
    if nodata is None or nodata == "none" or np.isnan(nodata):
        return
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer) and not _fits(nodata, kind):
        info = np.iinfo(kind)
        raise InputError(
            f"nodata {nodata:g} is not a value of this {dtype} raster "
            f"({info.min} to {info.max}); check --nodata",
            path=path,
        )


def check_same_band_count(counts: dict[Path, int]) -> None:
    """Raise when rasters that go into one store have different band counts.

    Raises:
        InputError: Names one file of each count.
    """
    by_count: dict[int, Path] = {}
    for path, count in counts.items():
        by_count.setdefault(count, path)
    if len(by_count) > 1:
        listed = ", ".join(f"{p.name} has {c}" for c, p in sorted(by_count.items()))
        raise InputError(
            f"rasters have different band counts ({listed}); tile them into separate stores",
            path=list(by_count.values())[-1],  # the first raster unlike the first one
        )


_THREAD = threading.local()
_HANDLES_PER_THREAD = 8


def shared_reader(path: str | Path, identity: tuple[Any, ...] = ()) -> Any:
    """A dataset kept open for this thread, reopened when ``identity`` (size, mtime) changes.

    Opening a GeoTIFF costs about as much as reading one of its chunks, so chunk
    tasks share handles; rasterio datasets are not thread-safe, hence one per thread.
    """
    handles: OrderedDict[tuple[Any, ...], Any] = getattr(_THREAD, "handles", None) or OrderedDict()
    _THREAD.handles = handles
    key = (str(path), *identity)
    if key in handles:
        handles.move_to_end(key)
        return handles[key]
    src = _open(path)
    handles[key] = src
    while len(handles) > _HANDLES_PER_THREAD:
        handles.popitem(last=False)[1].close()
    return src
