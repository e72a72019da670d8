"""The train/validation split: whole blocks of neighbouring tiles, ranked by a seeded hash."""

from __future__ import annotations

import hashlib
import logging

from pipeline.tiling.config import TileConfig

logger = logging.getLogger(__name__)

TileId = tuple[str, int, int]  # (scene, row, col)


def split_key(seed: int, scene: str, block_row: int, block_col: int) -> str:
    """A stable random rank of a split block."""
    return hashlib.sha256(f"{seed}/{scene}/{block_row}/{block_col}".encode()).hexdigest()


def split_block_of(tile_id: TileId, tile: int, config: TileConfig) -> TileId:
    """The split block ``(scene, block_row, block_col)`` that holds a tile."""
    block_px = tile * config.split_block
    return (tile_id[0], tile_id[1] // block_px, tile_id[2] // block_px)


def assign_splits(tiles: list[TileId], tile: int, config: TileConfig) -> dict[TileId, str]:
    """Assign train or val to tiles by spatial blocks of ``split_block`` tiles.

    Blocks are ranked by a seeded hash and the first ``round(val_fraction * blocks)``
    (at least one when there are two blocks or more) go to validation, so tiles that
    touch each other almost always share a split.

    Args:
        tiles: ``(scene, row, col)`` of every tile.
        tile: The tile size.
        config: Split settings.

    Returns:
        ``"train"`` or ``"val"`` for every tile.
    """
    block_of = {t: split_block_of(t, tile, config) for t in tiles}
    blocks = sorted(set(block_of.values()), key=lambda b: split_key(config.seed, *b))
    n_val = round(config.val_fraction * len(blocks))
    if config.val_fraction > 0 and len(blocks) >= 2:
        n_val = min(max(n_val, 1), len(blocks) - 1)
    val = set(blocks[:n_val])
    return {t: "val" if block_of[t] in val else "train" for t in tiles}


def warn_if_share_is_off(splits: dict[TileId, str], config: TileConfig) -> None:
    """Log a warning when the validation share is far (over 0.1) from the one asked for."""
    share = sum(1 for v in splits.values() if v == "val") / max(1, len(splits))
    if abs(share - config.val_fraction) > 0.1:
        blocks = {split_block_of(t, config.tile_size, config) for t in splits}
        logger.warning(
            "validation share is %.2f, not %.2f: only %d split blocks of %d tiles; "
            "lower --split-block",
            share,
            config.val_fraction,
            len(blocks),
            config.split_block,
        )
