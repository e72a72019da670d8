"""GeoPackage output of polygons: streamed layers, spatial index, and a QGIS style per layer."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import numpy as np
import pyarrow as pa
import pyogrio

from pipeline.classes import ClassTable

GEOMETRY_COLUMN = "geom"
WKB_FIELD = pa.field(
    GEOMETRY_COLUMN, pa.binary(), metadata={"ARROW:extension:name": "geoarrow.wkb"}
)


def polygon_schema(with_confidence: bool) -> pa.Schema:
    """Return the attribute schema of every polygon layer."""
    fields = [
        pa.field("class_id", pa.int32()),
        pa.field("class_name", pa.string()),
        pa.field("area_m2", pa.float64()),
        pa.field("perimeter_m", pa.float64()),
    ]
    if with_confidence:
        fields.append(pa.field("confidence", pa.float64()))
    fields += [pa.field("source", pa.string()), WKB_FIELD]
    return pa.schema(fields)


def feature_batch(
    features: Mapping[str, Any], names: Mapping[int, str], source: str, schema: pa.Schema
) -> pa.RecordBatch:
    """Build an Arrow batch from finalized features (see :mod:`pipeline.vectorize.features`)."""
    ids = np.asarray(features["class_id"], np.int32)
    n = len(ids)
    columns: dict[str, Any] = {
        "class_id": ids,
        "class_name": [names[int(i)] for i in ids],
        "area_m2": features["area_m2"],
        "perimeter_m": features["perimeter_m"],
        "confidence": pa.array(features["confidence"], pa.float64(), from_pandas=True),
        "source": [source] * n,
        GEOMETRY_COLUMN: list(features["wkb"]),
    }
    return pa.record_batch([columns[f.name] for f in schema], schema=schema)


def write_layer(
    path: str | Path,
    layer: str,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    crs_wkt: str,
) -> None:
    """Stream ``batches`` into a new layer of the GeoPackage at ``path``.

    The file is created if needed; the spatial index is built when the layer closes.
    An empty stream gives an empty layer with the full schema. An exception raised
    while ``batches`` are produced ends the layer and is re-raised once it is closed
    (pyogrio would report it as a bare ``RuntimeError``); the caller discards the file.
    """
    stream = _Guarded(batches)
    reader = pa.RecordBatchReader.from_batches(schema, iter(stream))
    with warnings.catch_warnings():  # temporary names (".partial") are not ".gpkg"
        warnings.filterwarnings("ignore", message="The filename extension should be")
        warnings.filterwarnings("ignore", message=".*non conformant file extension")
        _write_arrow(reader, path, layer, crs_wkt)
    if stream.error is not None:
        raise stream.error


class _Guarded:
    """Iterates ``batches``, ending quietly at the first exception and keeping it."""

    def __init__(self, batches: Iterable[pa.RecordBatch]) -> None:
        self.batches = batches
        self.error: BaseException | None = None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            yield from self.batches
        except (Exception, KeyboardInterrupt) as exc:  # re-raised by write_layer
            self.error = exc


def _write_arrow(reader: pa.RecordBatchReader, path: str | Path, layer: str, crs_wkt: str) -> None:
    pyogrio.write_arrow(
        reader,
        str(path),
        layer=layer,
        driver="GPKG",
        geometry_name=GEOMETRY_COLUMN,
        geometry_type="Polygon",
        crs=crs_wkt,
        append=Path(path).exists(),
        layer_options={"SPATIAL_INDEX": "YES", "FID": "fid"},
    )


# --------------------------------------------------------------------------- QGIS style

LAYER_STYLES_DDL = """
CREATE TABLE IF NOT EXISTS layer_styles (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    f_table_catalog TEXT(256), f_table_schema TEXT(256), f_table_name TEXT(256),
    f_geometry_column TEXT(256), styleName TEXT(30), styleQML TEXT, styleSLD TEXT,
    useAsDefault BOOLEAN, description TEXT, owner TEXT(30), ui TEXT(30),
    update_time DATETIME DEFAULT CURRENT_TIMESTAMP
)
"""


def categorized_qml(table: ClassTable, attribute: str = "class_id") -> str:
    """Return a QGIS style (QML) colouring polygons by class id with the table's colours."""
    categories, symbols = [], []
    for k, cls in enumerate(table.classes):
        rgba = ",".join(map(str, (*cls.color, 255)))
        label = quoteattr(cls.name)
        categories.append(f'<category value="{cls.id}" label={label} symbol="{k}" render="true"/>')
        symbols.append(
            f'<symbol type="fill" name="{k}" alpha="1" clip_to_extent="1" force_rhr="0">'
            '<layer class="SimpleFill" enabled="1" pass="0" locked="0"><Option type="Map">'
            f'<Option name="color" type="QString" value="{rgba}"/>'
            '<Option name="outline_color" type="QString" value="35,35,35,255"/>'
            '<Option name="outline_style" type="QString" value="solid"/>'
            '<Option name="outline_width" type="QString" value="0.1"/>'
            '<Option name="style" type="QString" value="solid"/>'
            f'</Option><prop k="color" v="{rgba}"/><prop k="outline_color" v="35,35,35,255"/>'
            '<prop k="outline_width" v="0.1"/><prop k="style" v="solid"/></layer></symbol>'
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.28.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr="{attribute}" forceraster="0" '
        'symbollevels="0" enableorderby="0">'
        f"<categories>{''.join(categories)}</categories>"
        f"<symbols>{''.join(symbols)}</symbols>"
        "</renderer-v2></qgis>\n"
    )


def write_styles(path: str | Path, styles: Mapping[str, str]) -> None:
    """Store ``layer -> QML`` as the default QGIS style of each layer (``layer_styles``)."""
    with sqlite3.connect(path) as db:
        db.execute(LAYER_STYLES_DDL)
        db.executemany(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner, ui) VALUES ('', '', ?, ?, ?, ?, '', 1, 'terraseg class colours', '', '')",
            [(layer, GEOMETRY_COLUMN, layer, qml) for layer, qml in styles.items()],
        )
        # Registered as an attributes table, as QGIS itself does when it saves a style.
        db.execute(
            "INSERT OR IGNORE INTO gpkg_contents (table_name, data_type, identifier, "
            "description) VALUES ('layer_styles', 'attributes', 'layer_styles', '')"
        )
    db.close()


def polygon_layers(path: str | Path) -> list[str]:
    """Names of the polygon layers of a GeoPackage (not ``layer_styles``)."""
    return [str(name) for name, kind in pyogrio.list_layers(str(path)) if kind is not None]
