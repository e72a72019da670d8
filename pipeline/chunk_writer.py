"""Writing chunk-aligned regions of local Zarr v3 arrays straight to their chunk files.

zarr-python's write path costs several milliseconds per call on top of the
codec (an event-loop round trip, metadata, per-chunk coroutines), about as
much as compressing the data itself. For arrays whose codecs are ``bytes``
then ``zstd`` in a local store, which is what the training store uses, a chunk
file is just the Zstandard frame of the chunk's little-endian C-order bytes;
this module writes those files directly, from the array's own ``zarr.json``,
and falls back to zarr-python for any other layout.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from numcodecs import Zstd
from numpy.typing import NDArray

from terraseg.pipeline.files import write_bytes


@dataclass(frozen=True)
class ChunkLayout:
    """What is needed to encode and place the chunks of one array."""

    folder: Path
    shape: tuple[int, ...]
    chunk_shape: tuple[int, ...]
    dtype: np.dtype[Any]
    fill_value: Any
    level: int
    separator: str

    @classmethod
    def read(cls, folder: Path) -> ChunkLayout | None:
        """The layout of the array in ``folder``; None unless its codecs are bytes + zstd."""
        try:
            meta = json.loads((folder / "zarr.json").read_text())
        except (OSError, ValueError):
            return None
        codecs = meta.get("codecs", [])
        data_type, fill = meta.get("data_type"), meta.get("fill_value")
        if not isinstance(data_type, str) or isinstance(fill, list | dict):
            return None
        try:
            if np.dtype(data_type).kind not in "biuf":
                return None
        except TypeError:
            return None
        names = [c.get("name") for c in codecs]
        key_encoding = meta.get("chunk_key_encoding", {})
        if (
            meta.get("node_type") != "array"
            or names != ["bytes", "zstd"]
            or codecs[0].get("configuration", {}).get("endian", "little") != "little"
            or codecs[1].get("configuration", {}).get("checksum", False)
            or meta.get("chunk_grid", {}).get("name") != "regular"
            or key_encoding.get("name") != "default"
            or meta.get("storage_transformers")
        ):
            return None
        return cls(
            folder=folder,
            shape=tuple(meta["shape"]),
            chunk_shape=tuple(meta["chunk_grid"]["configuration"]["chunk_shape"]),
            dtype=np.dtype(meta["data_type"]).newbyteorder("<"),
            fill_value=meta["fill_value"],
            level=int(codecs[1].get("configuration", {}).get("level", 0)),
            separator=key_encoding.get("configuration", {}).get("separator", "/"),
        )

    def chunk_path(self, index: tuple[int, ...]) -> Path:
        """The file of the chunk at grid position ``index``."""
        return self.folder / self.separator.join(["c", *map(str, index)])

    def write(self, offset: tuple[int, ...], data: NDArray[Any]) -> None:
        """Encode and write every chunk of a region that starts on a chunk boundary.

        Raises:
            ValueError: The region does not start on the chunk grid, or does not end
                on it or at the array's edge.
        """
        for axis, (start, size, chunk, length) in enumerate(
            zip(offset, data.shape, self.chunk_shape, self.shape, strict=True)
        ):
            if start % chunk or ((start + size) % chunk and start + size != length):
                raise ValueError(f"region on axis {axis} is not aligned to chunks of {chunk}")
            if start + size > length:
                raise ValueError(f"region on axis {axis} ends at {start + size}, past {length}")
        codec = Zstd(level=self.level)
        counts = [
            -(-size // chunk) for size, chunk in zip(data.shape, self.chunk_shape, strict=True)
        ]
        for local in product(*(range(n) for n in counts)):
            piece = data[
                tuple(
                    slice(i * c, (i + 1) * c) for i, c in zip(local, self.chunk_shape, strict=True)
                )
            ]
            if piece.shape != self.chunk_shape:  # an edge chunk is stored at full size
                full = np.full(self.chunk_shape, self.fill_value, dtype=self.dtype)
                full[tuple(slice(0, n) for n in piece.shape)] = piece
                piece = full
            raw = np.ascontiguousarray(piece, dtype=self.dtype)
            index = tuple(
                o // c + i for o, c, i in zip(offset, self.chunk_shape, local, strict=True)
            )
            _write_file(self.chunk_path(index), codec.encode(raw), self.folder)


def write_region(store: str | Path, path: str, offset: tuple[int, ...], data: NDArray[Any]) -> None:
    """Write ``data`` into the array ``path`` of a local store at chunk-aligned ``offset``.

    Uses :class:`ChunkLayout` when the array's layout allows, zarr-python otherwise.
    """
    layout = ChunkLayout.read(Path(store) / path)
    if layout is not None:
        layout.write(offset, data)
        return
    array = zarr.open_array(str(store), path=path, mode="r+", zarr_format=3)
    array[tuple(slice(o, o + n) for o, n in zip(offset, data.shape, strict=True))] = data


def _write_file(path: Path, payload: bytes, array_folder: Path) -> None:
    """Write a chunk file through a temporary name, so readers never see half a chunk.

    Folders between the array's and the chunk's are made as needed; a missing
    array folder (a store removed meanwhile) is an error, never recreated.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        write_bytes(tmp, payload)  # a full disk names the file and leaves none
    except FileNotFoundError:
        if not array_folder.is_dir():
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(tmp, payload)
    os.replace(tmp, path)


def remove_partial_files(folder: Path) -> int:
    """Delete temporary chunk files under ``folder`` that a killed process left behind.

    Only files named as :func:`_write_file` names them (``.<chunk>.<pid>-<thread>.tmp``)
    are removed; call it when no task writes into ``folder`` any more.

    Returns:
        The number of files removed.
    """
    removed = 0
    for path in folder.rglob(".*.tmp"):
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed
