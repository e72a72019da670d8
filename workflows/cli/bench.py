"""``terraseg bench``: benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import click

from terraseg.workflows.cli.lazy import LazyGroup

# Benchmark name -> "module:attribute", imported only when run.
BENCHMARKS: dict[str, str] = {
    "predict": "terraseg.workflows.bench.predict:bench_predict",
    "tile": "terraseg.workflows.bench.tile:bench_tile",
    "train": "terraseg.workflows.bench.train:bench_train",
    "vectorize": "terraseg.workflows.bench.vectorize:bench_vectorize",
    "gpu": "terraseg.workflows.bench.gpu:bench_gpu",
    "quality": "terraseg.workflows.bench.quality:bench_quality",
}


class BenchGroup(LazyGroup):
    """Loads benchmark commands lazily from :data:`BENCHMARKS`."""

    registry = BENCHMARKS


@click.group(cls=BenchGroup)
def bench() -> None:
    """Measure a stage beside a baseline run on the same data in the same process."""
