"""terraseg: segmentation of large aerial and satellite rasters with DeepLabV3+.

The stages as functions (see ``docs/python-api.md``)::

    import terraseg

    summary = terraseg.tile(["scene.tif"], "tiles.zarr", labels="labels.gpkg")
    run = terraseg.train("tiles.zarr", "runs/first", epochs=10)
    model = terraseg.load_model("runs/first/model")
    outputs = terraseg.predict_file("new.tif", "runs/first/model", "predictions/")
    result = terraseg.predict_array(model, image)  # (bands, rows, cols) in memory
    terraseg.vectorize(outputs[:1], "polygons.gpkg", min_area=50)
    scores = terraseg.evaluate(outputs[:1], "truth.tif")

The code lives in two layers: :mod:`terraseg.pipeline` (the stages as functions of
rasters, stores and models) and :mod:`terraseg.workflows` (the CLI, Dask clusters,
MLflow tracking, and :mod:`terraseg.workflows.api`, the functions above).
``import terraseg`` loads neither torch nor GDAL: each function loads what it needs
when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from terraseg.pipeline import __version__

if TYPE_CHECKING:
    from terraseg.workflows.api.evaluate import evaluate as evaluate
    from terraseg.workflows.api.predict import load_model as load_model
    from terraseg.workflows.api.predict import predict_array as predict_array
    from terraseg.workflows.api.predict import predict_file as predict_file
    from terraseg.workflows.api.predict import predict_files as predict_files
    from terraseg.workflows.api.synth import synth as synth
    from terraseg.workflows.api.tile import tile as tile
    from terraseg.workflows.api.train import train as train
    from terraseg.workflows.api.vectorize import vectorize as vectorize

# Public name -> the module of terraseg.workflows.api that defines it.
_API = {
    "evaluate": "evaluate",
    "load_model": "predict",
    "predict_array": "predict",
    "predict_file": "predict",
    "predict_files": "predict",
    "synth": "synth",
    "tile": "tile",
    "train": "train",
    "vectorize": "vectorize",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Import an API function on first use."""
    if name not in _API:
        raise AttributeError(f"module 'terraseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"terraseg.workflows.api.{_API[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
