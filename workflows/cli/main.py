"""The ``terraseg`` command group: verbosity, logging and library-error handling.

``-v``/``-q`` are taken before the command name and after it (``terraseg predict
... -q``): every command gets them too, and the counts add up. By default terraseg
logs warnings; the libraries it drives that log through handlers of their own
(MLflow, alembic) show their INFO only with ``-v``; Dask's follow the program's
level (see :func:`terraseg.workflows.cluster.dask_client`). Progress bars are decided by
:func:`terraseg.workflows.progress.bars_enabled`.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import click

from terraseg.pipeline import __version__
from terraseg.pipeline.errors import TerrasegError, file_system_error
from terraseg.workflows.cli.lazy import LazyGroup
from terraseg.workflows.progress import bars_enabled, configure_library_bars

logger = logging.getLogger("terraseg")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_HANDLER = "terraseg"  # the name of the one handler this program installs
# Libraries that log to stderr through handlers of their own: quiet unless -v.
LIBRARY_LOGGERS = ("mlflow", "alembic")
# rasterio's NotGeoreferencedWarning: terraseg reports a raster without a CRS where it
# matters (tiling logs such scenes, vectorize refuses them), the pixel grid is used as is.
# Also in PYTHONWARNINGS for worker processes, whose syntax allows no comma in it.
NOT_GEOREFERENCED = "Dataset has no geotransform"

# Command name -> "module:attribute", imported only when the command runs.
COMMANDS: dict[str, str] = {
    "bench": "terraseg.workflows.cli.bench:bench",
    "demo": "terraseg.workflows.cli.demo:demo",
    "evaluate": "terraseg.workflows.cli.evaluate:evaluate",
    "model": "terraseg.workflows.cli.model:model",
    "predict": "terraseg.workflows.cli.predict:predict",
    "registry": "terraseg.workflows.cli.registry:registry",
    "run": "terraseg.workflows.cli.run:run",
    "sync": "terraseg.workflows.cli.sync:sync",
    "synth": "terraseg.workflows.cli.synth:synth",
    "tile": "terraseg.workflows.cli.tile:tile",
    "train": "terraseg.workflows.cli.train:train",
    "vectorize": "terraseg.workflows.cli.vectorize:vectorize",
}

# Former command name -> current name; runs the current command, hidden from --help.
ALIASES: dict[str, str] = {
    "models": "registry",  # `terraseg models list|show|promote` before the rename
}


class TerrasegGroup(LazyGroup):
    """The command group: commands load lazily; library errors become one line."""

    registry = COMMANDS
    aliases = ALIASES

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, with ``-v``/``-q`` of its own (see :func:`add_verbosity_options`)."""
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            add_verbosity_options(command)
        return command

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; print a library or file-system error as one line and exit 1.

        An error of the operating system that names a file, or that the machine
        causes (no space, file-size limit, read-only), is reported like a library
        error, naming the file (else the output the command writes, see
        :func:`terraseg.workflows.cli.options.note_output`). Any other exception keeps its
        traceback. With ``-v`` the traceback is logged above the line.
        """
        try:
            return super().invoke(ctx)
        except TerrasegError as exc:
            report_error(exc)
            ctx.exit(1)
        except OSError as exc:
            error = file_system_error(exc, (ctx.obj or {}).get("output"))
            if error is None:
                raise
            report_error(error, exc)
            ctx.exit(1)


def report_error(error: TerrasegError, cause: BaseException | None = None) -> None:
    """Print ``error`` as one line on stderr; log the traceback of ``cause`` (or it) with -v."""
    cause = cause or error
    logger.info("%s", type(cause).__name__, exc_info=(type(cause), cause, cause.__traceback__))
    click.echo(f"Error: {error}", err=True)


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
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = {"verbose": verbose, "quiet": quiet}
    apply_verbosity(ctx)


def apply_verbosity(ctx: click.Context) -> None:
    """Set logging and progress bars from the ``-v``/``-q`` counts given so far."""
    root = ctx.find_root()
    root.ensure_object(dict)
    counts = root.obj.setdefault("verbosity", {"verbose": 0, "quiet": 0})
    configure_logging(counts["verbose"], counts["quiet"])
    root.obj["progress"] = counts["quiet"] == 0
    configure_library_bars(bars_enabled(root.obj["progress"]))


def configure_logging(verbose: int, quiet: int) -> None:
    """The program's logging: WARNING by default, 10 lower per ``-v``, 10 higher per ``-q``.

    The root logger gets one stderr handler unless the process has configured
    logging already (an application embedding the CLI keeps its own). Libraries
    that log through handlers of their own are held at WARNING unless ``-v``, in
    this process and, through the environment, in processes started later; so is
    rasterio's warning about rasters without georeferencing.
    """
    level = max(logging.DEBUG, min(logging.WARNING - 10 * (verbose - quiet), logging.CRITICAL))
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.set_name(LOG_HANDLER)
        handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    if any(h.get_name() == LOG_HANDLER for h in root.handlers):
        root.setLevel(level)
    library_level = level if verbose > quiet else max(level, logging.WARNING)
    os.environ["MLFLOW_LOGGING_LEVEL"] = logging.getLevelName(library_level)
    # MLflow prints a run's URL to stdout (the machine-readable output here), password and all
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    warnings.filterwarnings("ignore", message=NOT_GEOREFERENCED, category=UserWarning)
    entries = [e for e in os.environ.get("PYTHONWARNINGS", "").split(",") if e]
    if f"ignore:{NOT_GEOREFERENCED}" not in entries:
        os.environ["PYTHONWARNINGS"] = ",".join([*entries, f"ignore:{NOT_GEOREFERENCED}"])


def add_verbosity_options(command: click.Command) -> None:
    """Give ``command`` (and a group's subcommands) ``-v``/``-q`` that add to the group's.

    So that ``terraseg predict ... -q`` works as ``terraseg -q predict ...``.
    """
    names = {param.name for param in command.params}
    if "verbose" not in names and "quiet" not in names:
        command.params += [
            click.Option(
                ["-v", "--verbose"],
                count=True,
                expose_value=False,
                callback=_more_verbosity,
                help="More log output (repeat for debug); also before the command.",
            ),
            click.Option(
                ["-q", "--quiet"],
                count=True,
                expose_value=False,
                callback=_more_verbosity,
                help="Less log output and no progress bars; also before the command.",
            ),
        ]
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            add_verbosity_options(subcommand)


def _more_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> None:
    """Add a command's ``-v``/``-q`` count to the group's and apply the total."""
    if value and param.name is not None:
        root = ctx.find_root()
        root.ensure_object(dict)
        counts = root.obj.setdefault("verbosity", {"verbose": 0, "quiet": 0})
        counts[param.name] += value
        apply_verbosity(ctx)


if __name__ == "__main__":
    cli()
