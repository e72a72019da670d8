"""Tiling test helpers: reference stores made in process, store comparison, CLI commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from terraseg.pipeline.classes import read_classes
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.tiling import TileConfig, prepare_tiling, tile_scenes

TERRASEG = str(Path(sys.executable).parent / "terraseg")


def tile_here(store: Path, images: list[Path], labels: Path, classes: Path, **settings: Any):
    """Tile with vector labels in this process (the reference of a cluster run)."""
    config = TileConfig(**settings)
    plans, table = prepare_tiling(
        images, vector_labels=labels, classes=read_classes(classes), config=config
    )
    return tile_scenes(store, plans, config, table, InProcessExecutor())


def tile_command(images: list[Path], labels: Path, out: Path, *options: str) -> list[str]:
    """A ``terraseg tile`` command line with vector labels."""
    return [
        TERRASEG,
        "tile",
        *map(str, images),
        "--labels",
        str(labels),
        "--out",
        str(out),
        *options,
    ]


def contents(store: Path) -> dict[str, Any]:
    """Every array and every node's attributes, less the id of the run that wrote a scene."""
    root = zarr.open_group(str(store), mode="r")
    found: dict[str, Any] = {"attrs:": dict(root.attrs.asdict())}
    for name, node in root.members(max_depth=None):
        attrs = dict(node.attrs.asdict())
        attrs.pop("run", None)
        found[f"attrs:{name}"] = attrs
        if isinstance(node, zarr.Array):
            found[f"array:{name}"] = node[...]
    return found


def assert_same_store(store: Path, reference: Path) -> None:
    """Same nodes, same arrays (values and dtypes), same attributes."""
    mine, theirs = contents(store), contents(reference)
    assert sorted(mine) == sorted(theirs)
    for key, value in theirs.items():
        if key.startswith("array:"):
            assert mine[key].dtype == value.dtype, key
            np.testing.assert_array_equal(mine[key], value, err_msg=key)
        else:
            assert mine[key] == value, key


def is_complete(store: Path) -> bool:
    """True when the store exists and its root is marked complete."""
    if not (store / "zarr.json").exists():
        return False
    return bool(zarr.open_group(str(store), mode="r").attrs.get("complete"))
