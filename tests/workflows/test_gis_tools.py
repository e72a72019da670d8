"""Predict and vectorize outputs as GIS tools open them: GDAL's command-line tools and QGIS.

Both are outside the virtual environment (Debian: ``apt-get install gdal-bin
python3-qgis``); each test is skipped where its tool is missing. ``make qgis-check``
runs them and reports the skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import rasterio

from terraseg.pipeline.classes import IGNORE_LABEL
from terraseg.pipeline.executor import InProcessExecutor
from terraseg.pipeline.prediction.config import PredictConfig
from terraseg.pipeline.prediction.driver import predict_files
from terraseg.pipeline.prediction.inference import cached_model
from terraseg.pipeline.prediction.job import plan_file
from terraseg.pipeline.vectorize.config import VectorizeConfig
from terraseg.pipeline.vectorize.driver import vectorize_rasters
from terraseg.pipeline.vectorize.rasters import read_raster_info
from tests.helpers import tiny_model_artifact, tiny_scenes

QGIS_CHECK = Path(__file__).resolve().parents[1] / "qgis_check.py"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A class map, probabilities and polygons of a tiny model on a scene with nodata."""
    root = tmp_path_factory.mktemp("gis")
    model = str(tiny_model_artifact(root / "model"))
    scene = tiny_scenes(root / "scenes", scenes=1, nodata="holes").scenes[0]
    config = PredictConfig(probabilities=True, block_size=96, batch_size=4, threads=1)
    artifact = cached_model(model)
    job = plan_file(model, artifact, scene, root / "out", config)
    (outcome,) = predict_files([job], InProcessExecutor())
    assert outcome.error is None, outcome.error
    gpkg = root / "polygons.gpkg"
    vectorize_rasters(
        [read_raster_info(job.paths.classes)], gpkg, VectorizeConfig(), InProcessExecutor()
    )
    return {
        "classes": job.paths.classes,
        "probabilities": job.paths.probabilities,
        "gpkg": gpkg,
        "table": artifact.classes,
    }


def _run(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )


@pytest.mark.parametrize("tool", ["gdalinfo", "ogrinfo"])
def test_gdal_command_line_tools_open_the_outputs_without_a_warning(outputs, tool):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install gdal-bin)")
    version = _run([tool, "--version"]).stdout.strip()
    if tool == "gdalinfo":
        for raster in (outputs["classes"], outputs["probabilities"]):
            result = _run([tool, str(raster)])
            assert (result.returncode, result.stderr) == (0, ""), f"{version}: {result.stderr}"
            assert "LAYOUT=COG" in result.stdout
        assert "Scale:0.00392156862745098" in result.stdout  # the probabilities' scale
    else:
        result = _run([tool, "-al", "-so", str(outputs["gpkg"])])
        assert (result.returncode, result.stderr) == (0, ""), f"{version}: {result.stderr}"
        assert "using driver `GPKG'" in result.stdout
        assert "Layer name: polygons" in result.stdout


def qgis_python() -> str | None:
    """A Python that imports PyQGIS: ``QGIS_PYTHON``, else the system's ``python3``."""
    for candidate in (os.environ.get("QGIS_PYTHON"), "/usr/bin/python3", "python3"):
        path = candidate and shutil.which(candidate)
        if path and path != sys.executable:
            probe = _run([path, "-c", "import qgis.core"], QT_QPA_PLATFORM="offscreen")
            if probe.returncode == 0:
                return path
    return None


@pytest.fixture(scope="module")
def qgis(outputs: dict[str, Any]) -> dict[str, Any]:
    """What QGIS shows of the outputs (see tests/qgis_check.py)."""
    python = qgis_python()
    if python is None:
        pytest.skip("PyQGIS is not installed (Debian: apt-get install python3-qgis)")
    paths = [str(outputs[k]) for k in ("classes", "probabilities", "gpkg")]
    result = _run([python, str(QGIS_CHECK), *paths], QT_QPA_PLATFORM="offscreen")
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return report


def test_qgis_shows_the_class_map_with_exactly_the_model_classes(outputs, qgis):
    table = outputs["table"]
    expected = [[c.name, "#{:02x}{:02x}{:02x}".format(*c.color)] for c in table.classes]
    classes = qgis["classes"]
    assert classes["valid"] and classes["renderer"] == "paletted"
    assert classes["legend"] == expected, qgis["qgis"]
    assert classes["colours"] and set(classes["colours"]) <= {hex for _, hex in expected}


def test_qgis_shows_confidence_as_probabilities_with_nodata_transparent(outputs, qgis):
    probabilities = qgis["probabilities"]
    assert probabilities["renderer"] == "singlebandpseudocolor"
    assert probabilities["band_name"].endswith(": confidence")
    assert probabilities["scale"] == pytest.approx(1 / 255)
    assert [label for label, _ in probabilities["legend"]] == ["0", "0.25", "0.5", "0.75", "1"]
    classes = qgis["classes"]  # the same pixels are opaque in both: nodata is transparent
    assert sum(probabilities["colours"].values()) == sum(classes["colours"].values())
    with rasterio.open(outputs["classes"]) as src:
        nodata = int((src.read(1) == IGNORE_LABEL).sum())
        assert nodata > 0 and sum(classes["colours"].values()) == src.width * src.height - nodata


def test_qgis_applies_the_polygon_style_and_reads_its_sld(outputs, qgis):
    table = outputs["table"]
    expected = [[c.name, "#{:02x}{:02x}{:02x}".format(*c.color)] for c in table.classes]
    layer = qgis["polygons"]["polygons"]
    assert layer["valid"] and layer["renderer"] == "categorizedSymbol"
    assert layer["attribute"] == "class_id"
    assert layer["categories"] == [
        [*e, str(c.id)] for e, c in zip(expected, table.classes, strict=True)
    ]
    assert layer["sld_rules"] == expected
    drawn = set(layer["colours"])
    assert drawn & {hex for _, hex in expected}
