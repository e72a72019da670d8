"""The class table: ids, names and display colours shared by every stage."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from pipeline.errors import ConfigError
from pipeline.settings import StrictModel, build_config, load_yaml

IGNORE_LABEL = 255  # label value for nodata and unlabelled pixels; costs nothing in training
CLASSES_TAG = "TERRASEG_CLASSES"  # raster tag holding ClassTable.to_dict() as JSON

Color = tuple[int, int, int]


class SegClass(StrictModel):
    """One class: an integer id (0-254), a unique name and an RGB colour."""

    id: int = Field(ge=0, lt=IGNORE_LABEL)
    name: str = Field(min_length=1)
    color: Color = (128, 128, 128)

    @field_validator("color", mode="before")
    @classmethod
    def _parse_hex(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.lstrip("#")
            if len(text) != 6:
                raise ValueError("colour must be '#rrggbb' or [r, g, b]")
            return tuple(int(text[i : i + 2], 16) for i in (0, 2, 4))
        return value


class ClassTable(StrictModel):
    """An ordered table of classes with unique ids and names."""

    classes: tuple[SegClass, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> ClassTable:
        for attr in ("id", "name"):
            values = [getattr(c, attr) for c in self.classes]
            duplicates = sorted({str(v) for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"duplicate class {attr}s: {', '.join(duplicates)}")
        return self

    @property
    def ids(self) -> list[int]:
        """Class ids in table order."""
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in table order."""
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        """Number of model outputs: one more than the largest id."""
        return max(self.ids) + 1

    def name_of(self, class_id: int) -> str:
        """The name of ``class_id``; ``"class_<id>"`` for ids outside the table."""
        return {c.id: c.name for c in self.classes}.get(class_id, f"class_{class_id}")

    def id_of(self, name: str) -> int:
        """The id of the class called ``name``.

        Raises:
            ConfigError: No class has that name; the message lists the names.
        """
        for c in self.classes:
            if c.name == name:
                return c.id
        raise ConfigError(f"unknown class name {name!r} (known: {', '.join(self.names)})")

    def colormap(self) -> dict[int, tuple[int, int, int, int]]:
        """A GDAL colour table: id -> RGBA."""
        return {c.id: (*c.color, 255) for c in self.classes}

    def missing_ids(self, values: Iterable[int]) -> list[int]:
        """Values (other than the ignore label) that are not ids of this table."""
        known = set(self.ids) | {IGNORE_LABEL}
        return sorted({int(v) for v in values} - known)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping suitable for YAML, JSON or Zarr attributes."""
        return {
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes]
        }


def class_table(entries: Sequence[tuple[int, str, Color]]) -> ClassTable:
    """Build a table from ``(id, name, (r, g, b))`` tuples."""
    return ClassTable(classes=tuple(SegClass(id=i, name=n, color=c) for i, n, c in entries))


def read_classes(path: str | Path) -> ClassTable:
    """Read a classes file: YAML with a ``classes`` list of ``{id, name, color}``.

    Raises:
        ConfigError: The file is missing or invalid; the message names the key.
    """
    return build_config(ClassTable, load_yaml(path), source=path)


def write_classes(table: ClassTable, path: str | Path) -> None:
    """Write ``table`` as a classes YAML file."""
    import yaml

    from pipeline.files import write_text

    write_text(path, yaml.safe_dump(table.to_dict(), sort_keys=False))


def default_class_table() -> ClassTable:
    """The classes of ``terraseg synth`` scenes."""
    return class_table(
        [
            (0, "background", (176, 154, 118)),
            (1, "building", (220, 40, 40)),
            (2, "road", (90, 90, 90)),
            (3, "water", (30, 100, 220)),
            (4, "vegetation", (40, 160, 60)),
        ]
    )


def ensure_ids_known(table: ClassTable, values: Iterable[int], *, path: str | Path) -> None:
    """Raise when a raster holds values that are not in the class table.

    Raises:
        ConfigError: The message lists the missing values.
    """
    missing = table.missing_ids(values)
    if missing:
        listed = ", ".join(map(str, missing))
        raise ConfigError(
            f"values {listed} are not in the classes file (add them or pass --classes)", path=path
        )
