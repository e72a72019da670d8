"""Torch datasets over the Zarr training store: random crops for training, tiles for validation.

Reads are windows of the chunked arrays, so each crop decodes only the chunks it
touches (one to four). Images are normalized with the store's per-band statistics;
labels keep 255 for nodata and unlabelled pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from numpy.typing import NDArray
from torch import Tensor
from torch.utils.data import Dataset

from terraseg.pipeline.artifact import Normalization, NormalizationMethod
from terraseg.pipeline.classes import IGNORE_LABEL, ClassTable
from terraseg.pipeline.errors import TrainingError
from terraseg.pipeline.store import (
    array,
    attributes,
    open_existing,
    scene_group,
    stored_class_index,
    tile_index,
    zarr_location,
)
from terraseg.pipeline.training.augment import augment, crop_side
from terraseg.pipeline.training.config import AugmentConfig
from terraseg.pipeline.training.seeding import seed_worker_sample


@dataclass(frozen=True)
class TileRef:
    """A tile of the store: scene, window and labelled-pixel counts per class."""

    scene: str
    row: int
    col: int
    height: int
    width: int
    counts: tuple[int, ...]


@dataclass
class StoreInfo:
    """What training needs to know about a store, read once from its attributes."""

    path: str
    classes: ClassTable
    band_names: list[str]
    statistics: list[dict[str, Any]]
    tile_size: int
    input_dtype: str
    train: list[TileRef]
    val: list[TileRef]
    normalization_method: NormalizationMethod = "mean_std"

    @property
    def num_classes(self) -> int:
        """Number of classes; label values are model output indices ``0..num_classes-1``."""
        return len(self.classes.classes)

    @property
    def normalization(self) -> Normalization:
        """Per-band centre and scale of the store's valid pixels (see ``normalization_method``)."""
        return Normalization.from_statistics(self.statistics, self.normalization_method)

    def counts(self, split: str = "train") -> NDArray[np.int64]:
        """Class counts (tiles, classes) of the tiles of ``split``."""
        tiles = self.train if split == "train" else self.val
        return np.asarray([t.counts for t in tiles], dtype=np.int64).reshape(-1, self.num_classes)


def read_store_info(path: str | Path, min_valid_fraction: float = 0.0) -> StoreInfo:
    """Read classes, bands, statistics and the train/val tiles of a store.

    Training tiles need at least ``min_valid_fraction`` labelled pixels;
    validation tiles need at least one.

    Raises:
        InputError: Not a finished terraseg store.
        TrainingError: The store has no labels, or no training or validation tiles.
    """
    root = open_existing(path)
    attrs = attributes(root)
    classes = store_classes(attrs, path)
    frame = tile_index(root)
    names = sorted(set(frame["scene"]))
    if not names or any("label" not in scene_group(root, n) for n in names):
        raise TrainingError("store has no label arrays; tile it with --labels", path=path)
    tiles = {"train": [], "val": []}  # type: dict[str, list[TileRef]]
    for rec in frame.itertuples(index=False):
        counts = tuple(int(c) for c in rec.class_counts)[: len(classes.classes)]
        labelled = sum(counts) / max(1, rec.height * rec.width)
        wanted = labelled >= min_valid_fraction if rec.split == "train" else labelled > 0
        if sum(counts) > 0 and wanted and rec.split in tiles:  # buffer tiles: in neither
            tiles[rec.split].append(
                TileRef(rec.scene, rec.row, rec.col, rec.height, rec.width, counts)
            )
    check_tiles(path, frame, tiles)
    scene = scene_group(root, names[0])
    return StoreInfo(
        path=str(path),
        classes=classes,
        band_names=list(attrs.get("band_names") or attributes(scene)["band_names"]),
        statistics=list(attrs["statistics"]),
        tile_size=int(attrs["tile_size"]),
        input_dtype=str(array(scene, "image").dtype),
        train=tiles["train"],
        val=tiles["val"],
    )


def store_classes(attrs: dict[str, Any], path: str | Path) -> ClassTable:
    """The store's class table, once its labels are known to hold model output indices.

    Raises:
        TrainingError: The store has no classes, or its labels hold class ids that
            are not output indices (a store with gaps in its ids tiled before ids were
            mapped to outputs).
    """
    if "classes" not in attrs:
        raise TrainingError("store has no classes; tile it with labels", path=path)
    classes = ClassTable.from_mapping(attrs)
    if stored_class_index(attrs) != classes.class_index():
        raise TrainingError(
            "the store's labels are class ids, not model outputs 0.."
            f"{classes.num_classes - 1} (tiled by an earlier terraseg); tile it again",
            path=path,
        )
    return classes


def check_tiles(path: str | Path, frame: Any, tiles: dict[str, list[TileRef]]) -> None:
    """Raise a clear error when the store cannot be trained on."""
    if not any(sum(c) for c in frame["class_counts"]):
        raise TrainingError(
            "store has no labelled pixels (every label is 255); check the labels and "
            "--labels-cover when tiling",
            path=path,
        )
    if not tiles["train"]:
        raise TrainingError(
            "training split is empty (no train tile with enough labelled pixels); lower "
            "data.min_valid_fraction or re-tile with a smaller --val-fraction",
            path=path,
        )
    if not tiles["val"]:
        raise TrainingError(
            "validation split is empty; re-tile with --val-fraction > 0 and a smaller "
            "--split-block",
            path=path,
        )


class StoreReader:
    """Opens the store's arrays on first use in each process (DataLoader workers included)."""

    def __init__(self, path: str, normalization: Normalization) -> None:
        self.path, self.normalization = path, normalization
        self._groups: dict[str, zarr.Group] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_groups": {}}

    def read(self, scene: str, row: int, col: int, rows: int, cols: int) -> tuple[Tensor, Tensor]:
        """Normalized image (bands, rows, cols) float32 and label (rows, cols) int64.

        Nodata pixels read as 0 (the band's centre), as ``terraseg predict`` feeds them.
        """
        group = self._groups.get(scene)
        if group is None:
            group = zarr.open_group(
                zarr_location(self.path), path=f"scenes/{scene}", mode="r", zarr_format=3
            )
            self._groups[scene] = group
        window = (slice(row, row + rows), slice(col, col + cols))
        image = np.asarray(array(group, "image")[(slice(None), *window)])
        label = np.asarray(array(group, "label")[window])
        normalized = self.normalization.apply(image)
        if "valid" in group:
            normalized[:, ~np.asarray(array(group, "valid")[window])] = 0.0
        return (
            torch.from_numpy(normalized),
            torch.from_numpy(label.astype(np.int64)),
        )


class TrainCrops(Dataset[tuple[Tensor, Tensor]]):
    """Random augmented crops of training tiles, keyed by ``(tile index, sample seed)``."""

    def __init__(
        self, info: StoreInfo, crop: int, config: AugmentConfig, tiles: list[TileRef] | None = None
    ) -> None:
        self.reader = StoreReader(info.path, info.normalization)
        self.tiles = info.train if tiles is None else tiles
        self.crop, self.config = crop, config

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, Tensor]:
        index, seed = key
        seed_worker_sample(seed)  # whatever a worker draws follows the sample, not the worker
        tile = self.tiles[index]
        rng = np.random.default_rng(seed)
        side = crop_side(rng, self.crop, self.config)
        rows, cols = min(side, tile.height), min(side, tile.width)
        row = tile.row + int(rng.integers(0, tile.height - rows + 1))
        col = tile.col + int(rng.integers(0, tile.width - cols + 1))
        image, label = self.reader.read(tile.scene, row, col, rows, cols)
        return augment(image, label, rng, self.crop, self.config)


class ValTiles(Dataset[tuple[Tensor, Tensor]]):
    """Validation tiles on the store's tile grid, padded to the tile size with ignore labels."""

    def __init__(self, info: StoreInfo) -> None:
        self.reader = StoreReader(info.path, info.normalization)
        self.tiles, self.size = info.val, info.tile_size

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        tile = self.tiles[index]
        image, label = self.reader.read(tile.scene, tile.row, tile.col, tile.height, tile.width)
        pad = (0, self.size - tile.width, 0, self.size - tile.height)
        if any(pad):
            image = torch.nn.functional.pad(image, pad)
            label = torch.nn.functional.pad(label, pad, value=IGNORE_LABEL)
        return image, label
