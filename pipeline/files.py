"""Interrupt-safe outputs: write to a temporary name, rename when complete."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"
SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def partial_path(path: str | Path) -> Path:
    """The temporary name under which ``path`` is written."""
    path = Path(path)  # the extension stays last: GDAL drivers look at it
    return path.with_name(f".{path.stem}{PARTIAL_SUFFIX}{path.suffix}")


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path; rename it to ``path`` only if the block succeeds.

    On error (or interruption) the temporary file or directory is removed and
    nothing appears under the final name. An existing file at ``path`` is
    replaced atomically on success.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = partial_path(final)
    remove_path(temporary)
    try:
        yield temporary
    except BaseException:
        remove_path(temporary)
        raise
    if final.is_dir() and not final.is_symlink():
        shutil.rmtree(final)
    os.replace(temporary, final)


def remove_path(path: str | Path) -> None:
    """Delete a file or directory tree if it exists."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():  # a task still writing added a file meanwhile: once more
            shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def named_os_errors(path: str | Path) -> Iterator[None]:
    """Give an operating-system error raised in the block without a file name ``path``.

    A write that fills the disk raises ``OSError(ENOSPC)`` naming no file; the
    error that leaves the block names the file being written.
    """
    try:
        yield
    except OSError as exc:
        if exc.filename is not None or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc


def write_bytes(path: str | Path, payload: bytes | memoryview) -> None:
    """Write ``payload`` to ``path``; a failed write removes the file and names it.

    Raises:
        OSError: The write failed (no space, file-size limit); ``filename`` is ``path``.
    """
    path = Path(path)
    try:
        with named_os_errors(path):
            path.write_bytes(payload)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def write_torch(path: str | Path, data: Any) -> None:
    """``torch.save`` ``data`` to ``path`` through memory, so that a write error is an OSError.

    ``torch.save`` into a file reports a full disk as a ``RuntimeError`` of its
    own; here the bytes are written by :func:`write_bytes`, which names the file.
    """
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(data, buffer)
    write_bytes(path, buffer.getbuffer())


def check_writable(folder: str | Path) -> None:
    """Make ``folder`` (and its parents) and check that a file can be created in it.

    An output that cannot be written is refused before the work that produces it.

    Raises:
        OSError: The folder cannot be made or written to (read-only, no permission);
            ``filename`` is the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        descriptor, probe = tempfile.mkstemp(prefix=".terraseg-probe-", dir=folder)
    except OSError as exc:
        if exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror, str(folder)) from exc
    os.close(descriptor)
    os.unlink(probe)


def human_size(size: float) -> str:
    """``size`` bytes for a person: ``512 B``, ``1.50 KiB``, ``37.3 GiB``, ``118 MiB``.

    Three significant digits at most, in the largest binary unit under the value.
    """
    if abs(size) < 1024:
        return f"{size:.0f} B"
    value, unit = float(size), "B"
    for unit in SIZE_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == SIZE_UNITS[-1]:
            break
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {unit}"


def write_text(path: str | Path, text: str) -> None:
    """Write a text file through a temporary name: a full disk leaves no half file."""
    with atomic_output(path) as temporary:
        temporary.write_text(text)


def finite(data: Any) -> Any:
    """``data`` with NaN and infinities as ``None`` (strict JSON has no NaN)."""
    if isinstance(data, float) and not math.isfinite(data):
        return None
    if isinstance(data, dict):
        return {key: finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [finite(value) for value in data]
    return data


def json_text(data: Any, *, indent: int | None = None) -> str:
    """Strict JSON of ``data``: non-finite numbers become ``null``."""
    return json.dumps(finite(data), indent=indent, allow_nan=False)


def write_json(path: str | Path, data: Any, *, indent: int | None = 2) -> None:
    """Write strict JSON through a temporary name (see :func:`json_text`)."""
    write_text(path, json_text(data, indent=indent) + "\n")
