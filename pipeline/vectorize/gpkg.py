"""GeoPackage output of polygons: streamed layers, spatial index, and a QGIS style per layer.

Files are GeoPackage 1.2 (``application_id`` "GPKG", ``user_version`` 10200), which
GDAL 3.6 and QGIS 3.22 open without a warning; newer GDAL would write 1.4 by
default. Styles go in a ``layer_styles`` table laid out exactly as QGIS 3.22
creates it through GDAL (column types, the ISO-8601 ``update_time`` default, its
``gpkg_contents`` row and feature-count triggers), each row with a QGIS style
(QML) and the same symbology as SLD, so QGIS applies the style when the layer is
added and other clients can read it.
"""

from __future__ import annotations

import errno
import resource
import shutil
import sqlite3
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import pyarrow as pa
import pyogrio
import pyogrio.errors

from terraseg.pipeline.classes import ClassTable
from terraseg.pipeline.errors import OS_ERROR_REASONS, FileSystemError
from terraseg.pipeline.files import human_size

# GDAL's and SQLite's errors of a GeoPackage write (see :func:`write_error`).
WRITE_ERRORS = (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, sqlite3.Error)
LOW_SPACE = 2**20  # bytes: a write that failed with less free than this filled the disk
GEOMETRY_COLUMN = "geom"
GDAL_REFUSED_FIRST = "`~!@#$%^&*()+-={}|[]\\:\";'<>?,./"  # first characters GDAL refuses
GPKG_VERSION = "1.2"  # the newest version GDAL 3.6 and QGIS 3.22 read without a warning
WKB_FIELD = pa.field(
    GEOMETRY_COLUMN, pa.binary(), metadata={"ARROW:extension:name": "geoarrow.wkb"}
)


def layer_name_problem(name: str) -> str | None:
    """Why GDAL, SQLite or this module would refuse ``name`` as a layer, or ``None``."""
    lowered = name.lower()
    if not name.strip():
        return "a layer name cannot be empty"
    if lowered.startswith("gpkg"):
        return "GeoPackage reserves names that begin with 'gpkg'"
    if lowered.startswith("sqlite_"):
        return "SQLite reserves names that begin with 'sqlite_'"
    if name[0] in GDAL_REFUSED_FIRST:
        return f"GDAL refuses layer names that begin with {name[0]!r}"
    if lowered == "layer_styles":
        return "the table layer_styles holds the layers' styles"
    return None


def check_layer_names(names: Sequence[str]) -> None:
    """Refuse layer names that GeoPackage, GDAL or SQLite refuse, or that clash.

    SQLite compares table names without case, so ``Road`` and ``road`` clash.

    Raises:
        ValueError: The first refused name and why.
    """
    seen: dict[str, str] = {}
    for name in names:
        problem = layer_name_problem(name)
        if problem is not None:
            raise ValueError(f"layer name {name!r}: {problem}")
        clash = seen.setdefault(name.lower(), name)
        if clash != name:
            raise ValueError(
                f"layer names {clash!r} and {name!r} are one table name in a GeoPackage "
                "(names are compared without case)"
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
    """Build an Arrow batch from finalized features.

    See :mod:`terraseg.pipeline.vectorize.features`.
    """
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
        dataset_options=None if Path(path).exists() else {"VERSION": GPKG_VERSION},
        layer_options={"SPATIAL_INDEX": "YES", "FID": "fid"},
    )


# --------------------------------------------------------------------------- QGIS style

# As QGIS 3.22 creates the table through GDAL 3.6 (QgsOgrProviderMetadata::saveStyle).
LAYER_STYLES_DDL = (
    'CREATE TABLE "layer_styles" ( "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL, '
    '"f_table_catalog" TEXT(256), "f_table_schema" TEXT(256), "f_table_name" TEXT(256), '
    '"f_geometry_column" TEXT(256), "styleName" TEXT(30), "styleQML" TEXT, "styleSLD" TEXT, '
    '"useAsDefault" BOOLEAN, "description" TEXT, "owner" TEXT(30), "ui" TEXT(30), '
    "\"update_time\" DATETIME DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))"
)
# GDAL keeps each table's feature count in gpkg_ogr_contents with these triggers.
FEATURE_COUNT_TRIGGERS = [
    f'CREATE TRIGGER "trigger_{event}_feature_count_layer_styles" AFTER {event.upper()} ON '
    '"layer_styles" BEGIN UPDATE gpkg_ogr_contents SET feature_count = feature_count '
    f"{sign} 1 WHERE lower(table_name) = lower('layer_styles'); END"
    for event, sign in (("insert", "+"), ("delete", "-"))
]
OUTLINE_COLOR = (35, 35, 35)  # QGIS's default polygon outline
OUTLINE_MM = 0.1
SLD_PIXEL_MM = 0.28  # the "standardized rendering pixel" of OGC Symbology Encoding
SLD = "http://www.opengis.net/sld"
SE = "http://www.opengis.net/se"
OGC = "http://www.opengis.net/ogc"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
XLINK = "http://www.w3.org/1999/xlink"
SLD_SCHEMA = "http://schemas.opengis.net/sld/1.1.0/StyledLayerDescriptor.xsd"


def categorized_qml(table: ClassTable, attribute: str = "class_id") -> str:
    """Return a QGIS style (QML) colouring polygons by class id with the table's colours."""
    outline = ",".join(map(str, (*OUTLINE_COLOR, 255)))
    categories, symbols = [], []
    for k, cls in enumerate(table.classes):
        rgba = ",".join(map(str, (*cls.color, 255)))
        label = quoteattr(cls.name)
        categories.append(f'<category value="{cls.id}" label={label} symbol="{k}" render="true"/>')
        symbols.append(
            f'<symbol type="fill" name="{k}" alpha="1" clip_to_extent="1" force_rhr="0">'
            '<layer class="SimpleFill" enabled="1" pass="0" locked="0"><Option type="Map">'
            f'<Option name="color" type="QString" value="{rgba}"/>'
            f'<Option name="outline_color" type="QString" value="{outline}"/>'
            '<Option name="outline_style" type="QString" value="solid"/>'
            f'<Option name="outline_width" type="QString" value="{OUTLINE_MM}"/>'
            '<Option name="style" type="QString" value="solid"/>'
            f'</Option><prop k="color" v="{rgba}"/><prop k="outline_color" v="{outline}"/>'
            f'<prop k="outline_width" v="{OUTLINE_MM}"/><prop k="style" v="solid"/></layer>'
            "</symbol>"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
        '<qgis version="3.22.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr="{attribute}" forceraster="0" '
        'symbollevels="0" enableorderby="0">'
        f"<categories>{''.join(categories)}</categories>"
        f"<symbols>{''.join(symbols)}</symbols>"
        "</renderer-v2></qgis>\n"
    )


def categorized_sld(table: ClassTable, layer: str, attribute: str = "class_id") -> str:
    """Return the style of :func:`categorized_qml` as an SLD 1.1 document (as QGIS exports it).

    One rule per class: a filter ``attribute = id``, titled with the class name,
    filling with the class colour inside a thin dark outline.
    """
    stroke = f"{OUTLINE_MM / SLD_PIXEL_MM:.2f}"
    rules = "".join(
        f"""
   <se:Rule>
    <se:Name>{escape(cls.name)}</se:Name>
    <se:Description>
     <se:Title>{escape(cls.name)}</se:Title>
    </se:Description>
    <ogc:Filter xmlns:ogc="{OGC}">
     <ogc:PropertyIsEqualTo>
      <ogc:PropertyName>{escape(attribute)}</ogc:PropertyName>
      <ogc:Literal>{cls.id}</ogc:Literal>
     </ogc:PropertyIsEqualTo>
    </ogc:Filter>
    <se:PolygonSymbolizer>
     <se:Fill>
      <se:SvgParameter name="fill">{_hex(cls.color)}</se:SvgParameter>
     </se:Fill>
     <se:Stroke>
      <se:SvgParameter name="stroke">{_hex(OUTLINE_COLOR)}</se:SvgParameter>
      <se:SvgParameter name="stroke-width">{stroke}</se:SvgParameter>
      <se:SvgParameter name="stroke-linejoin">bevel</se:SvgParameter>
     </se:Stroke>
    </se:PolygonSymbolizer>
   </se:Rule>"""
        for cls in table.classes
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<StyledLayerDescriptor xmlns="{SLD}" version="1.1.0" xmlns:se="{SE}" xmlns:ogc="{OGC}" \
xmlns:xlink="{XLINK}" xmlns:xsi="{XSI}" xsi:schemaLocation="{SLD} {SLD_SCHEMA}">
 <NamedLayer>
  <se:Name>{escape(layer)}</se:Name>
  <UserStyle>
   <se:Name>{escape(layer)}</se:Name>
   <se:FeatureTypeStyle>{rules}
   </se:FeatureTypeStyle>
  </UserStyle>
 </NamedLayer>
</StyledLayerDescriptor>
"""


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def write_styles(path: str | Path, table: ClassTable, layers: Sequence[str]) -> None:
    """Store the class style of each layer as its default QGIS style (``layer_styles``).

    Each row holds the style as QML and as SLD, named after its layer.
    """
    rows = [
        (layer, GEOMETRY_COLUMN, layer, categorized_qml(table), categorized_sld(table, layer))
        for layer in layers
    ]
    with sqlite3.connect(path) as db:
        db.execute(LAYER_STYLES_DDL)
        db.executemany(
            "INSERT INTO layer_styles (f_table_catalog, f_table_schema, f_table_name, "
            "f_geometry_column, styleName, styleQML, styleSLD, useAsDefault, description, "
            "owner) VALUES ('', '', ?, ?, ?, ?, ?, 1, 'terraseg class colours', '')",
            rows,
        )
        # Registered as an attributes table, as QGIS (through GDAL) does when it saves a style.
        db.execute(
            "INSERT INTO gpkg_contents (table_name, data_type, identifier, description, "
            "srs_id) VALUES ('layer_styles', 'attributes', 'layer_styles', '', 0)"
        )
        if _has_table(db, "gpkg_ogr_contents"):
            db.execute(
                "INSERT INTO gpkg_ogr_contents (table_name, feature_count) VALUES (?, ?)",
                ("layer_styles", len(rows)),
            )
            for trigger in FEATURE_COUNT_TRIGGERS:
                db.execute(trigger)
    db.close()


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def write_error(path: Path, written: Path, exc: Exception) -> FileSystemError:
    """The error of a GeoPackage that GDAL or SQLite could not write, as one line.

    Both report a full disk and the process's file-size limit in words of their own
    ("database or disk is full", "disk I/O error", or a later error such as a missing
    table); the free space beside the file and the size limit tell which it was.

    Args:
        path: The GeoPackage, as the message names it.
        written: The file being written (its temporary name), still in place.
        exc: GDAL's or SQLite's error.
    """
    free = shutil.disk_usage(written.parent).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    size = written.stat().st_size if written.exists() else 0
    code = None
    if free < LOW_SPACE or "disk is full" in str(exc):
        code = errno.ENOSPC
    elif limit != resource.RLIM_INFINITY and size + LOW_SPACE > limit:
        code = errno.EFBIG
    if code is None:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return FileSystemError(
            f"cannot write the GeoPackage ({reason}); {human_size(free)} free", path=path
        )
    return FileSystemError(OS_ERROR_REASONS[code], path=path, code=code)


def polygon_layers(path: str | Path) -> list[str]:
    """Names of the polygon layers of a GeoPackage (not ``layer_styles``)."""
    return [str(name) for name, kind in pyogrio.list_layers(str(path)) if kind is not None]
