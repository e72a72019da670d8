"""The settings of ``terraseg tile``."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from terraseg.pipeline.rasters import NodataOverride
from terraseg.pipeline.settings import StrictModel
from terraseg.pipeline.tiling.labels import LabelsCover


class TileConfig(StrictModel):
    """Settings of ``terraseg tile``."""

    tile_size: int = Field(512, ge=16, description="Tile and chunk size in pixels.")
    val_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of split blocks for validation."
    )
    split_block: int = Field(
        4, ge=1, description="Split blocks are this many tiles on a side, on a map grid per CRS."
    )
    split_buffer: bool = Field(
        True,
        description="Leave out of training the tiles within one tile width of validation ground.",
    )
    seed: int = Field(0, ge=0, description="Seed of the split.")
    class_column: str = Field(
        "class", description="Column of the vector labels with class ids or names."
    )
    all_touched: bool = Field(
        False, description="Burn every pixel a polygon touches, not only centres."
    )
    labels_cover: LabelsCover = Field(
        "complete",
        description="complete: unlabelled pixels are background; partial: they are ignored.",
    )
    nodata: NodataOverride = Field(
        None,
        description="Nodata value of the images, overriding what they declare (e.g. -9999, "
        "or when a declared 0 is also dark water); 'none': every pixel is valid; unset: as "
        "each image declares (nodata value, internal mask or alpha band).",
    )
    chunks_per_task: int = Field(
        2, ge=1, description="Chunks per side of a task's window; more amortizes per-write costs."
    )

    def identity(self) -> dict[str, Any]:
        """Settings that change a scene's content (a scene made otherwise is redone).

        ``nodata`` counts only when set, so scenes tiled before it existed stay current.
        """
        fields = {"tile_size", "class_column", "all_touched", "labels_cover"}
        identity = self.model_dump(include=fields)
        if self.nodata is not None:
            identity["nodata"] = str(self.nodata)  # as text: NaN equals itself
        return identity
