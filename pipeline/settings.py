"""Configuration loading: YAML files merged with overrides and validated by pydantic.

Precedence is CLI option > YAML file > model default. Errors name the file, the
dotted path of the offending key, and the allowed keys or values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from terraseg.pipeline.errors import ConfigError

ModelT = TypeVar("ModelT", bound=BaseModel)
# A nodata setting that overrides what a raster declares: a value, "none" (every
# pixel is valid), or None (as the raster declares: nodata value, mask or alpha).
# Defined here, not beside the raster I/O, so that settings import without GDAL.
NodataOverride = float | Literal["none"] | None


class StrictModel(BaseModel):
    """Base for configuration models: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping from ``path``.

    Args:
        path: The YAML file.

    Returns:
        The parsed mapping (empty for an empty file).

    Raises:
        ConfigError: The file is missing, is not valid YAML, or is not a mapping.
    """
    import yaml  # here: the model's import chain (see terraseg.pipeline.pyfunc) stays small

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError("configuration file not found", path=path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"not valid YAML{where}", path=path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of keys to values at the top level", path=path)
    return data


def set_dotted(data: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted_key == "a.b"``, creating mappings."""
    *parents, leaf = dotted_key.split(".")
    node = data
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def build_config(
    model: type[ModelT],
    file_data: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    source: str | Path | None = None,
) -> ModelT:
    """Validate ``file_data`` with dotted-key ``overrides`` applied on top.

    Args:
        model: The pydantic model of the configuration.
        file_data: Values read from a YAML file (or ``None``).
        overrides: Values from the command line keyed by dotted path; ``None``
            values are skipped, so options left unset fall through to the file.
        source: Name of the file the values came from, for error messages.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: A key is unknown or a value is invalid; the message gives the
            dotted path and the allowed keys or values.
    """
    merged: dict[str, Any] = _deep_copy(file_data or {})
    for key, value in (overrides or {}).items():
        if value is not None:
            set_dotted(merged, key, value)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(model, exc), path=source) from None


def describe_validation_error(model: type[BaseModel], exc: ValidationError) -> str:
    """Turn the first pydantic error into one line with its dotted path."""
    messages = []
    for error in exc.errors():
        location = [str(part) for part in error["loc"]]
        dotted = ".".join(location) or "(top level)"
        if error["type"] == "extra_forbidden":
            allowed = ", ".join(sorted(_fields_at(model, location[:-1])))
            messages.append(f"{dotted}: unknown key (allowed keys: {allowed})")
        else:
            got = error.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            text = error["msg"].removeprefix("Value error, ")
            messages.append(f"{dotted}: {text}{shown}")
    return "; ".join(messages)


def _fields_at(model: type[BaseModel], location: list[str]) -> list[str]:
    """Field names of the (nested) model found by following ``location``."""
    current = model
    for part in location:
        field = current.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return list(current.model_fields)


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}
