"""Exception hierarchy: every library error derives from :class:`TerrasegError`."""

from __future__ import annotations

from os import PathLike


class TerrasegError(Exception):
    """Root of all terraseg errors.

    The message is one line meant for a person: it names the file (when there is
    one), what is wrong, and how to fix it.

    Args:
        message: What is wrong, and the fix when there is an obvious one.
        path: The file or directory the error is about, if any.
    """

    def __init__(self, message: str, *, path: str | PathLike[str] | None = None) -> None:
        self.message = message
        self.path = None if path is None else str(path)
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(TerrasegError, ValueError):
    """A configuration file or option value is invalid."""


class InputError(TerrasegError, ValueError):
    """An input file exists but cannot be used as given (format, bands, dtype)."""


class RasterReadError(TerrasegError, OSError):
    """A raster cannot be opened or read."""


class CRSError(TerrasegError, ValueError):
    """A coordinate reference system is missing or incompatible."""


class OutputExistsError(TerrasegError, FileExistsError):
    """An output exists and overwriting it was not asked for."""


class DiskSpaceError(TerrasegError, OSError):
    """An output's folder has too little free space for the output's staging files."""


class WeightsError(TerrasegError, ValueError):
    """A weights file cannot be loaded into the model it was given for."""


class ModelInputError(TerrasegError, ValueError):
    """A tensor given to a model has the wrong number of bands or dimensions."""


class TrackingError(TerrasegError, ConnectionError):
    """An MLflow tracking store or server cannot be reached or used."""


class ModelNotFoundError(TerrasegError, LookupError):
    """A model URI names a model, version, alias or run that does not exist."""


class TrainingError(TerrasegError, RuntimeError):
    """Training cannot start or cannot go on (no labels, empty split, NaN loss, bad resume)."""


class LockedError(TerrasegError, RuntimeError):
    """Another live run holds the lock on an output."""


class IncompleteOutputError(TerrasegError, RuntimeError):
    """An output's planned parts were not all written by this run; it is not committed."""
