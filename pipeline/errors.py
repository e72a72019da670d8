"""Exception hierarchy: every library error derives from :class:`TerrasegError`."""

from __future__ import annotations

import errno
from os import PathLike

# Errors of the operating system that inputs, outputs and the machine cause (not
# terraseg): what each means to the user, and the fix.
OS_ERROR_REASONS: dict[int, str] = {
    errno.ENOSPC: "no space left on the device; free space or write the output to another disk",
    errno.EDQUOT: "disk quota exceeded; free space or write the output to another disk",
    errno.EFBIG: "file too large for the file system or for this process's file-size limit "
    "(ulimit -f); raise the limit or write the output to another disk",
    errno.EROFS: "read-only file system; write the output to a folder you can write to",
    errno.EACCES: "permission denied; check the permissions, or write the output to a folder "
    "you can write to",
    errno.EPERM: "operation not permitted; check the permissions, or write the output to a "
    "folder you can write to",
    errno.EEXIST: "exists already; remove it or choose another name",
    errno.ENOTDIR: "a part of this path is a file, not a folder; choose another path",
    errno.EISDIR: "is a folder, not a file; choose a file name",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "file name too long; choose a shorter path",
}
CAPACITY_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


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


class FileSystemError(TerrasegError, OSError):
    """A file or folder cannot be written or read: no space, read-only, no permission.

    Args:
        message: What is wrong and the fix.
        path: The file or folder.
        code: The ``errno`` of the operating system's error, if any.
    """

    def __init__(
        self, message: str, *, path: str | PathLike[str] | None = None, code: int | None = None
    ) -> None:
        super().__init__(message, path=path)
        self.errno = code

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.message, self.path, self.errno))


def _rebuild(
    cls: type[FileSystemError], message: str, path: str | None, code: int | None
) -> FileSystemError:
    return cls(message, path=path, code=code)


def file_system_error(
    exc: OSError, path: str | PathLike[str] | None = None
) -> FileSystemError | None:
    """``exc`` as one line that names its file, when the error is one the user can fix.

    Args:
        exc: An error of the operating system.
        path: The output being written: named when ``exc`` names no file, and in
            place of ``exc``'s file when the disk is full (a part file's name
            says less than the output's).

    Returns:
        The error to report: ``exc``'s file (else ``path``) and what its ``errno``
        means, with the fix; ``None`` when ``exc`` names neither a file nor an
        ``errno`` of :data:`OS_ERROR_REASONS` (an unexpected error, to be shown
        with its traceback).
    """
    if isinstance(exc, FileSystemError):
        return exc
    where = exc.filename if exc.filename is not None else path
    if exc.errno in CAPACITY_ERRORS and path is not None:
        where = path  # the disk of the output is full: the output, not its n-th part file
    reason = OS_ERROR_REASONS.get(exc.errno or 0)
    if reason is None:
        if exc.filename is None or not exc.strerror:
            return None
        reason = exc.strerror[:1].lower() + exc.strerror[1:]
    if where is not None and exc.filename2 is not None:
        where = f"{where} -> {exc.filename2}"
    return FileSystemError(reason, path=None if where is None else str(where), code=exc.errno)
