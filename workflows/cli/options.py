"""Options shared by several commands, defined once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, get_args

import click
from click.decorators import FC
from pydantic import BaseModel

from terraseg.pipeline.settings import build_config, load_yaml
from terraseg.workflows.progress import bars_enabled

ModelT = TypeVar("ModelT", bound=BaseModel)

config_opt = click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="YAML file with settings; options given on the command line override it.",
)

scheduler_opt = click.option(
    "--scheduler",
    envvar="DASK_SCHEDULER_ADDRESS",
    default=None,
    metavar="ADDRESS",
    help="Dask scheduler address (default: a LocalCluster; also DASK_SCHEDULER_ADDRESS).",
)

workers_opt = click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes of the LocalCluster (default: one per core).",
)

overwrite_opt = click.option(
    "--overwrite", is_flag=True, default=False, help="Replace outputs that already exist."
)


def renamed_opt(former: str, current: str, meaning: str) -> Callable[[FC], FC]:
    """A hidden option that refuses a former spelling in one line, naming the current one.

    An option name means one thing in every command (tested over all commands):
    where a command used a name that other commands use for something else, the
    command's option got a name of its own, and the former one is refused
    rather than read in either meaning.

    Args:
        former: The former spelling, e.g. ``--classes``.
        current: The option that replaces it here, e.g. ``--num-classes``.
        meaning: What the option gives, e.g. ``the number of output classes``.
    """

    def refuse(ctx: click.Context, param: click.Parameter, value: object) -> None:
        if value is not None:
            raise click.UsageError(
                f"{former} is {current} in this command ({meaning}); "
                f"elsewhere {former} means something else",
                ctx=ctx,
            )

    name = "former_" + former.lstrip("-").replace("-", "_")  # not the current option's name
    return click.option(
        former, name, type=str, hidden=True, expose_value=False, callback=refuse, is_eager=True
    )


def resolve_config(
    model: type[ModelT], config_path: Path | None, overrides: dict[str, Any]
) -> ModelT:
    """Validate a command's settings: CLI overrides > YAML file > defaults.

    Args:
        model: The pydantic model of the command's configuration.
        config_path: The ``--config`` file, if given.
        overrides: Option values keyed by dotted config path; ``None`` means unset.

    Returns:
        The validated configuration.
    """
    file_data = load_yaml(config_path) if config_path else {}
    return build_config(model, file_data, overrides, source=config_path)


class Location(click.Path):
    """A path option that also takes a location on object storage or a web server.

    ``s3://``, ``gs://``, ``http(s)://``, ``/vsis3/``, ``/vsigs/`` and ``/vsicurl/`` values
    come back unchecked as :class:`~terraseg.pipeline.remote.RemotePath` (read or
    written where the stage says); local ones are checked as by :class:`click.Path`.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The remote location, or the checked local path."""
        from terraseg.pipeline.remote import as_input, is_remote

        if isinstance(value, str) and is_remote(value):
            return as_input(value)
        return super().convert(value, param, ctx)


def note_output(ctx: click.Context, path: Path) -> Path:
    """Record the output the command writes; an error of the disk names it (see ``main``).

    Returns:
        ``path``, for use inline.
    """
    root = ctx.find_root()
    root.ensure_object(dict)
    root.obj["output"] = path
    return path


def show_progress(ctx: click.Context) -> bool:
    """Whether to draw progress bars: not with ``-q``; see :func:`.progress.bars_enabled`."""
    obj = ctx.find_root().obj or {}
    return bars_enabled(bool(obj.get("progress", True)))


def _nodata(ctx: click.Context, param: click.Parameter, value: str | None) -> float | str | None:
    if value is None:
        return None
    if value.strip().lower() == "none":
        return "none"
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a number (e.g. -9999) or none") from None


def nodata_opt(what: str) -> Callable[[FC], FC]:
    """``--nodata VALUE|none``: the nodata value of ``what``, overriding what the files declare."""
    return click.option(
        "--nodata",
        callback=_nodata,
        default=None,
        metavar="VALUE|none",
        help=f"Nodata value of {what}, overriding what the files declare (e.g. when a declared "
        "0 is also dark water); none: every pixel is valid [as declared].",
    )


tracking_uri_opt = click.option(
    "--tracking-uri",
    envvar="MLFLOW_TRACKING_URI",
    default=None,
    metavar="URI",
    help="MLflow tracking store: a server (http://host:5000) or a database "
    "(default: MLFLOW_TRACKING_URI, else ./mlflow.db).",
)


def choices_of(model: type[BaseModel], name: str) -> click.Choice[str]:
    """A Click choice of the values a config field's ``Literal`` type allows.

    The pydantic model is the one source of a setting's choices: the CLI, the
    validation and the generated configuration reference all read them from it.
    """
    values = get_args(model.model_fields[name].annotation)
    if not values or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{model.__name__}.{name} is not a Literal of strings")
    return click.Choice(list(values))


def _band_names(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [name.strip() for name in value.split(",") if name.strip()]
    if not names:
        raise click.BadParameter("give band names separated by commas, e.g. B02,B03,B04,B08")
    return names


def band_files_opts(command: Any) -> Any:
    """``--band-files``, ``--recursive`` and ``--band-resampling``: scenes given as band files."""
    from terraseg.pipeline.bandfiles import RESAMPLINGS

    options = [
        click.option(
            "--band-files",
            "band_files",
            callback=_band_names,
            default=None,
            metavar="B02,B03,B04,B08",
            help="Inputs are scene folders with one file per band (<name>_<band>.<ext>); "
            "stack these bands, in this order, on the finest band's grid.",
        ),
        click.option(
            "--recursive",
            is_flag=True,
            help="With --band-files, look for scenes in all subfolders.",
        ),
        click.option(
            "--band-resampling",
            type=click.Choice(RESAMPLINGS),
            default="bilinear",
            show_default=True,
            help="How coarser band files are resampled to the finest.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command
