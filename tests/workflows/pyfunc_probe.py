"""Load a logged terraseg pyfunc model and predict, importing only what the model may import.

Run as ``python -I pyfunc_probe.py MODEL IMAGES.npy OUT_FOLDER [--refuse]`` by the pyfunc
tests, in the test environment or in a fresh one holding only mlflow, torch and numpy.
Writes ``class_map.npy``, ``probabilities.npy`` and ``report.json`` (where terraseg was
imported from, which of the refused modules were loaded, the one-line errors of
inputs the model refuses) to OUT_FOLDER.

With ``--refuse``, two guards are set up before the model loads:

- a meta-path finder that refuses rasterio, zarr, dask, distributed, geopandas,
  shapely, pyogrio, fsspec and click, whoever imports them (click only once MLflow,
  which needs it, is imported);
- an ``__import__`` hook that refuses any import statement in a terraseg module whose
  top-level name is neither the standard library nor torch, numpy, mlflow or pydantic
  (MLflow's own dependency), so an import of an already loaded module (yaml, click:
  MLflow loads them) is caught too.
"""

from __future__ import annotations

import builtins
import importlib.abc
import json
import sys
from pathlib import Path
from typing import Any

REFUSED = {"rasterio", "zarr", "dask", "distributed", "geopandas", "shapely", "pyogrio", "fsspec"}
ALLOWED_IN_TERRASEG = {"terraseg", "torch", "numpy", "mlflow", "pydantic"}


class Refuse(importlib.abc.MetaPathFinder):
    """Refuses to find the modules named in ``names`` (and their submodules)."""

    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ImportError(f"{fullname} is refused in this process")


def guard_terraseg_imports() -> None:
    """Refuse import statements of terraseg modules outside :data:`ALLOWED_IN_TERRASEG`."""
    original = builtins.__import__

    def guarded(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
                level: int = 0) -> Any:  # fmt: skip
        importer = str((globals or {}).get("__name__", ""))
        top = name.partition(".")[0]
        allowed = ALLOWED_IN_TERRASEG | sys.stdlib_module_names
        if importer.startswith("terraseg") and level == 0 and top not in allowed:
            raise ImportError(f"{importer} imports {name}, which the model may not need")
        return original(name, globals, locals, fromlist, level)

    builtins.__import__ = guarded


def refusal(model: Any, bad: Any) -> str:
    """The message of the error that ``model.predict(bad)`` raises."""
    try:
        model.predict(bad)
    except Exception as exc:  # the probe reports whatever is raised
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"an input of shape {bad.shape} and dtype {bad.dtype} was accepted")


def main(model_uri: str, images_file: str, out: str, refuse: bool) -> None:
    finder = Refuse(set(REFUSED))
    if refuse:
        sys.meta_path.insert(0, finder)
    import mlflow.pyfunc
    import numpy as np

    if refuse:
        finder.names.add("click")
        guard_terraseg_imports()
    model = mlflow.pyfunc.load_model(model_uri)
    images = np.load(images_file)
    result = model.predict(images)
    np.save(Path(out) / "class_map.npy", result["class_map"])
    np.save(Path(out) / "probabilities.npy", result["probabilities"])
    wrong = {
        "bands": images[..., :1, :8, :8],
        "2d": np.zeros((8, 8), images.dtype),
        "float64": images[..., :8, :8].astype("float64"),
    }
    report = {
        "terraseg": sys.modules["terraseg"].__file__,
        "refused_loaded": sorted(m for m in sys.modules if m.partition(".")[0] in REFUSED),
        "errors": {name: refusal(model, bad) for name, bad in wrong.items()},
    }
    (Path(out) / "report.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:4], refuse="--refuse" in sys.argv[4:])
