"""Writing finalized polygons into the GeoPackage's layers, with a QGIS style per layer.

Polygons are written in a fixed order (rasters as given; per raster its scratch
files in the order the driver produced them), so the file does not depend on which
worker ran what.
"""

from __future__ import annotations

import colorsys
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from terraseg.pipeline.classes import ClassTable, class_table
from terraseg.pipeline.errors import InputError
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.features import load_features
from terraseg.pipeline.vectorize.gpkg import (
    check_layer_names,
    feature_batch,
    polygon_schema,
    write_layer,
    write_styles,
)
from terraseg.pipeline.vectorize.rasters import RasterInfo


@dataclass
class RasterParts:
    """Where one raster's polygons wait to be written."""

    info: RasterInfo
    files: Iterable[str]  # finalized polygons, in writing order (produced as they are read)


@dataclass
class VectorizeSummary:
    """What was written."""

    path: Path
    layers: list[str]
    polygons: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    blocks: int = 0


def write_layers(
    path: Path, parts: Sequence[RasterParts], config: VectorizeConfig
) -> VectorizeSummary:
    """Write the layers and their style; with one layer, while the rasters are merged.

    Args:
        path: The GeoPackage (created).
        parts: Each raster's scratch files, in writing order.
        config: Settings (``layer``, ``layer_per_class``, background).

    Returns:
        The layers and polygon counts written.
    """
    schema = polygon_schema(any(p.info.confidence for p in parts))
    counts: Counter[tuple[int, str]] = Counter()
    if config.layer_per_class:  # every layer reads all files: finish them first
        parts = [RasterParts(p.info, list(p.files)) for p in parts]
        table = _style_table(parts, _ids_in(parts), config)
        layers = _layer_classes(table, config)
    else:
        layers = {config.layer: None}
    for layer, class_id in layers.items():
        batches = _batches(parts, schema, class_id, counts)
        write_layer(path, layer, batches, schema, parts[0].info.crs_wkt)
    if not config.layer_per_class:
        table = _style_table(parts, {i for i, _ in counts}, config)
    write_styles(path, table, list(layers))
    per_class: Counter[str] = Counter()
    for (_, name), n in counts.items():
        per_class[name] += n
    return VectorizeSummary(
        path, list(layers), sum(per_class.values()), dict(sorted(per_class.items()))
    )


def check_class_layers(
    infos: Sequence[RasterInfo], config: VectorizeConfig, source: str | Path | None = None
) -> None:
    """With one layer per class, refuse class names that cannot name a layer, before any work.

    The layers are named after the first raster's class table that is known (see
    :func:`_style_table`); made-up names (``class_<id>``) are always valid.

    Args:
        infos: The rasters.
        config: Settings; nothing is checked unless ``layer_per_class``.
        source: The classes file the table came from, named in the error (default:
            the raster holding the table).

    Raises:
        InputError: A class name is refused by GDAL, SQLite or GeoPackage, or two
            names differ only in case.
    """
    known = [info for info in infos if info.classes is not None]
    if not config.layer_per_class or not known:
        return
    table = known[0].classes
    assert table is not None
    dropped = config.background_id if config.drop_background else None
    try:
        check_layer_names([c.name for c in table.classes if c.id != dropped])
    except ValueError as exc:
        raise InputError(
            f"{exc}; --layer-per-class names a layer after each class: rename the class",
            path=source or known[0].path,
        ) from None


def _layer_classes(table: ClassTable, config: VectorizeConfig) -> dict[str, int | None]:
    """Layer name -> class id written to it, one layer per class."""
    dropped = config.background_id if config.drop_background else None
    return {c.name: c.id for c in table.classes if c.id != dropped}


def _batches(
    parts: Sequence[RasterParts],
    schema: pa.Schema,
    class_id: int | None,
    counts: Counter[tuple[int, str]],
) -> Iterator[pa.RecordBatch]:
    """Arrow batches of ``class_id`` (``None``: all), counting ``(id, name)`` written."""
    for part in parts:
        table = part.info.classes
        for file in part.files:
            features = load_features(file)
            if class_id is not None:
                keep = features["class_id"] == class_id
                if not keep.any():
                    continue
                features = {k: v[keep] for k, v in features.items()}
            ids = np.unique(features["class_id"])
            names = {int(i): table.name_of(int(i)) if table else f"class_{i}" for i in ids}
            counts.update((int(i), names[int(i)]) for i in features["class_id"])
            yield feature_batch(features, names, part.info.source, schema)


def _style_table(
    parts: Sequence[RasterParts], ids: set[int], config: VectorizeConfig
) -> ClassTable:
    """Pick the first raster's class table, or make one up from the ids written."""
    for part in parts:
        if part.info.classes is not None:
            return part.info.classes
    ids = ids or {config.background_id}
    return class_table([(i, f"class_{i}", _palette(k)) for k, i in enumerate(sorted(ids))])


def _ids_in(parts: Sequence[RasterParts]) -> set[int]:
    """The class ids in the parts' files."""
    ids: set[int] = set()
    for part in parts:
        for file in part.files:
            ids.update(int(i) for i in np.unique(load_features(file)["class_id"]))
    return ids


def _palette(k: int) -> tuple[int, int, int]:
    """Distinct colours by golden-ratio hue steps."""
    r, g, b = colorsys.hsv_to_rgb((k * 0.618034) % 1.0, 0.65, 0.9)
    return int(r * 255), int(g * 255), int(b * 255)
