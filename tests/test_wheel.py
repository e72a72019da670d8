"""The built wheel: one import name, beside a package that owns ``workflows``.

The wheel is built from this tree and installed, without its dependencies, into a
fresh virtual environment whose dependencies come from the test's own environment
(a ``.pth`` line: the editable install of this tree is not seen there), together with
llama-index-workflows from the package index, whose ``workflows`` package once
replaced terraseg's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import tiny_model_artifact, tiny_scenes

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # this tree stays out
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", ROOT, "-w", out)
    assert built.returncode == 0, built.stderr
    (path,) = out.glob("terraseg-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("venv") / "env"
    base = getattr(sys, "_base_executable", sys.executable)
    assert run(base, "-m", "venv", folder).returncode == 0
    site = folder / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = folder / "bin" / "pip"
    installed = run(pip, "install", "-q", "--no-deps", wheel)
    assert installed.returncode == 0, installed.stderr
    beside = run(pip, "install", "-q", "llama-index-workflows")
    if beside.returncode != 0:
        pytest.skip(f"llama-index-workflows could not be installed: {beside.stderr[-300:]}")
    return folder


def test_the_wheel_holds_terraseg_alone(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    (metadata,) = tops - {"terraseg"}
    assert metadata.endswith(".dist-info") and "terraseg" in tops
    assert "terraseg/py.typed" in names and "terraseg/pipeline/prediction/driver.py" in names
    assert "terraseg/workflows/cli/main.py" in names
    assert not [n for n in names if "__pycache__" in n]


def test_installed_beside_llama_index_workflows(venv: Path, tmp_path: Path) -> None:
    python, terraseg = venv / "bin" / "python", venv / "bin" / "terraseg"
    owner = run(python, "-c", "import workflows, terraseg; print(workflows.__file__)", cwd=tmp_path)
    assert owner.returncode == 0 and "terraseg" not in owner.stdout  # llama-index's package
    assert "site-packages/workflows" in owner.stdout
    version = run(terraseg, "--version", cwd=tmp_path)
    assert version.returncode == 0 and "terraseg, version" in version.stdout, version.stderr
    for bare in ("pipeline", "terraseg.pipeline.nothing"):
        assert run(python, "-c", f"import {bare}", cwd=tmp_path).returncode != 0
    (tmp_path / "pipeline.py").write_text("raise SystemExit('a notebook folder of its own')\n")
    scenes = tiny_scenes(tmp_path / "scenes")
    model = tiny_model_artifact(tmp_path / "model")
    out = tmp_path / "out"
    done = run(terraseg, "-q", "predict", scenes.scenes[0], "--model", model, "-o", out,
               cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / f"{scenes.scenes[0].stem}_classes.tif").is_file()
    where = run(python, "-c", "import terraseg.pipeline as p; print(p.__file__)", cwd=tmp_path)
    assert str(venv) in where.stdout  # the wheel's copy, not this tree
