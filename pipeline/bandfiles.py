"""Scenes delivered as one file per band, stacked virtually in a declared band order.

Sentinel-2 and Landsat come as one file per band (``T33UUU_..._B02.jp2``,
``LE7..._b3.tif``). Given the band names in the order the model takes them,
:func:`find_band_scenes` finds the scenes: a folder holding a file for every band
is one scene; otherwise each of its subfolders that does is (all levels below with
``recursive``). :func:`write_stack_vrt` stacks a scene's files into a GDAL VRT on
the grid of its finest band: coarser bands (Sentinel-2's 20 m bands beside its
10 m ones) are resampled to it, bilinearly by default. Nothing is copied; the VRT
names the band files by absolute path and is rewritten only when it changes, so a
re-run sees the same input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from terraseg.pipeline.errors import InputError
from terraseg.pipeline.files import write_text
from terraseg.pipeline.rasters import RASTER_SUFFIXES, open_raster

RESAMPLINGS = ("nearest", "bilinear", "cubic", "average")


@dataclass(frozen=True)
class BandScene:
    """One scene: its name and a file per band, in band order."""

    name: str
    files: tuple[Path, ...]


def band_file(folder: Path, band: str) -> Path | None:
    """The raster in ``folder`` whose name ends with ``_<band>`` (or is ``<band>``), any case.

    Raises:
        InputError: Several files match the band.
    """
    wanted = band.lower()
    matches = sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix.lower() in RASTER_SUFFIXES
        and (p.stem.lower() == wanted or p.stem.lower().endswith(f"_{wanted}"))
    )
    if len(matches) > 1:
        names = ", ".join(p.name for p in matches)
        raise InputError(f"several files for band {band}: {names}", path=folder)
    return matches[0] if matches else None


def scene_in(folder: Path, bands: list[str]) -> BandScene | None:
    """The scene ``folder`` holds, or ``None`` when a band is missing."""
    files = [band_file(folder, band) for band in bands]
    if any(f is None for f in files):
        return None
    found = tuple(f for f in files if f is not None)
    # the name the files share without their band suffix, else the folder's
    stems = {
        f.stem[: len(f.stem) - len(band)].rstrip("_") for f, band in zip(found, bands, strict=True)
    }
    name = stems.pop() if len(stems) == 1 else ""
    return BandScene(name or folder.name, found)


def find_band_scenes(
    inputs: list[str | Path], bands: list[str], *, recursive: bool = False
) -> list[BandScene]:
    """The scenes of ``inputs`` (scene folders, or folders of scene folders).

    Raises:
        InputError: An input is not a folder, or holds no scene with every band.
    """
    scenes: list[BandScene] = []
    for item in inputs:
        folder = Path(item)
        if not folder.is_dir():
            raise InputError("with --band-files, inputs are scene folders", path=folder)
        found = _scenes_below(folder, bands, recursive)
        if not found:
            raise InputError(
                f"no folder here holds a file for every band ({', '.join(bands)}); band files "
                "are named <anything>_<band>.<ext>" + ("" if recursive else "; try --recursive"),
                path=folder,
            )
        scenes.extend(found)
    return list(dict.fromkeys(scenes))


def _scenes_below(folder: Path, bands: list[str], recursive: bool) -> list[BandScene]:
    own = scene_in(folder, bands)
    if own is not None:
        return [own]
    scenes: list[BandScene] = []
    for child in sorted(p for p in folder.iterdir() if p.is_dir()):
        scene = scene_in(child, bands)
        if scene is not None:
            scenes.append(scene)
        elif recursive:
            scenes.extend(_scenes_below(child, bands, recursive))
    return scenes


@dataclass(frozen=True)
class _Band:
    path: Path
    width: int
    height: int
    dtype: str
    nodata: float | None
    transform: tuple[float, ...]
    crs: str | None


def _band(path: Path) -> _Band:
    with open_raster(path) as src:
        if src.count != 1:
            raise InputError(f"a band file holds one band, this one {src.count}", path=path)
        return _Band(path, src.width, src.height, src.dtypes[0], src.nodata,
                     tuple(src.transform)[:6], src.crs.to_wkt() if src.crs else None)  # fmt: skip


def write_stack_vrt(scene: BandScene, folder: Path, resampling: str = "bilinear") -> Path:
    """Write ``folder/<scene>.vrt`` stacking the scene's bands on its finest band's grid.

    Raises:
        InputError: Bands differ in CRS, data type or extent, or a file holds several bands.
    """
    if resampling not in RESAMPLINGS:
        raise InputError(f"unknown resampling {resampling!r} (one of {', '.join(RESAMPLINGS)})")
    bands = [_band(path) for path in scene.files]
    finest = min(bands, key=lambda b: abs(b.transform[0]))
    for band in bands:
        _check_same_ground(band, finest)
    text = _vrt(bands, finest, resampling)
    path = folder / f"{scene.name}.vrt"
    if not path.is_file() or path.read_text() != text:
        write_text(path, text)
    return path


def _check_same_ground(band: _Band, finest: _Band) -> None:
    if band.crs != finest.crs or band.dtype != finest.dtype:
        raise InputError(
            f"band differs from {finest.path.name} in CRS or data type ({band.dtype} vs "
            f"{finest.dtype})",
            path=band.path,
        )
    extent = (band.transform[0] * band.width, band.transform[4] * band.height)
    target = (finest.transform[0] * finest.width, finest.transform[4] * finest.height)
    origin_shift = max(abs(band.transform[2] - finest.transform[2]),
                       abs(band.transform[5] - finest.transform[5]))  # fmt: skip
    if origin_shift > abs(finest.transform[0]) / 2 or any(
        abs(a - b) > abs(band.transform[0]) for a, b in zip(extent, target, strict=True)
    ):
        raise InputError(f"band does not cover the same ground as {finest.path.name}",
                         path=band.path)  # fmt: skip


def _vrt(bands: list[_Band], grid: _Band, resampling: str) -> str:
    a, b, c, d, e, f = grid.transform
    geo = ", ".join(repr(v) for v in (c, a, b, f, d, e))  # GDAL's order
    lines = [f'<VRTDataset rasterXSize="{grid.width}" rasterYSize="{grid.height}">']
    if grid.crs:
        lines.append(f"  <SRS>{escape(grid.crs)}</SRS>")
    lines.append(f"  <GeoTransform>{geo}</GeoTransform>")
    vrt_type = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
                "int32": "Int32", "float32": "Float32", "float64": "Float64"}  # fmt: skip
    for index, band in enumerate(bands, start=1):
        if band.dtype not in vrt_type:
            raise InputError(f"band files of type {band.dtype} cannot be stacked", path=band.path)
        lines.append(f'  <VRTRasterBand dataType="{vrt_type[band.dtype]}" band="{index}">')
        lines.append(f"    <Description>{escape(band.path.stem)}</Description>")
        if band.nodata is not None:
            lines.append(f"    <NoDataValue>{band.nodata!r}</NoDataValue>")
        source = "ComplexSource" if band.nodata is not None else "SimpleSource"
        lines += [
            f"    <{source} resampling={quoteattr(resampling)}>",
            f'      <SourceFilename relativeToVRT="0">{escape(str(band.path))}</SourceFilename>',
            "      <SourceBand>1</SourceBand>",
            f'      <SrcRect xOff="0" yOff="0" xSize="{band.width}" ySize="{band.height}"/>',
            f'      <DstRect xOff="0" yOff="0" xSize="{grid.width}" ySize="{grid.height}"/>',
        ]
        if band.nodata is not None:
            lines.append(f"      <NODATA>{band.nodata!r}</NODATA>")
        lines += [f"    </{source}>", "  </VRTRasterBand>"]
    lines.append("</VRTDataset>")
    return "\n".join(lines) + "\n"
