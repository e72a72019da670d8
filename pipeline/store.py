"""The Zarr v3 training store: its layout, and reading it (tile index, scenes, arrays).

Layout::

    dataset.zarr/                 root attrs: classes, ignore, class_index, tile_size,
                                             statistics, split, complete
      scenes/<name>/              attrs: source identity, crs, transform, nodata, band names,
                                         tiles (the tile index of this scene), complete,
                                         run (id of the tiling run that wrote the scene)
        image   (bands, rows, cols) source dtype, chunked (bands, tile, tile)
        label   (rows, cols) uint8, chunked (tile, tile): model output indices
                (``class_index`` maps class ids to them); 255 = ignore
        valid   (rows, cols) bool, chunked (tile, tile)
        histogram (bands, bins) int64 (integer imagery) | sample (bands, n) float64

A scene is ``complete`` only after a check that every window of its plan was
written by the run that created it; the root is ``complete`` only after every
scene is, and the statistics and split are set.
The store is written by :mod:`terraseg.pipeline.tiling` and read by training.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import zarr

from terraseg.pipeline.classes import ClassTable
from terraseg.pipeline.errors import InputError
from terraseg.pipeline.remote import RemoteError, fsspec_url, is_remote, remote_reason

STORE_FORMAT = "terraseg-store/1"
SCENES = "scenes"


def zarr_location(path: str | Path) -> str:
    """What zarr opens for a store: a local path as text, a remote one as its fsspec URL.

    ``s3://bucket/x.zarr`` (or ``/vsis3/bucket/x.zarr``, its GDAL form) is opened by
    zarr's ``FsspecStore`` through s3fs, with credentials from the environment.
    """
    return fsspec_url(path) if is_remote(path) else str(path)


def open_root(path: str | Path, mode: str = "a") -> zarr.Group:
    """Open (or create, with mode ``"a"``) the store's root group."""
    return zarr.open_group(zarr_location(path), mode=mode, zarr_format=3)  # type: ignore[arg-type]


def open_existing(path: str | Path) -> zarr.Group:
    """Open a finished store for reading (on this disk, or on object storage).

    Raises:
        InputError: The path is not a terraseg store, or tiling it did not finish.
        RemoteError: A remote store cannot be reached (no fsspec package for its
            protocol, no such bucket, no access).
    """
    try:
        root = zarr.open_group(zarr_location(path), mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError):
        raise InputError("not a Zarr store (run `terraseg tile` first)", path=path) from None
    except (ImportError, OSError) as exc:
        if not is_remote(path):
            raise
        raise RemoteError(f"cannot be read ({remote_reason(exc)})", path=path) from None
    attrs = attributes(root)
    if attrs.get("format") != STORE_FORMAT:
        raise InputError("not a terraseg training store", path=path)
    if not attrs.get("complete"):
        raise InputError(
            "tiling did not finish; run `terraseg tile` again to complete it", path=path
        )
    return root


def stored_class_index(attrs: dict[str, Any]) -> dict[str, int]:
    """Class id (as text) -> the label value a store holds for it, from the root attributes.

    Stores tiled before ids were mapped to model outputs have no ``class_index``:
    their labels hold the ids themselves.
    """
    if "class_index" in attrs:
        return {str(k): int(v) for k, v in attrs["class_index"].items()}
    return {str(c["id"]): int(c["id"]) for c in attrs.get("classes", [])}


def attributes(node: zarr.Group | zarr.Array[Any]) -> dict[str, Any]:
    """A node's attributes as a plain dict."""
    return dict(node.attrs.asdict())


def array(group: zarr.Group, name: str) -> zarr.Array[Any]:
    """The array ``name`` of ``group``."""
    node = group[name]
    assert isinstance(node, zarr.Array)
    return node


def scene_group(root: zarr.Group, name: str) -> zarr.Group:
    """The group of scene ``name``."""
    group = root[f"{SCENES}/{name}"]
    assert isinstance(group, zarr.Group)
    return group


def scene_names(root: zarr.Group) -> list[str]:
    """Names of all scenes in the store, sorted."""
    if SCENES not in root:
        return []
    scenes = root[SCENES]
    assert isinstance(scenes, zarr.Group)
    return sorted(scenes.group_keys())


def tile_index(root: zarr.Group) -> pd.DataFrame:
    """Every tile of every scene: scene, window, valid fraction, class counts, split, block.

    ``split`` is ``train``, ``val`` or ``buffer`` (next to validation ground, used by
    neither); ``block`` names the split block that holds the tile's centre.
    """
    rows = []
    for name in scene_names(root):
        for tile in attributes(scene_group(root, name)).get("tiles", []):
            rows.append({"scene": name, **tile})
    return pd.DataFrame(
        rows,
        columns=[
            "scene",
            "row",
            "col",
            "height",
            "width",
            "valid_fraction",
            "class_counts",
            "ignore_count",
            "split",
            "block",
        ],
    )


def export_tile_index(store: str | Path, out: str | Path) -> int:
    """Write the tile footprints with split, block, valid fraction and class counts to a GeoPackage.

    Scenes in different CRSs are reprojected to the first scene's CRS.

    Returns:
        The number of tiles written.
    """
    import geopandas as gpd
    import shapely
    from affine import Affine

    from terraseg.pipeline.files import atomic_output

    root = open_existing(store)
    classes = ClassTable.from_mapping(attributes(root)).names  # class_counts are in id order
    frames = []
    for name in scene_names(root):
        attrs = attributes(scene_group(root, name))
        transform = Affine(*attrs["transform"])
        records, shapes = [], []
        for tile in attrs["tiles"]:
            x0, y0 = transform @ (tile["col"], tile["row"])
            x1, y1 = transform @ (tile["col"] + tile["width"], tile["row"] + tile["height"])
            shapes.append(shapely.box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            counts = dict(zip(classes, tile["class_counts"], strict=False))
            records.append(
                {
                    "scene": name,
                    "row": tile["row"],
                    "col": tile["col"],
                    "split": tile["split"],
                    "block": tile.get("block"),
                    "valid_fraction": tile["valid_fraction"],
                    **counts,
                }
            )
        frames.append(gpd.GeoDataFrame(records, geometry=shapes, crs=attrs["crs"]))
    if not frames:
        return 0
    target = frames[0].crs
    merged = gpd.GeoDataFrame(
        pd.concat([f.to_crs(target) for f in frames], ignore_index=True), crs=target
    )
    with atomic_output(out) as tmp:
        merged.to_file(tmp, layer="tiles", driver="GPKG", engine="pyogrio")
    return len(merged)


def store_location(path: str | Path) -> str:
    """Where a store is, for records read elsewhere: a local path made absolute, a URL as is."""
    if is_remote(path):
        return fsspec_url(path)
    text = str(path)
    return text if "://" in text else str(Path(text).resolve())


def store_digest(path: str | Path) -> str:
    """The identity of a finished store's content: 16 hex digits.

    A hash of the root's and every scene's attributes: the classes, statistics,
    split and tile index, each scene's source and label files (path, size, time),
    its settings and the id of the tiling run that wrote its arrays. Tiling the
    same files again with the same settings rewrites the arrays under a new run
    id, so the digest changes whenever the arrays may have.

    Raises:
        InputError: ``path`` is not a finished terraseg store.
    """
    root = open_existing(path)
    content = {
        "root": attributes(root),
        "scenes": {name: attributes(scene_group(root, name)) for name in scene_names(root)},
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def store_resolution(path: str | Path) -> str | None:
    """The pixel size of a finished store's scenes as text: ``0.5 m``, ``0.5-2 m``, ``1 x 2 m``.

    In the units of the scenes' CRS (``m``, ``ft``, ``degree``); ``None`` when
    the scenes have no CRS or their CRSs have different units.

    Raises:
        InputError: ``path`` is not a finished terraseg store.
    """
    root = open_existing(path)
    sizes, units = set(), set()
    for name in scene_names(root):
        attrs = attributes(scene_group(root, name))
        if not attrs.get("crs"):
            return None
        units.add(_linear_units(str(attrs["crs"])))
        transform = attrs["transform"]
        sizes.add((abs(float(transform[0])), abs(float(transform[4]))))
    if len(units) != 1 or not sizes:
        return None
    unit = units.pop()
    if len(sizes) == 1:
        ((x, y),) = sizes
        return f"{x:g} {unit}" if x == y else f"{x:g} x {y:g} {unit}"
    finest = min(min(size) for size in sizes)
    coarsest = max(max(size) for size in sizes)
    return f"{finest:g}-{coarsest:g} {unit}"


def _linear_units(crs: str) -> str:
    """``m``, ``ft``, ``degree`` or the unit's own name, of a CRS given as WKT or code."""
    from rasterio.crs import CRS

    parsed = CRS.from_user_input(crs)
    if parsed.is_geographic:
        return "degree"
    unit = str(parsed.linear_units)
    return {"metre": "m", "meter": "m", "foot": "ft", "US survey foot": "US ft"}.get(unit, unit)
