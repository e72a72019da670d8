"""``terraseg bench``: benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import importlib

import click

# Benchmark name -> "module:attribute", imported only when run.
BENCHMARKS: dict[str, str] = {
    "predict": "workflows.bench.predict:bench_predict",
    "tile": "workflows.bench.tile:bench_tile",
    "train": "workflows.bench.train:bench_train",
    "vectorize": "workflows.bench.vectorize:bench_vectorize",
}


class BenchGroup(click.Group):
    """Loads benchmark commands lazily from :data:`BENCHMARKS`."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Names of the registered commands."""
        return sorted(BENCHMARKS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """Import and return the command called ``cmd_name``."""
        target = BENCHMARKS.get(cmd_name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command


@click.group(cls=BenchGroup)
def bench() -> None:
    """Measure a stage beside a baseline run on the same data in the same process."""
