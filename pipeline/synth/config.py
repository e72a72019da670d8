"""Settings of ``terraseg synth``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from terraseg.pipeline.settings import StrictModel

TIFF_TILE = 512  # GeoTIFF internal tile size; painting blocks are multiples of it


class SynthConfig(StrictModel):
    """How many scenes to generate, how large, where on Earth, and in which form."""

    scenes: int = Field(2, ge=1, description="Number of scenes.")
    size: tuple[int, int] = Field((2048, 2048), description="Scene width and height in pixels.")
    seed: int = Field(0, ge=0, description="Random seed; the same seed gives identical files.")
    crs: str = Field("EPSG:32633", description="Projected CRS of the imagery (metres).")
    resolution: float = Field(0.5, gt=0, description="Ground resolution in metres per pixel.")
    nodata: Literal["none", "border", "holes", "both"] = Field(
        "none", description="Nodata areas: a rotated-swath border, cloud-like holes, or both."
    )
    labels: Literal["vector", "raster"] = Field(
        "vector",
        description="Labels as one GeoPackage of polygons or as one label raster per scene.",
    )
    labels_crs: str | None = Field(
        None, description="CRS of the label polygons (default: the imagery's)."
    )
    dtype: Literal["uint8", "uint16"] = Field("uint8", description="Pixel type of the imagery.")
    block_size: int = Field(1024, ge=TIFF_TILE, description="Pixels per painting block side.")
    workers: int | None = Field(
        None, ge=1, description="Painting processes (default: one per core)."
    )

    @field_validator("size", mode="before")
    @classmethod
    def _parse_size(cls, value: Any) -> Any:
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, str):
            parts = value.lower().split("x")
            if len(parts) == 1:
                parts = parts * 2
            if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
                raise ValueError("size must be N or WIDTHxHEIGHT, e.g. 2048 or 4096x2048")
            return (int(parts[0]), int(parts[1]))
        return value

    @field_validator("size")
    @classmethod
    def _positive(cls, value: tuple[int, int]) -> tuple[int, int]:
        if min(value) < 1:
            raise ValueError("width and height must be at least 1 pixel")
        return value

    @field_validator("crs")
    @classmethod
    def _projected(cls, value: str) -> str:
        from terraseg.pipeline.synth.writer import projected_crs

        projected_crs(value)
        return value

    @field_validator("labels_crs")
    @classmethod
    def _parsable(cls, value: str | None) -> str | None:
        if value is not None:
            from rasterio.crs import CRS
            from rasterio.errors import CRSError

            try:
                CRS.from_user_input(value)
            except CRSError:
                raise ValueError(f"cannot parse CRS {value!r}") from None
        return value

    @field_validator("block_size")
    @classmethod
    def _tile_multiple(cls, value: int) -> int:
        if value % TIFF_TILE:
            raise ValueError(f"block_size must be a multiple of {TIFF_TILE}")
        return value
