"""Stage settings from Python: a YAML file or config object, with keyword overrides.

Every stage function of :mod:`terraseg.workflows.api` takes ``config`` (a YAML file
or the stage's config object) and keyword settings named as in the YAML files
(``docs/configuration.md``); a nested section is given as a dict, e.g.
``train(..., optim={"epochs": 3})``. Keywords win over the file, the file over
the defaults: the order of ``terraseg STAGE --config FILE --option VALUE``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from terraseg.pipeline.settings import build_config, load_yaml

ModelT = TypeVar("ModelT", bound=BaseModel)
ConfigSource = str | Path | BaseModel | None


def stage_config(model: type[ModelT], config: ConfigSource, settings: Mapping[str, Any]) -> ModelT:
    """Validate a stage's settings: ``settings`` > ``config`` > defaults.

    Args:
        model: The stage's pydantic config model.
        config: A YAML file, an instance of ``model``, or None.
        settings: Overrides keyed by field name; dicts for nested sections; dotted
            keys (``"optim.epochs"``) also work. ``None`` values are left unset.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: An unknown key or an invalid value (one line naming it).
    """
    if isinstance(config, BaseModel):
        file_data: dict[str, Any] = config.model_dump(mode="json")
        source = None
    else:
        source = Path(config) if config is not None else None
        file_data = load_yaml(source) if source is not None else {}
    return build_config(model, file_data, dict(_dotted(settings)), source=source)


def _dotted(settings: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in settings.items():
        if isinstance(value, Mapping):
            yield from _dotted(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


@contextmanager
def counting_bar(enabled: bool, desc: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback that draws a tqdm bar when ``enabled``."""
    from tqdm import tqdm

    bar: tqdm[Any] | None = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        if bar is not None:
            bar.close()
