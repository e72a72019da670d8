"""Checking every input of ``terraseg tile`` and planning its scenes, before any pixel is read."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from affine import Affine
from rasterio.crs import CRS

from terraseg.pipeline.classes import ClassTable
from terraseg.pipeline.errors import CRSError, InputError
from terraseg.pipeline.grid import Window, plan_blocks, plan_tiles
from terraseg.pipeline.rasters import (
    NodataOverride,
    SourceIdentity,
    check_nodata_fits,
    check_same_band_count,
    data_bands,
    open_raster,
)
from terraseg.pipeline.tiling.checks import check_plans
from terraseg.pipeline.tiling.config import TileConfig
from terraseg.pipeline.tiling.labels import (
    ChunkLabels,
    RasterChunkLabels,
    SceneVectorLabels,
    match_label_rasters,
    match_pairs,
    rasters_without_labels,
    read_vector_labels,
)

logger = logging.getLogger(__name__)

Bounds = tuple[float, float, float, float]
LabelResolver = Callable[[Path, CRS | None, Bounds], "SceneVectorLabels | Path"]


@dataclass
class ScenePlan:
    """One raster to tile and where its labels come from."""

    name: str
    image: Path
    source: dict[str, Any]
    shape: tuple[int, int]
    bands: list[int]
    band_names: list[str]
    dtype: str
    crs: str | None
    transform: tuple[float, ...]
    nodata: float | None  # as the raster declares it
    labels: SceneVectorLabels | Path | None = field(repr=False)
    label_source: dict[str, Any] = field(default_factory=dict)  # identity of the label file
    nodata_override: NodataOverride = None  # the nodata setting, when given

    @property
    def nodata_used(self) -> float | None:
        """The nodata value pixels are tested against (None: none, or a mask decides)."""
        match self.nodata_override:
            case None:
                return self.nodata
            case "none":
                return None
            case value:
                return float(value)

    def without_vector_labels(self) -> ScenePlan:
        """This plan without its indexed vector labels: what every task of the scene receives.

        Each task gets only the polygons of its own window (see :meth:`window_labels`);
        a label raster's path stays.
        """
        return replace(self, labels=self.labels if isinstance(self.labels, Path) else None)

    @property
    def affine(self) -> Affine:
        """The raster's geotransform."""
        return Affine(*self.transform[:6])

    def task_windows(self, config: TileConfig) -> list[Window]:
        """The units of work: windows of ``chunks_per_task`` x ``chunks_per_task`` chunks.

        They are aligned to the chunk grid, so no two tasks write the same chunk.
        """
        return plan_blocks(self.shape, config.tile_size * config.chunks_per_task)

    def tiles(self, config: TileConfig) -> list[Window]:
        """The scene's tiles, as the tile index lists them."""
        return plan_tiles(self.shape, config.tile_size)

    def window_labels(self, window: Window, config: TileConfig) -> ChunkLabels:
        """What the task of ``window`` needs to build its label."""
        if isinstance(self.labels, SceneVectorLabels):
            return self.labels.for_window(
                window, self.affine, config.all_touched, config.labels_cover
            )
        if self.labels is None:
            raise ValueError(f"plan of {self.name} has no labels; plan it with prepare_tiling")
        return RasterChunkLabels(str(self.labels))

    def attrs(self, config: TileConfig) -> dict[str, Any]:
        """Scene attributes stored in the Zarr group."""
        return {
            "source": self.source,
            "settings": config.identity(),
            "crs": self.crs,
            "transform": list(self.transform[:6]),
            "nodata": self.nodata_used,
            **({"declared_nodata": self.nodata} if self.nodata_override is not None else {}),
            "band_names": self.band_names,
            "labels": self.label_source,
            "shape": list(self.shape),
            "smaller_than_tile": min(self.shape) < config.tile_size,
        }


def distinct_paths(paths: list[Path]) -> list[Path]:
    """``paths`` without repeats of a file (same resolved path), in order; repeats are logged."""
    first: dict[Path, Path] = {}
    for path in paths:
        if path.resolve() in first:
            logger.warning("%s is given more than once; it is tiled once", path)
        first.setdefault(path.resolve(), path)
    return list(first.values())


def unique_scene_names(paths: list[Path]) -> list[str]:
    """Unique scene names from file stems (``name``, ``name-2``, ...)."""
    names: list[str] = []
    for path in paths:
        name, n = path.stem, 1
        while name in names:
            n += 1
            name = f"{path.stem}-{n}"
        names.append(name)
    return names


def plan_scenes(
    images: list[Path], labels_for: LabelResolver, nodata: NodataOverride = None
) -> list[ScenePlan]:
    """Open every raster, check it, and describe the work; no pixels are read.

    Args:
        images: Raster files.
        labels_for: Gives a raster's label source from its path, CRS and bounds.
        nodata: Overrides the rasters' own nodata (see
            :data:`~terraseg.pipeline.rasters.NodataOverride`).

    Returns:
        One plan per raster, in order.

    Raises:
        RasterReadError: A raster cannot be opened.
        InputError: Band counts differ, or ``nodata`` is not a value of a raster's type.
    """
    plans = [
        _plan_scene(path, name, labels_for, nodata)
        for path, name in zip(images, unique_scene_names(images), strict=True)
    ]
    check_same_band_count({p.image: len(p.bands) for p in plans})
    return plans


def _plan_scene(
    path: Path, name: str, labels_for: LabelResolver, nodata: NodataOverride
) -> ScenePlan:
    with open_raster(path) as src:
        bands = data_bands(src)
        check_nodata_fits(nodata, src.dtypes[bands[0] - 1], path)
        labels = labels_for(path, src.crs, tuple(src.bounds))
        return ScenePlan(
            name=name,
            image=path,
            source=SourceIdentity.of(path).to_dict(),
            shape=(src.height, src.width),
            bands=bands,
            band_names=[src.descriptions[b - 1] or f"band_{b}" for b in bands],
            dtype=src.dtypes[bands[0] - 1],
            crs=src.crs.to_wkt() if src.crs else None,
            transform=tuple(src.transform),
            nodata=src.nodata,
            labels=labels,
            label_source=SourceIdentity.of(labels).to_dict() if isinstance(labels, Path) else {},
            nodata_override=nodata,
        )


def prepare_tiling(
    images: list[Path],
    *,
    vector_labels: Path | None = None,
    label_rasters: list[Path] | None = None,
    pairs: tuple[Path, Path] | None = None,
    classes: ClassTable | None = None,
    config: TileConfig,
) -> tuple[list[ScenePlan], ClassTable]:
    """Check all inputs and plan the scenes, before any pixel is read or written.

    Exactly one label source is given: a vector file, label rasters, or a pair
    of folders of image and mask tiles (then ``images`` is ignored). A file given
    twice (the same resolved path) is planned once.

    Args:
        images: Raster files.
        vector_labels: A vector file of labelled polygons.
        label_rasters: Label rasters, matched to the images by name.
        pairs: Folders of image tiles and of mask tiles of the same names.
        classes: The class table (required with label rasters and pairs).
        config: Tiling settings.

    Returns:
        The scene plans and the class table.

    Raises:
        TerrasegError: Any input problem, with the file named.
    """
    images = distinct_paths(images)
    if vector_labels is not None:
        plans, table = _plan_vector_labels(images, vector_labels, classes, config)
        check_plans(plans, config)
        return plans, table
    if classes is None:
        sources = [pairs[1]] if pairs is not None else label_rasters or images
        named = sources[0] if sources else None
        raise InputError(
            "label rasters and mask tiles need a classes file (no classes.yaml beside "
            "them); pass --classes FILE",
            path=named,
        )
    if pairs is not None:
        matched = match_pairs(*pairs)
        images = list(matched)
    elif label_rasters:
        matched = match_label_rasters(images, distinct_paths(label_rasters))
    else:
        raise InputError("no labels given; pass --labels FILE or --pairs IMAGES MASKS")
    plans = plan_scenes(images, lambda path, crs, bounds: matched[path], config.nodata)
    check_label_grids(plans)
    check_plans(plans, config)
    return plans, classes


def _plan_vector_labels(
    images: list[Path], path: Path, classes: ClassTable | None, config: TileConfig
) -> tuple[list[ScenePlan], ClassTable]:
    frame, classes = read_vector_labels(path, config.class_column, classes, config.labels_cover)

    def vector_for(image: Path, crs: CRS | None, bounds: Bounds) -> SceneVectorLabels:
        if crs is None:
            raise CRSError("raster has no CRS, so vector labels cannot be placed on it", path=image)
        return SceneVectorLabels(frame, crs, bounds)

    identity = SourceIdentity.of(path).to_dict()
    scenes = plan_scenes(images, vector_for, config.nodata)
    plans = [replace(p, label_source=identity) for p in scenes]
    overlapping = {p.image: len(p.labels) for p in plans if isinstance(p.labels, SceneVectorLabels)}
    rasters_without_labels(overlapping, path)
    return plans, classes


def check_label_grids(plans: list[ScenePlan]) -> None:
    """Label rasters must share the image grid unless both have a CRS to warp between.

    Raises:
        InputError: A mask's size differs from its image's and they cannot be warped.
    """
    for plan in plans:
        assert isinstance(plan.labels, Path)
        with open_raster(plan.labels) as src:
            if (plan.crs is None or src.crs is None) and src.shape != plan.shape:
                raise InputError(
                    f"mask is {src.width}x{src.height} but its image {plan.image.name} is "
                    f"{plan.shape[1]}x{plan.shape[0]}",
                    path=plan.labels,
                )
