"""Checking rasters against a model and reading normalized windows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.artifact import ModelArtifact
from terraseg.pipeline.errors import InputError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.rasters import (
    NodataOverride,
    SourceIdentity,
    check_nodata_fits,
    data_bands,
    open_raster,
    read_window,
    shared_reader,
)


@dataclass(frozen=True)
class RasterInput:
    """A raster checked against the model: which bands feed it, and its grid."""

    path: Path
    bands: list[int]
    shape: tuple[int, int]
    dtype: str
    profile: dict[str, Any]
    source: dict[str, Any]
    nodata: NodataOverride = None  # the nodata setting, overriding the raster's own


def check_raster(
    path: Path, artifact: ModelArtifact, bands: list[int] | None, nodata: NodataOverride = None
) -> RasterInput:
    """Open ``path`` and check its bands and dtype against the model.

    Args:
        path: The raster.
        artifact: The model.
        bands: The 1-based bands to feed the model (default: all data bands).
        nodata: Overrides the raster's own nodata (see
            :data:`~terraseg.pipeline.rasters.NodataOverride`).

    Raises:
        RasterReadError: The raster cannot be opened.
        InputError: The band count or dtype does not fit the model (both are named), or
            ``nodata`` is not a value of the raster's type.
    """
    expected = len(artifact.band_names)
    with open_raster(path) as src:
        chosen = bands or data_bands(src)
        if max(chosen) > src.count:
            raise InputError(
                f"--bands asks for band {max(chosen)} but the raster has {src.count}", path=path
            )
        if len(chosen) != expected:
            names = ", ".join(artifact.band_names)
            raise InputError(
                f"raster gives {len(chosen)} bands but the model takes {expected} ({names}); "
                "select them with --bands",
                path=path,
            )
        dtype = src.dtypes[chosen[0] - 1]
        if dtype != artifact.input_dtype:
            raise InputError(
                f"raster is {dtype} but the model was trained on {artifact.input_dtype}", path=path
            )
        check_nodata_fits(nodata, dtype, path)
        profile = {
            "crs": src.crs,
            "transform": src.transform,
            "width": src.width,
            "height": src.height,
        }
        source = SourceIdentity.of(path).to_dict()
        return RasterInput(path, chosen, (src.height, src.width), dtype, profile, source, nodata)


def read_normalized(
    raster: RasterInput, window: Window, artifact: ModelArtifact
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Normalized pixels of ``window`` and its valid mask; invalid pixels read as the band mean."""
    src = shared_reader(raster.path, (raster.source["size"], raster.source["mtime_ns"]))
    image, valid = read_window(src, window, raster.bands, raster.nodata)
    normalized = artifact.normalization.apply(image)
    normalized[:, ~valid] = 0.0
    return normalized, valid
