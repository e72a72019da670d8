"""Tiling rasters and labels into the training store: planning, chunk tasks, finishing.

The work splits into pure functions that a graph builder maps over chunks:
:func:`plan_scenes` checks every input before any work, :func:`tile_chunk` reads
one chunk-aligned window, builds its label and writes it, :func:`finish_scene`
writes the scene's tile index and marks it complete, and :func:`finish_store`
assigns the train/validation split and the statistics.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from affine import Affine
from numpy.typing import NDArray
from pydantic import Field
from rasterio.crs import CRS

from pipeline.classes import IGNORE_LABEL, ClassTable
from pipeline.errors import CRSError, InputError
from pipeline.grid import Window, axis_offsets, plan_blocks, plan_tiles
from pipeline.label_sources import (
    ChunkLabels,
    RasterChunkLabels,
    SceneVectorLabels,
    chunk_label,
    match_label_rasters,
    match_pairs,
    rasters_without_labels,
    read_vector_labels,
)
from pipeline.rasters import (
    SourceIdentity,
    check_same_band_count,
    data_bands,
    open_raster,
    read_window,
    shared_reader,
)
from pipeline.settings import StrictModel
from pipeline.stats import BandSummary, band_statistics, merge_all
from pipeline.store import (
    STORE_FORMAT,
    create_scene,
    open_root,
    scene_group,
    scene_is_current,
    scene_names,
    write_chunk,
)

logger = logging.getLogger(__name__)


class TileConfig(StrictModel):
    """Settings of ``terraseg tile``."""

    tile_size: int = Field(512, ge=16, description="Tile and chunk size in pixels.")
    val_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of split blocks for validation."
    )
    split_block: int = Field(4, ge=1, description="Split blocks are this many tiles on a side.")
    seed: int = Field(0, ge=0, description="Seed of the split.")
    class_column: str = Field(
        "class", description="Column of the vector labels with class ids or names."
    )
    all_touched: bool = Field(
        False, description="Burn every pixel a polygon touches, not only centres."
    )
    labels_cover: Literal["complete", "partial"] = Field(
        "complete",
        description="complete: unlabelled pixels are background; partial: they are ignored.",
    )
    chunks_per_task: int = Field(
        2, ge=1, description="Chunks per side of a task's window; more amortizes per-write costs."
    )

    def identity(self) -> dict[str, Any]:
        """Settings that change a scene's content (a scene made otherwise is redone)."""
        return self.model_dump(include={"tile_size", "class_column", "all_touched", "labels_cover"})


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
    nodata: float | None
    labels: SceneVectorLabels | Path | None = field(repr=False)

    def light(self) -> ScenePlan:
        """This plan without its vector labels, to send to workers with every chunk task."""
        return replace(self, labels=self.labels if isinstance(self.labels, Path) else None)

    @property
    def affine(self) -> Affine:
        """The raster's geotransform."""
        return Affine(*self.transform[:6])

    def chunks(self, tile: int, chunks_per_side: int = 1) -> list[Window]:
        """Windows of ``chunks_per_side`` x ``chunks_per_side`` chunks: the units of work.

        They are aligned to the chunk grid, so no two tasks write the same chunk.
        """
        return plan_blocks(self.shape, tile * chunks_per_side)

    def chunk_labels(self, window: Window, config: TileConfig) -> ChunkLabels:
        """What a chunk task needs to build the label of ``window``."""
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
            "nodata": self.nodata,
            "band_names": self.band_names,
            "shape": list(self.shape),
            "smaller_than_tile": min(self.shape) < config.tile_size,
        }


def scene_names_for(paths: list[Path]) -> list[str]:
    """Unique scene names from file stems (``name``, ``name-2``, ...)."""
    names: list[str] = []
    for path in paths:
        name, n = path.stem, 1
        while name in names:
            n += 1
            name = f"{path.stem}-{n}"
        names.append(name)
    return names


LabelResolver = Callable[
    [Path, CRS | None, tuple[float, float, float, float]], "SceneVectorLabels | Path"
]


def plan_scenes(images: list[Path], labels_for: LabelResolver) -> list[ScenePlan]:
    """Open every raster, check it, and describe the work; no pixels are read.

    Args:
        images: Raster files.
        labels_for: Gives a raster's label source from its path, CRS and bounds.

    Raises:
        RasterReadError: A raster cannot be opened.
        InputError: Band counts differ.
    """
    plans = []
    for path, name in zip(images, scene_names_for(images), strict=True):
        with open_raster(path) as src:
            bands = data_bands(src)
            names = [src.descriptions[b - 1] or f"band_{b}" for b in bands]
            plans.append(
                ScenePlan(
                    name=name,
                    image=path,
                    source=SourceIdentity.of(path).to_dict(),
                    shape=(src.height, src.width),
                    bands=bands,
                    band_names=names,
                    dtype=src.dtypes[bands[0] - 1],
                    crs=src.crs.to_wkt() if src.crs else None,
                    transform=tuple(src.transform),
                    nodata=src.nodata,
                    labels=labels_for(path, src.crs, tuple(src.bounds)),
                )
            )
    check_same_band_count({p.image: len(p.bands) for p in plans})
    return plans


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
    of folders of image and mask tiles (then ``images`` is ignored).

    Returns:
        The scene plans and the class table.

    Raises:
        TerrasegError: Any input problem, with the file named.
    """
    if vector_labels is not None:
        frame, classes = read_vector_labels(vector_labels, config.class_column, classes)

        def vector_for(
            path: Path, crs: CRS | None, bounds: tuple[float, float, float, float]
        ) -> SceneVectorLabels:
            if crs is None:
                raise CRSError(
                    "raster has no CRS, so vector labels cannot be placed on it", path=path
                )
            return SceneVectorLabels(frame, crs, bounds)

        plans = plan_scenes(images, vector_for)
        overlapping = {
            p.image: len(p.labels) for p in plans if isinstance(p.labels, SceneVectorLabels)
        }
        rasters_without_labels(overlapping, vector_labels)
        return plans, classes
    if classes is None:
        raise InputError("label rasters and mask tiles need a classes file; pass --classes FILE")
    if pairs is not None:
        matched = match_pairs(*pairs)
        images = list(matched)
    elif label_rasters:
        matched = match_label_rasters(images, label_rasters)
    else:
        raise InputError("no labels given; pass --labels FILE or --pairs IMAGES MASKS")
    plans = plan_scenes(images, lambda path, crs, bounds: matched[path])
    check_label_grids(plans)
    return plans, classes


def start_store(
    path: Path, plans: list[ScenePlan], config: TileConfig, classes: ClassTable
) -> list[ScenePlan]:
    """Open the store, drop scenes that are not inputs, and return the plans still to do.

    The root is marked incomplete until :func:`finish_store` runs.
    """
    root = open_root(path)
    root.attrs.update(
        {
            "format": STORE_FORMAT,
            "complete": False,
            "tile_size": config.tile_size,
            **classes.to_dict(),
        }
    )
    wanted = {p.name for p in plans}
    for stale in set(scene_names(root)) - wanted:
        logger.info("removing scene %s: not among the inputs", stale)
        del root[f"scenes/{stale}"]
    todo = []
    for plan in plans:
        if scene_is_current(root, plan.name, plan.source, config.identity()):
            logger.info("skipping %s: already tiled and unchanged", plan.image)
            continue
        create_scene(
            root,
            plan.name,
            bands=len(plan.bands),
            shape=plan.shape,
            dtype=plan.dtype,
            tile=config.tile_size,
            attrs=plan.attrs(config),
        )
        todo.append(plan)
    return todo


@dataclass
class ChunkSummary:
    """What chunk tasks report: band statistics and per-tile pixel counts, mergeable."""

    bands: BandSummary
    tiles: dict[tuple[int, int], NDArray[np.int64]]  # (row, col) -> 256 label counts + valid count

    def merge(self, other: ChunkSummary) -> ChunkSummary:
        """The summary of both parts."""
        tiles = dict(self.tiles)
        for key, counts in other.tiles.items():
            tiles[key] = tiles[key] + counts if key in tiles else counts
        return ChunkSummary(self.bands.merge(other.bands), tiles)


def tile_chunk(
    store: str, plan: ScenePlan, window: Window, labels: ChunkLabels, classes: ClassTable, tile: int
) -> ChunkSummary:
    """Read one window of a raster, build its label, write both; summarize it.

    Nodata pixels (nodata value, mask or alpha) get the ignore label. The summary
    holds band statistics of valid pixels and, for every tile of the scene's tile
    plan that overlaps this chunk, the label counts and valid pixels of the overlap.
    """
    src = shared_reader(plan.image, (plan.source["size"], plan.source["mtime_ns"]))
    image, valid = read_window(src, window, plan.bands)
    label = chunk_label(
        labels, window, transform=plan.affine, crs=src.crs, shape=plan.shape, classes=classes
    )
    label = np.where(valid, label, np.uint8(IGNORE_LABEL)).astype(np.uint8)
    write_chunk(store, plan.name, window, image, label, valid)
    return ChunkSummary(
        BandSummary.of(image, valid), _tile_counts(plan, window, label, valid, tile)
    )


def _tile_counts(
    plan: ScenePlan, window: Window, label: NDArray[np.uint8], valid: NDArray[np.bool_], tile: int
) -> dict[tuple[int, int], NDArray[np.int64]]:
    counts = {}
    height, width = min(tile, plan.shape[0]), min(tile, plan.shape[1])
    tile_rows = [r for r in axis_offsets(plan.shape[0], tile) if window.overlaps_rows(r, height)]
    tile_cols = [c for c in axis_offsets(plan.shape[1], tile) if window.overlaps_cols(c, width)]
    for candidate in [Window(r, c, height, width) for r in tile_rows for c in tile_cols]:
        part = candidate.intersection(window)
        assert part is not None  # the candidates overlap the window by construction
        rows, cols = part.relative_to(window).slices()
        histogram = np.bincount(label[rows, cols].ravel(), minlength=256).astype(np.int64)
        valid_count = np.int64(np.count_nonzero(valid[rows, cols]))
        counts[(candidate.row_off, candidate.col_off)] = np.append(histogram, valid_count)
    return counts


def finish_scene(
    store: str, plan: ScenePlan, summary: ChunkSummary, tile: int, num_classes: int
) -> None:
    """Write the scene's tile index and statistics, then mark it complete."""
    group = scene_group(open_root(store), plan.name)
    tiles = []
    for window in plan_tiles(plan.shape, tile):
        counts = summary.tiles[(window.row_off, window.col_off)]
        tiles.append(
            {
                "row": window.row_off,
                "col": window.col_off,
                "height": window.height,
                "width": window.width,
                "valid_fraction": float(counts[256]) / (window.height * window.width),
                "class_counts": counts[:num_classes].tolist(),
                "ignore_count": int(counts[IGNORE_LABEL]),
                "split": "train",
            }
        )
    bands = summary.bands
    if bands.histogram is not None:
        group.create_array("histogram", data=bands.histogram, overwrite=True)
    if bands.sample is not None:
        group.create_array("sample", data=bands.sample, overwrite=True)
    group.attrs.update(
        {
            "tiles": tiles,
            "stats_offset": bands.offset,
            "count": bands.count.tolist(),
            "total": bands.total.tolist(),
            "squares": bands.squares.tolist(),
            "complete": True,
        }
    )


def split_key(seed: int, scene: str, block_row: int, block_col: int) -> str:
    """A stable random rank of a split block."""
    return hashlib.sha256(f"{seed}/{scene}/{block_row}/{block_col}".encode()).hexdigest()


def assign_splits(
    tiles: list[tuple[str, int, int]], tile: int, config: TileConfig
) -> dict[tuple[str, int, int], str]:
    """Assign train or val to tiles by spatial blocks of ``split_block`` tiles.

    Blocks are ranked by a seeded hash and the first ``round(val_fraction * blocks)``
    (at least one when there are two blocks or more) go to validation, so tiles that
    touch each other almost always share a split.

    Args:
        tiles: ``(scene, row, col)`` of every tile.
        tile: The tile size.
        config: Split settings.
    """
    block_px = tile * config.split_block
    block_of = {t: (t[0], t[1] // block_px, t[2] // block_px) for t in tiles}
    blocks = sorted(set(block_of.values()), key=lambda b: split_key(config.seed, *b))
    n_val = round(config.val_fraction * len(blocks))
    if config.val_fraction > 0 and len(blocks) >= 2:
        n_val = min(max(n_val, 1), len(blocks) - 1)
    val = set(blocks[:n_val])
    return {t: "val" if block_of[t] in val else "train" for t in tiles}


def finish_store(store: str, config: TileConfig) -> dict[str, Any]:
    """Assign the split, combine statistics over all scenes, and mark the store complete."""
    root = open_root(store)
    names = scene_names(root)
    groups = {name: scene_group(root, name) for name in names}
    attrs: dict[str, dict[str, Any]] = {name: dict(g.attrs.asdict()) for name, g in groups.items()}
    keys = [(n, t["row"], t["col"]) for n in names for t in attrs[n]["tiles"]]
    splits = assign_splits(keys, config.tile_size, config)
    for name in names:
        tiles = [{**t, "split": splits[(name, t["row"], t["col"])]} for t in attrs[name]["tiles"]]
        groups[name].attrs["tiles"] = tiles
    summary = merge_all([_stored_summary(groups[n], attrs[n]) for n in names])
    band_names = attrs[names[0]]["band_names"] if names else []
    statistics = band_statistics(summary, band_names)
    counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val")}
    share = counts["val"] / max(1, len(keys))
    if abs(share - config.val_fraction) > 0.1:
        logger.warning(
            "validation share is %.2f, not %.2f: only %d split blocks of %d tiles; "
            "lower --split-block",
            share,
            config.val_fraction,
            len(
                {
                    (
                        n,
                        r // (config.tile_size * config.split_block),
                        c // (config.tile_size * config.split_block),
                    )
                    for n, r, c in keys
                }
            ),
            config.split_block,
        )
    root.attrs.update(
        {
            "statistics": statistics,
            "band_names": band_names,
            "split": {
                "val_fraction": config.val_fraction,
                "block_tiles": config.split_block,
                "seed": config.seed,
                **{f"{k}_tiles": v for k, v in counts.items()},
            },
            "complete": True,
        }
    )
    return {"scenes": len(names), "tiles": len(keys), **counts, "statistics": statistics}


def _stored_summary(group: Any, attrs: dict[str, Any]) -> BandSummary:
    return BandSummary(
        count=np.asarray(attrs["count"], dtype=np.int64),
        total=np.asarray(attrs["total"]),
        squares=np.asarray(attrs["squares"]),
        offset=int(attrs["stats_offset"]),
        histogram=np.asarray(group["histogram"][...]) if "histogram" in group else None,
        sample=np.asarray(group["sample"][...]) if "sample" in group else None,
    )


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


def tile_in_process(
    store: Path, plans: list[ScenePlan], config: TileConfig, classes: ClassTable
) -> dict[str, Any]:
    """Tile ``plans`` into ``store`` chunk by chunk in this process, without Dask.

    The same functions as the Dask graph, in order; for small stores, tests and
    benchmarks. Scenes already current are skipped as on a cluster.
    """
    todo = start_store(store, plans, config, classes)
    for plan in todo:
        light = plan.light()
        summary: ChunkSummary | None = None
        for window in plan.chunks(config.tile_size, config.chunks_per_task):
            part = tile_chunk(
                str(store),
                light,
                window,
                plan.chunk_labels(window, config),
                classes,
                config.tile_size,
            )
            summary = part if summary is None else summary.merge(part)
        assert summary is not None
        finish_scene(str(store), light, summary, config.tile_size, classes.num_classes)
    result = finish_store(str(store), config)
    result["skipped"] = len(plans) - len(todo)
    return result
