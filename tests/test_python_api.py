"""The Python API: the docs' notebook runs as written; settings and imports behave."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "python-api.md"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_the_documented_notebook_runs_as_written(tmp_path: Path) -> None:
    blocks = PYTHON_BLOCK.findall(PAGE.read_text())
    assert len(blocks) >= 5
    # As a notebook runs it: no __main__ file for worker processes to import again.
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(blocks)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    scenes, tiles = (int(n) for n in lines[0].split())
    assert scenes == 2 and tiles > 0
    assert len(list((tmp_path / "predictions").glob("*_classes.tif"))) == 1
    assert (tmp_path / "polygons.gpkg").is_file()
    assert 0.0 <= float(lines[-1]) <= 1.0


def test_import_terraseg_loads_neither_torch_nor_gdal() -> None:
    code = (
        "import sys, terraseg; "
        "assert terraseg.__version__; "
        "heavy = {'torch', 'rasterio', 'dask', 'zarr', 'mlflow'} & set(sys.modules); "
        "assert not heavy, heavy; "
        "print(sorted(n for n in dir(terraseg) if not n.startswith('_')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(
        sorted(
            ["evaluate", "load_model", "predict_array", "predict_file", "predict_files",
             "synth", "tile", "train", "vectorize"]
        )
    )  # fmt: skip


def test_settings_nested_dotted_and_file_agree(tmp_path: Path) -> None:
    from terraseg.pipeline.training.config import TrainConfig
    from terraseg.workflows.api.settings import stage_config

    yaml_file = tmp_path / "train.yaml"
    yaml_file.write_text("epochs: 7\ndata: {batch_size: 3}\n")
    nested = stage_config(TrainConfig, yaml_file, {"data": {"crop_size": 96}})
    dotted = stage_config(TrainConfig, yaml_file, {"data.crop_size": 96})
    assert nested == dotted
    assert (nested.epochs, nested.data.batch_size, nested.data.crop_size) == (7, 3, 96)
    assert stage_config(TrainConfig, nested, {"epochs": 2}).epochs == 2  # a config object


def test_a_bad_setting_is_one_line_naming_the_key() -> None:
    import terraseg
    from terraseg.pipeline.errors import ConfigError

    with pytest.raises(ConfigError) as raised:
        terraseg.predict_array("no/such/model", __import__("numpy").zeros((4, 8, 8)), overlap=2)
    assert "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="epochs"):
        terraseg.train("no-store.zarr", "run", epochs=0)
