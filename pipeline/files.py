"""Interrupt-safe outputs: write to a temporary name, rename when complete."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
