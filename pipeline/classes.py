"""The class table: ids, names and display colours shared by every stage.

Class ids are the values users have in their labels: any set of ids from 0 to
254, with gaps, not necessarily starting at 0 (land cover 1..7, OSM land use 1..8
with 0 unlabelled). The model has one output per class, in id order: output ``k``
is the class with the ``k``-th smallest id. The training store's label arrays hold
these output indices (its ``class_index`` attribute records id -> index, and so
does the model artifact); everything users see (class-map values, colour tables,
styles, polygons' ``class_id``, evaluation reports) holds ids again. Tables whose
ids are 0..N-1, the only ones terraseg could train before ids were mapped, map
each id to itself. Label values listed under ``ignore`` (say 0 = unlabelled) are
read as the ignore label, 255.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, field_validator, model_validator

from terraseg.pipeline.errors import ConfigError
from terraseg.pipeline.settings import StrictModel, build_config, load_yaml

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
    """Classes with unique ids and names, in id order, and the label values to ignore."""

    classes: tuple[SegClass, ...] = Field(min_length=1)
    ignore: tuple[Annotated[int, Field(ge=0, lt=IGNORE_LABEL)], ...] = Field(
        (), description="Label values that mean 'no label' (read as 255), e.g. [0]."
    )

    @field_validator("classes", mode="after")
    @classmethod
    def _in_id_order(cls, value: tuple[SegClass, ...]) -> tuple[SegClass, ...]:
        return tuple(sorted(value, key=lambda c: c.id))

    @field_validator("ignore", mode="after")
    @classmethod
    def _sorted_ignore(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(set(value)))

    @model_validator(mode="after")
    def _unique(self) -> ClassTable:
        for attr in ("id", "name"):
            values = [getattr(c, attr) for c in self.classes]
            duplicates = sorted({str(v) for v in values if values.count(v) > 1})
            if duplicates:
                raise ValueError(f"duplicate class {attr}s: {', '.join(duplicates)}")
        both = sorted(set(self.ids) & set(self.ignore))
        if both:
            listed = ", ".join(map(str, both))
            raise ValueError(f"ids {listed} are both classes and ignored; keep them in one list")
        return self

    @property
    def ids(self) -> list[int]:
        """Class ids in id order (the order of the model's outputs)."""
        return [c.id for c in self.classes]

    @property
    def names(self) -> list[str]:
        """Class names in id order (the order of the model's outputs)."""
        return [c.name for c in self.classes]

    @property
    def num_classes(self) -> int:
        """Number of model outputs: one per class."""
        return len(self.classes)

    @property
    def id_limit(self) -> int:
        """One more than the largest class id: the values a class map may hold."""
        return max(self.ids) + 1

    def class_index(self) -> dict[str, int]:
        """Class id (as text, for JSON) -> model output index."""
        return {str(c.id): index for index, c in enumerate(self.classes)}

    def index_lut(self) -> NDArray[np.uint8]:
        """A 256-entry lookup from label value to model index; ignored and unknown -> 255."""
        lut = np.full(256, IGNORE_LABEL, np.uint8)
        lut[self.ids] = np.arange(self.num_classes, dtype=np.uint8)
        return lut

    def id_lut(self) -> NDArray[np.uint8]:
        """A 256-entry lookup from model index to class id; 255 (no class) stays 255."""
        lut = np.full(256, IGNORE_LABEL, np.uint8)
        lut[: self.num_classes] = self.ids
        return lut

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
        """Values that are neither class ids, nor ignored, nor the ignore label."""
        known = set(self.ids) | set(self.ignore) | {IGNORE_LABEL}
        return sorted({int(v) for v in values} - known)

    def to_dict(self) -> dict[str, Any]:
        """A plain mapping suitable for YAML, JSON or Zarr attributes (``ignore`` when set)."""
        classes = [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes]
        return {"classes": classes, **({"ignore": list(self.ignore)} if self.ignore else {})}

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> ClassTable:
        """The table of a mapping that holds ``classes`` (and maybe ``ignore``) among others.

        Store attributes and model descriptions hold the table beside other keys.
        """
        return cls.model_validate({"classes": data["classes"], "ignore": data.get("ignore", [])})


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

    from terraseg.pipeline.files import write_text

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


def ensure_ids_known(
    table: ClassTable,
    values: Iterable[int],
    *,
    path: str | Path,
    what: str = "values",
    hint: str = "add them or pass --classes",
) -> None:
    """Raise when a raster (or a label column) holds values that are not in the class table.

    Args:
        table: The class table.
        values: The values found.
        path: The file they were found in.
        what: What the values are, to start the message with.
        hint: The fix, in parentheses after the message.

    Raises:
        ConfigError: The message lists the missing values.
    """
    missing = table.missing_ids(values)
    if missing:
        listed = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise ConfigError(f"{what} {listed} are not in the classes file ({hint})", path=path)
