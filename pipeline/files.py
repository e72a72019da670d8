"""Interrupt-safe outputs: write to a temporary name, rename when complete."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"


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
