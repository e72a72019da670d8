"""Exclusive locks on outputs: one run at a time writes a file, folder or store.

A lock is a small JSON file next to the output, created with ``O_EXCL`` so that
exactly one process wins. It names its holder (host, pid, start time and a run
id). A second run refuses at once with one line naming the holder; a lock whose
holder is a dead process on this host is taken over. Locks on shared file
systems work across hosts, but a dead holder on another host cannot be detected:
the message says which file to remove.

An output on object storage (``s3://``, ``gs://``) is locked through a local file
beside its staging folder (:func:`terraseg.pipeline.remote.staging_folder`), keyed by
its URL: runs on this machine writing one URL exclude each other; runs on
different machines are not serialized (object stores have no locks to take).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

from terraseg.pipeline.errors import LockedError
from terraseg.pipeline.files import named_os_errors
from terraseg.pipeline.remote import local_folder

LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock."""

    host: str
    pid: int
    started: float
    run_id: str

    def describe(self) -> str:
        """``pid 123 on host since 2026-12-07 10:00:00``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host} since {since}"

    def is_dead(self) -> bool:
        """True when the holder is a process of this host that no longer runs."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def lock_path(output: str | Path) -> Path:
    """The lock file of ``output``: ``.<name>.lock`` beside it (a remote one's staging folder)."""
    output = local_folder(output)
    return output.with_name(f".{output.name}{LOCK_SUFFIX}")


def new_run_id() -> str:
    """A fresh id for one run of a stage."""
    return uuid.uuid4().hex[:12]


@contextmanager
def output_lock(output: str | Path, run_id: str | None = None) -> Iterator[LockHolder]:
    """Hold the lock of ``output`` for the duration of the block.

    Raises:
        LockedError: A live process holds it (the message names the holder).
    """
    path = lock_path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = LockHolder(socket.gethostname(), os.getpid(), time.time(), run_id or new_run_id())
    _acquire(path, holder, output)
    try:
        yield holder
    finally:
        with suppress(FileNotFoundError):
            if _read(path) == holder:
                path.unlink()


def _acquire(path: Path, holder: LockHolder, output: str | Path) -> None:
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = _read(path)
            if current is None or current.is_dead():
                _take_over(path, current)
                continue
            raise LockedError(
                f"another terraseg run ({current.describe()}) is writing this output; "
                f"wait for it, or remove {path} if that process is gone",
                path=output,
            ) from None
        except OSError as exc:  # read-only folder, no permission: name the output's folder
            if exc.errno is None:
                raise
            raise OSError(exc.errno, exc.strerror, str(path.parent)) from exc
        try:
            with named_os_errors(path.parent), os.fdopen(fd, "w") as file:
                json.dump(asdict(holder), file)
        except BaseException:
            path.unlink(missing_ok=True)  # a full disk leaves no empty lock behind
            raise
        return
    raise LockedError(f"could not take the lock {path}; another run keeps taking it", path=output)


def _take_over(path: Path, stale: LockHolder | None) -> None:
    """Remove a dead holder's lock (only if it is still that holder's)."""
    if stale is not None and _read(path) != stale:
        return
    if stale is None and time.time() - _mtime(path) < 5:
        time.sleep(0.2)  # a lock being written right now reads as empty: give it a moment
        if _read(path) is not None:
            return
    with suppress(FileNotFoundError):
        path.unlink()


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _read(path: Path) -> LockHolder | None:
    try:
        data = json.loads(path.read_text())
        return LockHolder(
            str(data["host"]), int(data["pid"]), float(data["started"]), str(data["run_id"])
        )
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
