"""terraseg: segmentation of large aerial and satellite rasters with DeepLabV3+.

The library lives in two layers: :mod:`terraseg.pipeline` (the stages as functions of
rasters, stores and models) and :mod:`terraseg.workflows` (the CLI, Dask clusters,
MLflow tracking). ``terraseg --version`` and ``import terraseg`` load neither torch nor
GDAL.
"""

from terraseg.pipeline import __version__

__all__ = ["__version__"]
