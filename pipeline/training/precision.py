"""Which autocast dtype a run trains in, and whether a GradScaler scales its loss.

bf16 keeps fp32's exponent range and needs no loss scaling, but only GPUs of
compute capability 8.0 (Ampere) or newer compute it natively; older GPUs report
bf16 as supported through emulation, which is slow. There a bf16 request trains
in fp16 with a GradScaler instead. CPU runs train in fp32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import torch

from terraseg.pipeline.training.config import Precision

logger = logging.getLogger(__name__)

BF16_CAPABILITY = (8, 0)  # Ampere: native bf16 tensor cores


class CudaQuery(Protocol):
    """What :func:`choose_autocast` asks about the GPU: ``torch.cuda`` or a stand-in."""

    def is_bf16_supported(self) -> bool:
        """Whether bf16 runs on the current GPU (perhaps emulated)."""

    def get_device_capability(self, device: torch.device) -> tuple[int, int]:
        """The GPU's compute capability, ``(major, minor)``."""


@dataclass(frozen=True)
class Autocast:
    """The precision a run trains in."""

    dtype: torch.dtype | None  # autocast dtype; None: fp32, no autocast
    scaler: bool  # a GradScaler scales the loss (fp16)


def choose_autocast(
    precision: Precision, device: torch.device, cuda: CudaQuery | None = None
) -> Autocast:
    """The autocast dtype and loss scaling for ``precision`` on ``device``.

    Args:
        precision: What the config asks for.
        device: Where the run trains.
        cuda: What answers questions about the GPU; ``torch.cuda`` when ``None``.

    Returns:
        fp32 on the CPU or when asked; bf16 without a scaler where the GPU has
        native bf16 (compute capability 8.0 or newer); otherwise fp16 with a scaler.
    """
    if device.type != "cuda" or precision == "fp32":
        return Autocast(None, scaler=False)
    if precision == "bf16":
        query: CudaQuery = torch.cuda if cuda is None else cuda
        capability = tuple(query.get_device_capability(device))
        if query.is_bf16_supported() and capability >= BF16_CAPABILITY:
            return Autocast(torch.bfloat16, scaler=False)
        logger.warning(
            "bf16 asked for, but %s (compute capability %d.%d) has no native bf16; "
            "training in fp16 with loss scaling",
            device,
            *capability,
        )
    return Autocast(torch.float16, scaler=True)
