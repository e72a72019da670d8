"""Load user-supplied backbone weights (torchvision/timm layouts), adapting the first conv."""

from __future__ import annotations

import logging
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from terraseg.pipeline.errors import WeightsError
from terraseg.pipeline.model.backbones import Backbone

logger = logging.getLogger(__name__)

# Containers that training scripts commonly wrap a state dict in.
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
SHOWN_KEYS = 5  # how many offending keys an error message lists


@dataclass(frozen=True)
class WeightsReport:
    """What loading a weights file did."""

    path: str
    layout: str
    matched: int
    adapted: tuple[str, ...]
    unused: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]

    def summary(self) -> str:
        """One line for the log."""
        return (
            f"{self.path}: loaded {self.matched} tensors in {self.layout} layout "
            f"(first conv adapted: {', '.join(self.adapted) or 'no'}; "
            f"{len(self.unused)} classifier tensors unused; "
            f"{len(self.missing)} missing; {len(self.unexpected)} unexpected)"
        )


def adapt_first_conv(weight: Tensor, bands: int) -> Tensor:
    """Adapt RGB first-conv weights (out, 3, k, k) to ``bands`` input channels.

    Rule (as timm's ``adapt_input_conv``): one band gets the sum of the three RGB
    filters; otherwise band ``i`` gets the filter of RGB channel ``i mod 3`` and all
    are scaled by ``3 / bands``. An image whose bands all hold the same values then
    gives the first layer the response of the RGB image with those values: exactly
    for one band or a multiple of three, approximately for other counts.

    Args:
        weight: The pretrained weight with 3 input channels.
        bands: The model's band count.

    Returns:
        The weight with ``bands`` input channels.

    """
    if bands == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(bands) % weight.shape[1]
    return weight[:, index] * (weight.shape[1] / bands)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict saved with ``torch.save`` (no code is executed).

    A dict wrapped under ``state_dict``, ``model`` or ``model_state_dict`` is
    unwrapped, and a ``module.`` prefix (DataParallel/DDP) is removed.

    Args:
        path: The ``.pt``/``.pth`` file.

    Returns:
        Parameter and buffer names mapped to tensors.

    Raises:
        WeightsError: The file is missing or holds no state dict.

    """
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError("weights file not found", path=path) from None
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError) as exc:
        raise WeightsError(
            f"not a PyTorch state-dict file ({type(exc).__name__}); save one with "
            "torch.save(model.state_dict(), path)",
            path=path,
        ) from None
    for key in WRAPPER_KEYS:
        if isinstance(data, Mapping) and isinstance(data.get(key), Mapping):
            data = data[key]
    if not isinstance(data, Mapping) or not all(isinstance(v, Tensor) for v in data.values()):
        raise WeightsError("the file holds no mapping of names to tensors", path=path)
    return {k.removeprefix("module."): v for k, v in data.items()}


def load_backbone_weights(
    backbone: Backbone, path: str | Path, *, strict: bool = True
) -> WeightsReport:
    """Load a torchvision/timm-layout state dict into ``backbone`` by name.

    The backbone's attribute names are those of the reference layout, so keys map
    one to one. Keys of the ImageNet classifier (``backbone.unused_prefixes``) are
    skipped and counted. The first conv is adapted with :func:`adapt_first_conv`
    when the file has 3 input channels and the backbone another number.

    Args:
        backbone: The backbone to load into (in place).
        path: The weights file.
        strict: Raise when keys are missing or unexpected; otherwise log them
            as a warning and load the keys that match.

    Returns:
        What was loaded, adapted, skipped, missing and unexpected.

    Raises:
        WeightsError: A shape differs (other than an adaptable first conv), or,
            with ``strict``, keys are missing or unexpected.

    """
    source = read_state_dict(path)
    own = backbone.state_dict()
    unused = tuple(k for k in source if k.startswith(backbone.unused_prefixes))
    usable = {k: v for k, v in source.items() if k not in set(unused)}
    # Old files lack BN's num_batches_tracked counters; those are not worth an error.
    missing = tuple(k for k in own if k not in usable and not k.endswith("num_batches_tracked"))
    unexpected = tuple(k for k in usable if k not in own)
    report_keys = {"missing": missing, "unexpected": unexpected}
    if missing or unexpected:
        message = _key_mismatch_message(backbone, report_keys, len(own))
        if strict:
            raise WeightsError(message, path=path)
        logger.warning("%s: %s", path, message)
    matched = {k: v for k, v in usable.items() if k in own}
    adapted = _adapt_shapes(backbone, matched, own, path)
    backbone.load_state_dict(matched, strict=False)
    return WeightsReport(
        str(path), backbone.layout, len(matched), adapted, unused, missing, unexpected
    )


def _adapt_shapes(
    backbone: Backbone, matched: dict[str, Tensor], own: Mapping[str, Tensor], path: str | Path
) -> tuple[str, ...]:
    """Adapt the first conv in ``matched`` in place; raise on any other shape mismatch."""
    adapted = []
    for key, value in matched.items():
        want = own[key].shape
        if value.shape == want:
            continue
        if key == backbone.first_conv and value.shape[1] == 3 and value.shape[2:] == want[2:]:
            matched[key] = adapt_first_conv(value, want[1]).to(own[key].dtype)
            adapted.append(key)
            continue
        hint = (
            f"the first conv of a {want[1]}-band model adapts only 3-band weights"
            if key == backbone.first_conv
            else "is the file for this backbone at full width (width_multiplier 1)?"
        )
        raise WeightsError(
            f"{key} has shape {tuple(value.shape)} in the file but {tuple(want)} in the "
            f"{backbone.layout} backbone; {hint}",
            path=path,
        )
    return tuple(adapted)


def _key_mismatch_message(
    backbone: Backbone, keys: Mapping[str, tuple[str, ...]], expected: int
) -> str:
    parts = []
    for kind, names in keys.items():
        if names:
            shown = ", ".join(names[:SHOWN_KEYS]) + (", ..." if len(names) > SHOWN_KEYS else "")
            parts.append(f"{len(names)} {kind} keys ({shown})")
    return (
        f"weights do not match the {backbone.layout} layout ({expected} tensors): "
        f"{'; '.join(parts)}; give a state dict of that model, or set "
        "strict_weights: false to load the keys that match"
    )
