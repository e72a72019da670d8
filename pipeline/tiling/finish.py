"""Finishing a tiling run: each scene's tile index, then the store's split and statistics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import zarr

from terraseg.pipeline.classes import IGNORE_LABEL
from terraseg.pipeline.errors import IncompleteOutputError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.store import array, attributes, open_root, scene_group, scene_names
from terraseg.pipeline.tiling.chunks import ChunkSummary
from terraseg.pipeline.tiling.config import TileConfig
from terraseg.pipeline.tiling.plan import ScenePlan
from terraseg.pipeline.tiling.split import (
    SPLITS,
    SceneTiles,
    Split,
    assign_splits,
    warn_if_share_is_off,
)
from terraseg.pipeline.tiling.stats import BandSummary, band_statistics, merge_all


def finish_scene(
    store: str,
    plan: ScenePlan,
    summary: ChunkSummary,
    config: TileConfig,
    num_classes: int,
    run_id: str,
) -> None:
    """Check that every window of the scene was written, write its tile index, mark it complete.

    Run again after the scene is complete (Dask recomputes tasks of lost workers,
    even after the driver went on to assign the split), it writes nothing.

    Args:
        store: The store's path.
        plan: The scene's plan.
        summary: The merged summary of the scene's windows, all from this run.
        config: Tiling settings.
        num_classes: Classes counted per tile.
        run_id: The run that created the scene.

    Raises:
        IncompleteOutputError: The summary lacks windows of the plan, or the scene
            is not the one ``run_id`` created; the scene stays incomplete.
    """
    group = scene_group(open_root(store), plan.name)
    attrs = attributes(group)
    if attrs.get("run") != run_id:
        raise IncompleteOutputError(
            f"scene {plan.name} was recreated by another run; run {run_id} does not finish it",
            path=plan.image,
        )
    if attrs.get("complete"):
        return
    check_scene_complete(plan, summary, config)
    tiles = [_tile_entry(window, summary, num_classes) for window in plan.tiles(config)]
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


def check_scene_complete(plan: ScenePlan, summary: ChunkSummary, config: TileConfig) -> None:
    """Every window of the scene's plan, and every tile, is in ``summary``.

    Raises:
        IncompleteOutputError: Windows or tiles are missing (or unplanned ones present).
    """
    planned = {(w.row_off, w.col_off) for w in plan.task_windows(config)}
    tiles = {(w.row_off, w.col_off) for w in plan.tiles(config)}
    if summary.windows != planned or set(summary.tiles) != tiles:
        missing = len(planned - summary.windows)
        raise IncompleteOutputError(
            f"scene {plan.name}: {missing} of {len(planned)} windows were not written by "
            "this run, so the scene is not marked complete; run terraseg tile again",
            path=plan.image,
        )


def _tile_entry(window: Window, summary: ChunkSummary, num_classes: int) -> dict[str, Any]:
    counts = summary.tiles[(window.row_off, window.col_off)]
    return {
        "row": window.row_off,
        "col": window.col_off,
        "height": window.height,
        "width": window.width,
        "valid_fraction": float(counts[256]) / (window.height * window.width),
        "class_counts": counts[:num_classes].tolist(),
        "ignore_count": int(counts[IGNORE_LABEL]),
        "split": "train",
    }


def finish_store(store: str, config: TileConfig) -> dict[str, Any]:
    """Assign the split, combine statistics over all scenes, and mark the store complete.

    Every scene in the store must be complete: those of this run and those kept.

    Args:
        store: The store's path.
        config: Tiling settings.

    Returns:
        Scene and tile counts (per split) and the per-band statistics.

    Raises:
        IncompleteOutputError: A scene is not complete (the message names its raster).
    """
    root = open_root(store)
    names = scene_names(root)
    groups = {name: scene_group(root, name) for name in names}
    attrs: dict[str, dict[str, Any]] = {name: dict(g.attrs.asdict()) for name, g in groups.items()}
    for name in names:
        if not attrs[name].get("complete"):
            raise IncompleteOutputError(
                f"scene {name} is not complete, so the store is not marked complete; "
                "run terraseg tile again",
                path=attrs[name].get("source", {}).get("path", store),
            )
    split = assign_splits([scene_tiles(n, attrs[n]) for n in names], config)
    for name in names:
        tiles = []
        for t in attrs[name]["tiles"]:
            key = (name, t["row"], t["col"])
            tiles.append({**t, "split": split.tiles[key], "block": split.blocks[key]})
        groups[name].attrs["tiles"] = tiles
    summary = merge_all([_stored_summary(groups[n], attrs[n]) for n in names])
    band_names = attrs[names[0]]["band_names"] if names else []
    statistics = band_statistics(summary, band_names)
    counts = {s: split.count(s) for s in SPLITS}
    warn_if_share_is_off(split, config)
    root.attrs.update(
        {
            "statistics": statistics,
            "band_names": band_names,
            "split": _split_attrs(split, config, counts),
            "complete": True,
        }
    )
    return {"scenes": len(names), "tiles": len(split.tiles), **counts, "statistics": statistics}


def scene_tiles(name: str, attrs: dict[str, Any]) -> SceneTiles:
    """What the split needs of a stored scene, from its attributes."""
    windows = [Window(t["row"], t["col"], t["height"], t["width"]) for t in attrs["tiles"]]
    return SceneTiles(name, attrs.get("crs"), tuple(attrs["transform"]), windows)


def stored_scene_tiles(store: Path, skip: set[str]) -> list[SceneTiles]:
    """The split's view of the complete scenes of ``store`` not named in ``skip``."""
    if not (store / "zarr.json").is_file():
        return []
    root = zarr.open_group(str(store), mode="r", zarr_format=3)
    found = []
    for name in scene_names(root):
        attrs = attributes(scene_group(root, name))
        if name not in skip and attrs.get("complete") and "tiles" in attrs:
            found.append(scene_tiles(name, attrs))
    return found


def _split_attrs(split: Split, config: TileConfig, counts: dict[str, int]) -> dict[str, Any]:
    """The root's record of the split: settings, grids and tile counts."""
    return {
        "by": "ground",
        "val_fraction": config.val_fraction,
        "block_tiles": config.split_block,
        "seed": config.seed,
        "buffer": split.buffered,
        "grids": [
            {"key": g.key, "origin": [0.0, 0.0], "block_size": g.side, "tile_size": g.tile}
            for g in split.grids
        ],
        "blocks": len(set(split.blocks.values())),
        **{f"{k}_tiles": v for k, v in counts.items()},
    }


def _stored_summary(group: zarr.Group, attrs: dict[str, Any]) -> BandSummary:
    return BandSummary(
        count=np.asarray(attrs["count"], dtype=np.int64),
        total=np.asarray(attrs["total"]),
        squares=np.asarray(attrs["squares"]),
        offset=int(attrs["stats_offset"]),
        histogram=np.asarray(array(group, "histogram")[...]) if "histogram" in group else None,
        sample=np.asarray(array(group, "sample")[...]) if "sample" in group else None,
    )
