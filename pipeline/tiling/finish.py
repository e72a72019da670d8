"""Finishing a tiling run: each scene's tile index, then the store's split and statistics."""

from __future__ import annotations

from typing import Any

import numpy as np
import zarr

from pipeline.classes import IGNORE_LABEL
from pipeline.grid import Window
from pipeline.store import array, open_root, scene_group, scene_names
from pipeline.tiling.chunks import ChunkSummary
from pipeline.tiling.config import TileConfig
from pipeline.tiling.plan import ScenePlan
from pipeline.tiling.split import assign_splits, warn_if_share_is_off
from pipeline.tiling.stats import BandSummary, band_statistics, merge_all


def finish_scene(
    store: str, plan: ScenePlan, summary: ChunkSummary, config: TileConfig, num_classes: int
) -> None:
    """Write the scene's tile index and statistics, then mark it complete.

    Args:
        store: The store's path.
        plan: The scene's plan.
        summary: The merged summary of every window of the scene.
        config: Tiling settings.
        num_classes: Classes counted per tile.
    """
    group = scene_group(open_root(store), plan.name)
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

    Args:
        store: The store's path.
        config: Tiling settings.

    Returns:
        Scene and tile counts (per split) and the per-band statistics.
    """
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
    warn_if_share_is_off(splits, config)
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


def _stored_summary(group: zarr.Group, attrs: dict[str, Any]) -> BandSummary:
    return BandSummary(
        count=np.asarray(attrs["count"], dtype=np.int64),
        total=np.asarray(attrs["total"]),
        squares=np.asarray(attrs["squares"]),
        offset=int(attrs["stats_offset"]),
        histogram=np.asarray(array(group, "histogram")[...]) if "histogram" in group else None,
        sample=np.asarray(array(group, "sample")[...]) if "sample" in group else None,
    )
