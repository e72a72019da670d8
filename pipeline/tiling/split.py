"""The train/validation split by ground: blocks of a map grid per CRS, ranked by a seeded hash.

Each CRS of the store has one grid of square split blocks anchored at the CRS's
origin (0, 0), ``split_block * tile_size * p`` map units on a side, ``p`` being the
finest pixel size among the store's rasters in that CRS. A tile belongs to the
block that holds its centre, so the tiles of every raster that covers the same
ground (a time series of one footprint, a scene flown twice, bands in separate
files) fall in the same split, whatever the file names, the order of the inputs
or the rasters' own grids. Blocks are ranked by a seeded hash of (CRS, block
column, block row); the first ``round(val_fraction * blocks)`` hold validation (at
least one, and at least one left for training, when there are two blocks or more).
Before any pixel is tiled, :func:`fit_split_block` lowers the block side when the
store's tiles would otherwise lie in one block (or refuses when they always do).

**Buffer.** A training tile whose footprint comes closer than one tile width to a
validation block (or to a validation tile, which may reach half a tile out of its
block) is ``buffer``: neither trained nor validated on, so no training pixel lies
on or next to validation ground. When that would leave no training tile, the
buffer is dropped with a warning.

Rasters without a CRS fall back to their own pixel grid (a grid per scene, keyed
by the scene's name), with a warning. Scenes of the same ground in different CRSs
do not share a grid; a warning names them.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from numpy.typing import NDArray

from terraseg.pipeline.errors import InputError
from terraseg.pipeline.grid import Window
from terraseg.pipeline.tiling.config import TileConfig

logger = logging.getLogger(__name__)

TileId = tuple[str, int, int]  # (scene, row, col)
SPLITS = ("train", "val", "buffer")
CLOSE = 1 - 1e-9  # tiles exactly one tile width away are not in the buffer


@dataclass(frozen=True)
class SceneTiles:
    """What the split needs of one scene: its CRS, its geotransform and its tiles."""

    name: str
    crs: str | None  # WKT; None: split on the scene's own pixel grid
    transform: tuple[float, ...]
    tiles: list[Window]

    @property
    def affine(self) -> Affine:
        """Pixel to map coordinates (the identity without a CRS: pixel coordinates)."""
        return Affine(*self.transform[:6]) if self.crs else Affine.identity()


@dataclass(frozen=True)
class SplitGrid:
    """The split blocks of one CRS (or of one scene without a CRS)."""

    key: str  # "EPSG:<code>", "crs-<hash of the WKT>" or "pixels:<scene>"
    side: float  # block side in map units
    tile: float  # tile width in map units: the buffer distance


@dataclass
class Split:
    """The split of a store: each tile's split and block, and how it was made."""

    tiles: dict[TileId, str]
    blocks: dict[TileId, str]  # the tile's split block: "<grid key>/<column>/<row>"
    grids: list[SplitGrid]
    buffered: bool

    def count(self, split: str) -> int:
        """Tiles in ``split``."""
        return sum(1 for value in self.tiles.values() if value == split)


def split_key(seed: int, block: str) -> str:
    """A stable random rank of a split block."""
    return hashlib.sha256(f"{seed}/{block}".encode()).hexdigest()


def crs_key(wkt: str) -> str:
    """A short name of a CRS that does not depend on how its WKT is written, when it can."""
    from rasterio.crs import CRS

    crs = CRS.from_user_input(wkt)
    epsg = crs.to_epsg()
    if epsg is not None:
        return f"EPSG:{epsg}"
    return "crs-" + hashlib.sha256(crs.to_wkt().encode()).hexdigest()[:12]


def split_grids(scenes: Sequence[SceneTiles], config: TileConfig) -> dict[str, SplitGrid]:
    """The split grid of every scene: one per CRS, one per scene without a CRS.

    Returns:
        The grid of each scene, by scene name.
    """
    keys = {s.name: crs_key(s.crs) if s.crs else f"pixels:{s.name}" for s in scenes}
    pixel: dict[str, float] = {}
    for scene in scenes:
        size = math.sqrt(abs(scene.affine.determinant))
        pixel[keys[scene.name]] = min(size, pixel.get(keys[scene.name], math.inf))
    grids = {
        key: SplitGrid(key, config.split_block * config.tile_size * p, config.tile_size * p)
        for key, p in pixel.items()
    }
    return {name: grids[key] for name, key in keys.items()}


def map_xy(
    affine: Affine, cols: NDArray[np.float64], rows: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Map coordinates of pixel positions (GDAL's arithmetic order)."""
    a, b, c, d, e, f = tuple(affine)[:6]
    return c + cols * a + rows * b, f + cols * d + rows * e


@dataclass
class _Places:
    """Every tile's id, grid, block and footprint (map coordinates), in one order."""

    ids: list[TileId]
    grids: list[SplitGrid]
    blocks: list[str]
    footprints: NDArray[np.object_]


def _place(scenes: Sequence[SceneTiles], grids: dict[str, SplitGrid]) -> _Places:
    ids: list[TileId] = []
    tile_grids: list[SplitGrid] = []
    blocks: list[str] = []
    footprints = []
    for scene in scenes:
        if not scene.tiles:
            continue
        grid = grids[scene.name]
        rows = np.array([[w.row_off, w.row_end] for w in scene.tiles], dtype=np.float64)
        cols = np.array([[w.col_off, w.col_end] for w in scene.tiles], dtype=np.float64)
        corners = [
            map_xy(scene.affine, cols[:, c], rows[:, r])
            for r, c in ((0, 0), (0, 1), (1, 1), (1, 0))
        ]
        xs = np.column_stack([x for x, _ in corners])
        ys = np.column_stack([y for _, y in corners])
        footprints.append(shapely.polygons(np.stack([xs, ys], axis=-1)))
        centre_x = np.floor(xs.mean(axis=1) / grid.side).astype(np.int64)
        centre_y = np.floor(ys.mean(axis=1) / grid.side).astype(np.int64)
        for w, bx, by in zip(scene.tiles, centre_x, centre_y, strict=True):
            ids.append((scene.name, w.row_off, w.col_off))
            tile_grids.append(grid)
            blocks.append(f"{grid.key}/{bx}/{by}")

    shapes = np.concatenate(footprints) if footprints else np.empty(0, object)
    return _Places(ids, tile_grids, blocks, shapes)


def block_count(scenes: Sequence[SceneTiles], config: TileConfig) -> int:
    """The number of split blocks that hold tiles, with ``config.split_block``."""
    return len(set(_place(scenes, split_grids(scenes, config)).blocks))


def fit_split_block(scenes: Sequence[SceneTiles], config: TileConfig) -> int:
    """The split block side (in tiles) that leaves validation non-empty.

    ``config.split_block`` when it gives two split blocks or more (validation then
    gets at least one), else the largest smaller side that does, with a warning
    (one line) saying which. Without validation (``val_fraction`` 0) or tiles, the
    side asked for.

    Raises:
        InputError: Even blocks of one tile leave every tile in one split block.
    """
    tiles = sum(len(s.tiles) for s in scenes)
    if config.val_fraction == 0 or not tiles:
        return config.split_block
    for side in range(config.split_block, 0, -1):
        if block_count(scenes, config.model_copy(update={"split_block": side})) >= 2:
            if side != config.split_block:
                logger.warning(
                    "split blocks of %d tiles instead of %d: with %d, all %d tiles lie in one "
                    "split block and validation would be empty",
                    side,
                    config.split_block,
                    config.split_block,
                    tiles,
                )
            return side
    raise InputError(
        f"all {tiles} tile{'s' if tiles > 1 else ''} of the store lie in one split block, "
        "even with split blocks of one tile, so validation would be empty; tile more "
        "ground, a smaller --tile-size, or pass --val-fraction 0"
    )


def assign_splits(scenes: Sequence[SceneTiles], config: TileConfig) -> Split:
    """Assign train, val or buffer to every tile by the ground it covers.

    Args:
        scenes: Every scene of the store with its tiles.
        config: Split settings (``tile_size``, ``split_block``, ``val_fraction``,
            ``seed``, ``split_buffer``).

    Returns:
        Each tile's split and split block, the grids, and whether a buffer was kept.
    """
    _warn_about_grids(scenes)
    grids = split_grids(scenes, config)
    places = _place(scenes, grids)
    ranked = sorted(set(places.blocks), key=lambda b: split_key(config.seed, b))
    n_val = round(config.val_fraction * len(ranked))
    if config.val_fraction > 0 and len(ranked) >= 2:
        n_val = min(max(n_val, 1), len(ranked) - 1)
    val = set(ranked[:n_val])
    splits = ["val" if block in val else "train" for block in places.blocks]
    buffered = False
    if config.split_buffer and val:
        near = _near_validation(places, splits, val)
        if all(near[i] for i, s in enumerate(splits) if s == "train"):
            logger.warning(
                "no training tile lies a tile width or more away from validation ground, "
                "so the split has no buffer; raise --split-block, lower --val-fraction "
                "or add data"
            )
        else:
            splits = ["buffer" if near[i] else s for i, s in enumerate(splits)]
            buffered = True
    unique = {g.key: g for g in grids.values()}
    return Split(
        tiles=dict(zip(places.ids, splits, strict=True)),
        blocks=dict(zip(places.ids, places.blocks, strict=True)),
        grids=[unique[k] for k in sorted(unique)],
        buffered=buffered,
    )


def _near_validation(places: _Places, splits: list[str], val: set[str]) -> list[bool]:
    """Whether each training tile comes closer than one tile width to validation ground."""
    near = [False] * len(splits)
    by_grid: dict[str, list[int]] = {}
    for index, grid in enumerate(places.grids):
        by_grid.setdefault(grid.key, []).append(index)
    for key, members in by_grid.items():
        grid = places.grids[members[0]]
        train = np.array([i for i in members if splits[i] == "train"], dtype=np.int64)
        val_tiles = [i for i in members if splits[i] == "val"]
        ground = np.concatenate(
            [
                _block_boxes([b for b in val if b.startswith(f"{key}/")], grid),
                places.footprints[val_tiles],
            ]
        )
        if not len(train) or not len(ground):
            continue
        left, right = shapely.STRtree(ground).query(
            places.footprints[train], predicate="dwithin", distance=grid.tile
        )
        distance = shapely.distance(places.footprints[train][left], ground[right])
        for index in np.unique(left[distance < grid.tile * CLOSE]):
            near[int(train[index])] = True
    return near


def _block_boxes(blocks: list[str], grid: SplitGrid) -> NDArray[np.object_]:
    cells = np.array([b.rsplit("/", 2)[1:] for b in blocks], dtype=np.float64).reshape(-1, 2)
    return np.asarray(
        shapely.box(
            cells[:, 0] * grid.side,
            cells[:, 1] * grid.side,
            (cells[:, 0] + 1) * grid.side,
            (cells[:, 1] + 1) * grid.side,
        ),
        dtype=object,
    )


def _warn_about_grids(scenes: Sequence[SceneTiles]) -> None:
    """Warn about scenes without a CRS and about overlapping scenes in different CRSs."""
    plain = sorted(s.name for s in scenes if not s.crs)
    if plain:
        logger.warning(
            "%d scenes have no CRS (%s): each is split on its own pixel grid, so rasters "
            "of the same ground among them may put it in both training and validation",
            len(plain),
            ", ".join(plain[:5]) + (", ..." if len(plain) > 5 else ""),
        )
    located = [(s, crs_key(s.crs)) for s in scenes if s.crs]
    if len({key for _, key in located}) < 2:
        return
    boxes = np.asarray([_lonlat_box(s) for s, _ in located], dtype=object)
    left, right = shapely.STRtree(boxes).query(boxes, predicate="intersects")
    pairs = {
        tuple(sorted((located[a][0].name, located[b][0].name)))
        for a, b in zip(left, right, strict=True)
        if a < b and located[a][1] != located[b][1]
    }
    if pairs:
        logger.warning(
            "scenes in different CRSs overlap (%s and %s; %d pairs in all): the split is by "
            "ground within each CRS only; reproject them to one CRS to split them together",
            *min(pairs),
            len(pairs),
        )


def _lonlat_box(scene: SceneTiles) -> shapely.Polygon | None:
    from rasterio.warp import transform_bounds

    rows = max((w.row_end for w in scene.tiles), default=0)
    cols = max((w.col_end for w in scene.tiles), default=0)
    xs, ys = map_xy(scene.affine, np.array([0, cols, cols, 0]), np.array([0, 0, rows, rows]))
    try:
        bounds = transform_bounds(scene.crs, "EPSG:4326", xs.min(), ys.min(), xs.max(), ys.max())
    except (ValueError, RuntimeError):  # no way to lon/lat: the check skips the scene
        return None
    return shapely.box(*bounds)


def warn_if_share_is_off(split: Split, config: TileConfig) -> None:
    """Log a warning when the validation share is far (over 0.1) from the one asked for."""
    share = split.count("val") / max(1, len(split.tiles))
    if abs(share - config.val_fraction) > 0.1:
        fix = "lower --split-block" if config.split_block > 1 else "tile more ground"
        logger.warning(
            "validation share is %.2f, not %.2f: only %d split blocks of %d tiles; %s",
            share,
            config.val_fraction,
            len(set(split.blocks.values())),
            config.split_block,
            fix,
        )
