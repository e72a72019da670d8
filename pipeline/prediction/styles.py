"""QGIS layer styles (QML) written beside the prediction COGs.

QGIS applies ``<name>.qml`` as the default style of ``<name>.tif`` when the raster
is added to a project. Without it, QGIS 3.22 shows the class map with its TIFF
colour table, which always has 256 entries, so the legend lists "0" to "255"; and
it draws the first three probability bands as an RGB image. The class map's style
is a paletted renderer with one entry per class of the model (id, name, colour);
the probabilities' style shows the confidence band on a colour ramp from 0 to 1
(QGIS applies the bands' scale, so uint8 values read as probabilities), with the
nodata mask, which QGIS exposes as one more band, as its alpha band.

The files follow the layout QGIS 3.22 writes with "Save as default", reduced to
the symbology (``styleCategories="Symbology"``), so loading one changes nothing
else of the layer.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from terraseg.pipeline.classes import ClassTable

QML_DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
QGIS_VERSION = "3.22.0"  # the oldest QGIS the styles are checked with
# Viridis at five stops: perceptually even, readable in grey and by colour-blind readers.
CONFIDENCE_RAMP = (
    (0.0, "#440154"),
    (0.25, "#3b528b"),
    (0.5, "#21918c"),
    (0.75, "#5ec962"),
    (1.0, "#fde725"),
)


def style_path(raster: Path) -> Path:
    """The style QGIS loads by default for ``raster``: the same name with ``.qml``."""
    return raster.with_suffix(".qml")


def class_map_qml(table: ClassTable, band: int = 1) -> str:
    """A paletted style listing exactly the table's classes: id, name as label, colour."""
    root, pipe = _qgis_pipe()
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="paletted",
        band=str(band),
        opacity="1",
        alphaBand="-1",
        nodataColor="",
    )
    palette = ET.SubElement(renderer, "colorPalette")
    for cls in table.classes:
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(cls.id),
            color=_hex(cls.color),
            alpha="255",
            label=cls.name,
        )
    return _document(root, pipe)


def confidence_qml(band: int, mask_band: int) -> str:
    """A pseudocolour style of ``band`` (1-based) on a 0-1 ramp, legend labelled 0 to 1.

    ``mask_band`` is the band QGIS adds for the dataset's nodata mask (one after
    the last band): used as the alpha band, pixels without a class stay
    transparent instead of showing as probability 0.
    """
    root, pipe = _qgis_pipe()
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        type="singlebandpseudocolor",
        band=str(band),
        opacity="1",
        alphaBand=str(mask_band),
        nodataColor="",
        classificationMin="0",
        classificationMax="1",
    )
    shader = ET.SubElement(ET.SubElement(renderer, "rastershader"), "colorrampshader")
    shader.attrib.update(
        colorRampType="INTERPOLATED",
        classificationMode="1",  # continuous
        clip="0",
        minimumValue="0",
        maximumValue="1",
        labelPrecision="2",
    )
    for value, color in CONFIDENCE_RAMP:
        ET.SubElement(
            shader, "item", value=f"{value:g}", label=f"{value:g}", color=color, alpha="255"
        )
    return _document(root, pipe)


def _qgis_pipe() -> tuple[ET.Element, ET.Element]:
    """The ``qgis`` root and its ``pipe``, with nearest-neighbour resampling (no blurring)."""
    root = ET.Element("qgis", version=QGIS_VERSION, styleCategories="Symbology")
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(
        provider,
        "resampling",
        enabled="false",
        zoomedInResamplingMethod="nearestNeighbour",
        zoomedOutResamplingMethod="nearestNeighbour",
        maxOversampling="2",
    )
    return root, pipe


def _document(root: ET.Element, pipe: ET.Element) -> str:
    """Close the pipe as QGIS writes it and serialise the document."""
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(
        pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0", invertColors="0"
    )
    ET.SubElement(pipe, "rasterresampler", maxOversampling="2")
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root)
    return f"{QML_DOCTYPE}\n{ET.tostring(root, encoding='unicode')}\n"


def _hex(color: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*color)


def pam_path(raster: Path) -> Path:
    """GDAL's auxiliary metadata file of ``raster`` (``<name>.tif.aux.xml``)."""
    return raster.with_name(raster.name + ".aux.xml")


def class_map_pam(table: ClassTable, band: int = 1) -> str:
    """GDAL category names and a thematic raster attribute table (value, name, colour).

    The GTiff driver keeps both in this ``.aux.xml`` beside the file (a COG cannot
    hold them inside); GDAL, QGIS and ArcGIS read it with the raster. Category names
    cover ids 0 to the largest class id, unnamed ids empty.
    """
    root = ET.Element("PAMDataset")
    band_element = ET.SubElement(root, "PAMRasterBand", band=str(band))
    names = ET.SubElement(band_element, "CategoryNames")
    by_id = {c.id: c.name for c in table.classes}
    for class_id in range(max(by_id) + 1):
        ET.SubElement(names, "Category").text = by_id.get(class_id, "")
    rat = ET.SubElement(band_element, "GDALRasterAttributeTable", tableType="thematic")
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    for index, (name, kind, usage) in enumerate(fields):  # GDAL's field types and usages
        field = ET.SubElement(rat, "FieldDefn", index=str(index))
        ET.SubElement(field, "Name").text = name
        ET.SubElement(field, "Type").text = str(kind)
        ET.SubElement(field, "Usage").text = str(usage)
    for row_index, cls in enumerate(table.classes):
        row = ET.SubElement(rat, "Row", index=str(row_index))
        for value in (cls.id, cls.name, *cls.color):
            ET.SubElement(row, "F").text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
