"""terraseg library: pure functions for tiling, models, blending and vectorization."""

__version__ = "0.1.0"
