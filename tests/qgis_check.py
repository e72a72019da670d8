"""Open terraseg's outputs in QGIS, render them, and print what QGIS shows, as JSON.

Run by ``tests/test_gis_tools.py`` with a Python that has PyQGIS (Debian's
``python3-qgis``), headless: ``QT_QPA_PLATFORM=offscreen python3 tests/qgis_check.py
CLASSES.tif PROBABILITIES.tif POLYGONS.gpkg``. It needs only QGIS, so that it runs
outside terraseg's virtual environment.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from collections import Counter
from typing import Any

from qgis.core import (  # type: ignore[import-not-found]
    Qgis,
    QgsApplication,
    QgsMapRendererSequentialJob,
    QgsMapSettings,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize  # type: ignore[import-not-found]
from qgis.PyQt.QtGui import QColor  # type: ignore[import-not-found]
from qgis.PyQt.QtXml import QDomDocument  # type: ignore[import-not-found]


def rendered_colours(layer: Any, size: tuple[int, int]) -> dict[str, int]:
    """Pixel count per opaque colour of ``layer`` drawn over its extent at ``size``."""
    settings = QgsMapSettings()
    settings.setLayers([layer])
    settings.setDestinationCrs(layer.crs())
    settings.setExtent(layer.extent())
    settings.setOutputSize(QSize(*size))
    settings.setBackgroundColor(QColor(0, 0, 0, 0))
    settings.setFlag(QgsMapSettings.Antialiasing, False)
    job = QgsMapRendererSequentialJob(settings)
    job.start()
    job.waitForFinished()
    image = job.renderedImage()
    counts: Counter[str] = Counter()
    for y in range(image.height()):
        for x in range(image.width()):
            colour = QColor.fromRgba(image.pixel(x, y))
            if colour.alpha() == 255:
                counts[colour.name()] += 1
    return dict(counts)


def legend(renderer: Any) -> list[list[str]]:
    """(label, #rrggbb) of each legend entry of a raster renderer."""
    return [[label, colour.name()] for label, colour in renderer.legendSymbologyItems()]


def raster_report(path: str) -> dict[str, Any]:
    layer = QgsRasterLayer(path, "raster")
    renderer = layer.renderer()
    band = renderer.band() if hasattr(renderer, "band") else renderer.grayBand()
    provider = layer.dataProvider()
    return {
        "valid": layer.isValid(),
        "renderer": renderer.type(),
        "band": band,
        "band_name": layer.bandName(band),
        "scale": provider.bandScale(band),
        "legend": legend(renderer),
        "colours": rendered_colours(layer, (layer.width(), layer.height())),
    }


def vector_report(path: str) -> dict[str, Any]:
    """Per polygon layer: its default style as QGIS applied it, its SLD as QGIS reads it."""
    layers = {}
    for name in feature_tables(path):
        layer = QgsVectorLayer(f"{path}|layername={name}", name, "ogr")
        renderer = layer.renderer()
        layers[name] = {
            "valid": layer.isValid(),
            "renderer": renderer.type(),
            "attribute": getattr(renderer, "classAttribute", str)(),
            "categories": [
                [c.label(), c.symbol().color().name(), str(c.value())]
                for c in getattr(renderer, "categories", list)()
            ],
            "sld_rules": sld_rules(path, name),
            "colours": rendered_colours(layer, (256, 192)),
        }
    return layers


def sld_rules(path: str, name: str) -> list[list[str]]:
    """(label, fill) of each rule of the layer's stored SLD, as QGIS reads it."""
    with sqlite3.connect(path) as db:
        (sld,) = db.execute(
            "SELECT styleSLD FROM layer_styles WHERE f_table_name = ?", (name,)
        ).fetchone()
    document = QDomDocument()
    document.setContent(sld, True)
    layer = QgsVectorLayer(f"{path}|layername={name}", "sld", "ogr")
    named_layer = document.documentElement().firstChildElement("NamedLayer")
    if not layer.readSld(named_layer, "") or layer.renderer().type() != "RuleRenderer":
        return []
    rules = layer.renderer().rootRule().children()
    return [[r.label(), r.symbol().color().name()] for r in rules]


def feature_tables(path: str) -> list[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT table_name FROM gpkg_contents WHERE data_type = 'features'")
        return [str(row[0]) for row in rows]


def main(classes: str, probabilities: str, polygons: str) -> None:
    app = QgsApplication([], False)
    app.initQgis()
    report = {
        "qgis": Qgis.version(),
        "classes": raster_report(classes),
        "probabilities": raster_report(probabilities),
        "polygons": vector_report(polygons),
    }
    print(json.dumps(report))
    app.exitQgis()


if __name__ == "__main__":
    main(*sys.argv[1:4])
