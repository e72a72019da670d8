"""Settings of ``terraseg predict``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from terraseg.pipeline.prediction.blending import WindowName
from terraseg.pipeline.settings import NodataOverride, StrictModel


class PredictConfig(StrictModel):
    """How to tile, blend, batch and write predictions."""

    overlap: float = Field(
        0.25, ge=0.0, lt=0.5, description="Tile overlap as a fraction of the tile size."
    )
    window: WindowName = Field("spline", description="Blending window.")
    tta: Literal["none", "flips", "d4"] = Field("none", description="Test-time augmentation.")
    batch_size: int | None = Field(
        None,
        ge=1,
        description="Tiles per forward pass (default: 1 on CPU, faster there; 8 on CUDA).",
    )
    block_size: int = Field(
        1024,
        ge=64,
        description="Pixels per Dask block side (rounded to the tile stride; smaller "
        "where a raster would have fewer than 3 blocks per side).",
    )
    probabilities: bool = Field(
        False, description="Also write a probability COG with a confidence band."
    )
    probability_dtype: Literal["uint8", "float32"] = Field(
        "uint8", description="uint8 scales probabilities to 0-255; float32 keeps them."
    )
    bands: list[int] | None = Field(
        None, description="1-based raster bands to feed the model, in order."
    )
    nodata: NodataOverride = Field(
        None,
        description="Nodata value of the rasters, overriding what they declare (e.g. when "
        "a declared 0 is also dark water); 'none': every pixel is valid; unset: as each "
        "raster declares. Nodata pixels get no class (255).",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where the model runs.")
    precision: Literal["auto", "fp32", "bf16", "fp16", "int8"] = Field(
        "auto",
        description="Inference precision; auto is bf16 on CUDA and on CPUs with native bf16 "
        "(AVX512-BF16, AMX), fp32 elsewhere. int8 (x86 CPUs): the backbone's convolutions "
        "in int8 with the calibration stored when the model was trained, the rest as auto.",
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="Torch threads per CPU inference stream (default 1: each Dask worker "
        "thread is a stream).",
    )
    overwrite: bool = Field(False, description="Redo outputs that are complete and current.")

    @field_validator("bands")
    @classmethod
    def _positive(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or min(value) < 1):
            raise ValueError("bands are 1-based indexes, e.g. [1, 2, 3, 4]")
        return value

    def batch_for(self, device: str) -> int:
        """The batch size on ``device`` (``cpu`` or ``cuda``)."""
        return self.batch_size or (8 if device == "cuda" else 1)

    def overlap_pixels(self, tile: int) -> int:
        """The overlap in pixels for a tile size."""
        return round(self.overlap * tile)
