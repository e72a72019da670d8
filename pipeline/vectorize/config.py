"""Settings of ``terraseg vectorize``."""

from __future__ import annotations

from pydantic import Field, field_validator

from terraseg.pipeline.classes import IGNORE_LABEL
from terraseg.pipeline.settings import StrictModel


class VectorizeConfig(StrictModel):
    """Settings of ``terraseg vectorize`` (see ``configs/vectorize.yaml``)."""

    block_size: int = Field(2048, ge=16)
    min_area: float = Field(0.0, ge=0)
    fill_holes: float = Field(0.0, ge=0)
    simplify: float = Field(0.0, ge=0)
    drop_background: bool = False
    background_id: int = Field(0, ge=0, lt=IGNORE_LABEL)
    layer_per_class: bool = False
    layer: str = Field("polygons", min_length=1)

    @field_validator("layer")
    @classmethod
    def _layer_name(cls, value: str) -> str:
        """Refuse a name that GDAL, SQLite or GeoPackage refuse, before any work."""
        from terraseg.pipeline.vectorize.gpkg import layer_name_problem

        problem = layer_name_problem(value)
        if problem is not None:
            raise ValueError(f"{problem}; choose another layer name")
        return value
