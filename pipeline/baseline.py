"""A per-pixel baseline: a gradient-boosted classifier of the raw band values of single pixels.

It knows nothing of a pixel's neighbours, so it is what a segmentation model must
beat to be worth its cost: trained on pixels of the same training tiles, it shows
how much of a score the spectra alone give. scikit-learn's
``HistGradientBoostingClassifier`` (or a ``RandomForestClassifier``) is fitted on a
fixed-seed sample of the labelled, valid pixels of a store's training tiles.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from terraseg.pipeline.classes import IGNORE_LABEL, ClassTable
from terraseg.pipeline.errors import InputError, TrainingError
from terraseg.pipeline.evaluation import (
    PREDICTION_SUFFIX,
    BlockJob,
    BlockResult,
    compare,
    read_block,
)
from terraseg.pipeline.rasters import open_raster, shared_reader
from terraseg.pipeline.store import array, open_existing, scene_group

BaselineKind = Literal["hgb", "rf"]
BASELINE_NAMES: dict[str, str] = {
    "hgb": "HistGradientBoostingClassifier (max_iter 200)",
    "rf": "RandomForestClassifier (100 trees)",
}


@dataclass
class PixelBaseline:
    """A fitted per-pixel classifier and what it was fitted on."""

    classifier: Any
    kind: BaselineKind
    classes: ClassTable
    band_names: list[str]
    pixels: int
    fit_seconds: float

    def describe(self) -> str:
        """One line: the classifier, its training pixels and fitting time."""
        return (
            f"{BASELINE_NAMES[self.kind]} on {self.pixels} pixels of the raw bands, "
            f"fitted in {self.fit_seconds:.1f} s"
        )

    def predict_indices(self, image: NDArray[Any], valid: NDArray[np.bool_]) -> NDArray[np.uint8]:
        """Class indices (rows, cols) of an image (bands, rows, cols); 255 where not ``valid``."""
        out = np.full(image.shape[1:], IGNORE_LABEL, np.uint8)
        if valid.any():
            features = image[:, valid].T.astype(np.float32)  # (pixels, bands)
            out[valid] = self.classifier.predict(features).astype(np.uint8)
        return out


def training_pixels(
    store: str | Path, max_pixels: int, seed: int
) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Raw band values (pixels, bands) and class indices of labelled valid training pixels.

    Every training tile of the store contributes; when there are more than
    ``max_pixels`` such pixels, a uniform sample of that many is drawn with ``seed``.

    Raises:
        TrainingError: The store's training tiles hold no labelled valid pixel.
    """
    from terraseg.pipeline.training.dataset import read_store_info

    info = read_store_info(store, 0.0)
    root = open_existing(store)
    features, labels = [], []
    for tile in info.train:
        group = scene_group(root, tile.scene)
        window = (slice(tile.row, tile.row + tile.height), slice(tile.col, tile.col + tile.width))
        label = np.asarray(array(group, "label")[window])
        keep = (label < info.num_classes) & np.asarray(array(group, "valid")[window])
        image = np.asarray(array(group, "image")[(slice(None), *window)])
        features.append(image[:, keep].T.astype(np.float32))
        labels.append(label[keep])
    x, y = np.concatenate(features), np.concatenate(labels)
    if not len(y):
        raise TrainingError("the training tiles hold no labelled valid pixel", path=store)
    if len(y) > max_pixels:
        chosen = np.sort(np.random.default_rng(seed).choice(len(y), max_pixels, replace=False))
        x, y = x[chosen], y[chosen]
    return x, y


def fit_baseline(
    store: str | Path,
    *,
    kind: BaselineKind = "hgb",
    max_pixels: int = 200_000,
    seed: int = 0,
) -> PixelBaseline:
    """Fit the per-pixel baseline on the training tiles of a store.

    Args:
        store: A store from ``terraseg tile``.
        kind: ``hgb`` (histogram gradient boosting) or ``rf`` (random forest).
        max_pixels: At most this many training pixels, sampled uniformly.
        seed: Seed of the sample and the classifier.

    Returns:
        The fitted baseline.

    Raises:
        TrainingError: The store has no labelled training pixel.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    from terraseg.pipeline.training.dataset import read_store_info

    info = read_store_info(store, 0.0)
    start = time.perf_counter()
    x, y = training_pixels(store, max_pixels, seed)
    classifier: Any
    match kind:
        case "hgb":
            classifier = HistGradientBoostingClassifier(max_iter=200, random_state=seed)
        case "rf":
            classifier = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=seed)
        case _:
            raise ValueError(f"unknown baseline {kind!r}; choose one of {list(BASELINE_NAMES)}")
    classifier.fit(x, y)
    seconds = time.perf_counter() - start
    return PixelBaseline(classifier, kind, info.classes, info.band_names, len(y), seconds)


def valid_pixels(image: NDArray[Any], nodata: float | None) -> NDArray[np.bool_]:
    """Pixels that are not nodata: finite, and not ``nodata`` in every band (as predict)."""
    valid = np.ones(image.shape[1:], bool)
    if np.issubdtype(image.dtype, np.floating):
        valid &= np.isfinite(image).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~(image == np.asarray(nodata).astype(image.dtype)).all(axis=0)
    return valid


@dataclass(frozen=True)
class BaselineJob:
    """One evaluation block, the image its prediction was made from, and the baseline."""

    block: BlockJob
    image: Path
    baseline: PixelBaseline


def plan_baseline(
    jobs: list[BlockJob], images: list[Path], baseline: PixelBaseline
) -> list[BaselineJob]:
    """Pair every block with its image: ``<name>_classes.tif`` was predicted from ``<name>.*``.

    Raises:
        InputError: A prediction has no image, or its image has another grid or band
            count than the prediction and the baseline.
    """
    by_stem = {image.stem: image for image in images}
    checked: dict[Path, Path] = {}
    out = []
    for job in jobs:
        image = checked.get(job.prediction)
        if image is None:
            image = by_stem.get(job.prediction.stem.removesuffix(PREDICTION_SUFFIX))
            if image is None:
                raise InputError(
                    "no image among --images has this prediction's name without "
                    f"{PREDICTION_SUFFIX}; the baseline needs the raster it was predicted from",
                    path=job.prediction,
                )
            _check_image(image, job.prediction, baseline)
            checked[job.prediction] = image
        out.append(BaselineJob(job, image, baseline))
    return out


def _check_image(image: Path, prediction: Path, baseline: PixelBaseline) -> None:
    with open_raster(image) as src, open_raster(prediction) as pred:
        if src.shape != pred.shape or src.transform != pred.transform:
            raise InputError(
                f"the image's grid differs from its prediction {prediction.name}'s", path=image
            )
        if src.count != len(baseline.band_names):
            raise InputError(
                f"the image has {src.count} bands; the baseline's store has "
                f"{len(baseline.band_names)} ({', '.join(baseline.band_names)})",
                path=image,
            )


def evaluate_baseline_block(job: BaselineJob) -> tuple[BlockResult, BlockResult]:
    """The block's scores for the model's prediction and the baseline's, on the same pixels.

    A pixel counts for both or for neither: where the prediction is nodata the
    baseline's pixel is left out, and the reverse.
    """
    pred, truth, interior = read_block(job.block)
    outer = job.block.outer or job.block.window
    src = shared_reader(job.image)
    image = src.read(window=outer.to_rasterio())
    valid = valid_pixels(image, src.nodata)
    classes = job.block.classes
    indices = job.baseline.predict_indices(image, valid)
    base = classes.id_lut()[indices]
    missing = (pred == IGNORE_LABEL) | (base == IGNORE_LABEL)
    pred, base = np.where(missing, IGNORE_LABEL, pred), np.where(missing, IGNORE_LABEL, base)
    name = str(job.block.prediction)
    return (name, *compare(pred, truth, classes, interior)), (
        name,
        *compare(base, truth, classes, interior),
    )
