"""The ``terraseg`` command group: verbosity, logging and library-error handling."""

from __future__ import annotations

import logging
from typing import Any

import click

from pipeline import __version__
from pipeline.errors import TerrasegError
from workflows.cli.lazy import LazyGroup

logger = logging.getLogger("terraseg")

# Command name -> "module:attribute", imported only when the command runs.
COMMANDS: dict[str, str] = {
    "bench": "workflows.cli.bench:bench",
    "demo": "workflows.cli.demo:demo",
    "evaluate": "workflows.cli.evaluate:evaluate",
    "model": "workflows.cli.model:model",
    "predict": "workflows.cli.predict:predict",
    "registry": "workflows.cli.registry:registry",
    "run": "workflows.cli.run:run",
    "synth": "workflows.cli.synth:synth",
    "tile": "workflows.cli.tile:tile",
    "train": "workflows.cli.train:train",
    "vectorize": "workflows.cli.vectorize:vectorize",
}

# Former command name -> current name; runs the current command, hidden from --help.
ALIASES: dict[str, str] = {
    "models": "registry",  # `terraseg models list|show|promote` before the rename
}


class TerrasegGroup(LazyGroup):
    """The command group: commands load lazily; library errors become one line."""

    registry = COMMANDS
    aliases = ALIASES

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; print a library error as one line and exit 1."""
        try:
            return super().invoke(ctx)
        except TerrasegError as exc:
            logger.debug("library error", exc_info=True)
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=TerrasegGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="terraseg")
@click.option("-v", "--verbose", count=True, help="More log output (repeat for debug).")
@click.option("-q", "--quiet", count=True, help="Less log output and no progress bars.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: int) -> None:
    """Segment large aerial and satellite rasters with DeepLabV3+.

    Tile rasters and labels into a Zarr store, train, predict over a directory of
    GeoTIFFs, and vectorize the class maps into GeoPackage polygons.
    """
    level = logging.WARNING - 10 * verbose + 10 * quiet
    logging.basicConfig(
        level=max(logging.DEBUG, min(level, logging.CRITICAL)),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    ctx.ensure_object(dict)
    ctx.obj["progress"] = quiet == 0


if __name__ == "__main__":
    cli()
