"""int8 inference on x86 CPUs: the backbone's dense convolutions in int8, calibrated once.

Static post-training quantization (torch's FX graph mode, x86 backend, whose
kernels use the CPU's VNNI instructions) of the backbone's convolutions with one
group. Depthwise convolutions have no fast int8 kernel (a quantized ResNet-50
ASPP, whose atrous convs are depthwise, ran 2x slower than bf16), so they stay
in float, like the ASPP, the decoder and the head, which run in bf16 where the
CPU has it. On a 2-core AVX-512 VNNI CPU a ResNet-50 DeepLabV3+ tile of 512 x 512
took 293 ms against 456 ms in bf16; MobileNetV2, whose backbone is half
depthwise, gains nothing.

Quantizing activations needs their ranges. :func:`calibrate` observes them over
tiles of the training store when a model is trained; the ranges are stored
with the model (:data:`terraseg.pipeline.artifact.CALIBRATION`), so prediction needs
no data and every run quantizes a model alike.

torch marks its FX quantization API as deprecated in favour of torchao's
PT2E flow, which is fast only through ``torch.compile``; where a torch release
no longer has it, :func:`quantize_backbone` says so.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from terraseg.pipeline.errors import ConfigError, InputError
from terraseg.pipeline.model.ensemble import Ensemble

# name prefix of the observers of the quantized layers' inputs and outputs
OBSERVER_KEY = "activation_post_process"
ENGINE = "x86"
QUANT_MIN, QUANT_MAX = 0, 127  # activations: x86's default unsigned 7-bit range
# raised once per process by the quantized kernels themselves, at the first int8 pass
_DEPRECATED_TENSORS = r"torch\.quantize_per_tensor, torch\.quantize_per_channel"
warnings.filterwarnings("ignore", message=_DEPRECATED_TENSORS, category=UserWarning)


class Int8Backbone(nn.Module):
    """A quantized backbone that takes and returns float tensors.

    Args:
        graph: The converted FX graph of the backbone (float in, float out).
        dtype: Dtype of the returned features (the rest of the network's).
    """

    def __init__(self, graph: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.graph = graph
        self.dtype = dtype

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map (B, bands, H, W) to the low-level and output-stride features."""
        low_level, features = self.graph(x.float())
        layout = torch.channels_last
        return (
            low_level.to(self.dtype, memory_format=layout),
            features.to(self.dtype, memory_format=layout),
        )


def int8_supported() -> bool:
    """True when this torch has the x86 quantized engine and the FX quantization API."""
    try:
        from torch.ao.quantization import quantize_fx  # noqa: F401
    except ImportError:
        return False
    return ENGINE in torch.backends.quantized.supported_engines


def calibrate(network: nn.Module, tiles: Iterable[Tensor]) -> dict[str, Tensor]:
    """The activation ranges of ``network``'s backbone over normalized ``tiles``.

    Each quantized layer's input and output are observed with a histogram, and
    the range that quantizes it with the least error is kept: one (min, max)
    pair per observer, which :func:`quantize_backbone` turns into the same
    scale and zero point without the histograms' costly search.

    Args:
        network: A DeepLabV3+ prepared for inference as prediction prepares it
            (eval mode, batch norms folded); it is not changed.
        tiles: Batches (N, bands, T, T) of normalized float32 tiles.

    Returns:
        ``{observer name: tensor([min, max])}``, for :func:`quantize_backbone`.
    """
    from torch.ao.quantization.observer import HistogramObserver

    if isinstance(network, Ensemble):  # each member's ranges, under its own prefix
        batches = list(tiles)
        return {
            f"{prefix}{name}": value
            for prefix, member in _members(network).items()
            for name, value in calibrate(member, batches).items()
        }
    backbone = copy.deepcopy(network.get_submodule("backbone")).float().eval()
    prepared = _prepare(backbone, HistogramObserver)
    with torch.no_grad():
        for batch in tiles:
            prepared(batch.float())
    ranges = {}
    with _quiet():
        for name, observer in _observers(prepared, HistogramObserver).items():
            scale, zero_point = (float(v) for v in observer.calculate_qparams())
            # the range whose affine parameters are exactly (scale, zero_point)
            ranges[name] = torch.tensor(
                [(QUANT_MIN - zero_point) * scale, (QUANT_MAX - zero_point) * scale]
            )
    return ranges


def quantize_backbone(
    network: nn.Module, calibration: dict[str, Tensor], dtype: torch.dtype
) -> nn.Module:
    """Replace ``network``'s backbone with an int8 one; the rest goes to ``dtype``, channels_last.

    Args:
        network: A DeepLabV3+ in eval mode with batch norms folded, in float32;
            changed in place and returned.
        calibration: The activation ranges :func:`calibrate` returned for this network.
        dtype: Dtype of everything that stays in float (bf16 or float32).

    Raises:
        ConfigError: This torch cannot run int8.
        InputError: The calibration does not fit the network.
    """
    if not int8_supported():
        raise ConfigError(
            f"int8 inference needs torch's {ENGINE} quantized engine and FX quantization, "
            f"which this torch {torch.__version__} lacks; use --precision bf16 or fp32"
        )
    from torch.ao.quantization.observer import MinMaxObserver
    from torch.ao.quantization.quantize_fx import convert_fx

    if isinstance(network, Ensemble):  # each member with its own ranges
        members = _members(network)
        if not all(k.startswith(tuple(members)) for k in calibration):  # before any change
            raise InputError("the model's int8 calibration does not fit its network")
        for prefix, member in members.items():
            own = {k.removeprefix(prefix): v for k, v in calibration.items()
                   if k.startswith(prefix)}  # fmt: skip
            quantize_backbone(member, own, dtype)
        return network
    torch.backends.quantized.engine = ENGINE
    prepared = _prepare(network.get_submodule("backbone").float(), MinMaxObserver)
    observers = _observers(prepared, MinMaxObserver)
    if set(calibration) != set(observers):
        raise InputError("the model's int8 calibration does not fit its network")
    for name, observer in observers.items():
        low, high = calibration[name].tolist()
        observer.min_val.fill_(low)
        observer.max_val.fill_(high)
    with _quiet():
        graph = convert_fx(prepared)
    network.backbone = nn.Identity()
    cast(Any, network).to(dtype, memory_format=torch.channels_last)
    network.backbone = Int8Backbone(graph, dtype)
    return network


def _members(ensemble: Ensemble) -> dict[str, nn.Module]:
    """An ensemble's members by the prefix of their names in its state (``members.0.``)."""
    return {f"members.{index}.": member for index, member in enumerate(ensemble.members)}


def _prepare(backbone: nn.Module, observer: type) -> Any:
    """The backbone with ``observer`` on the activations of each layer to be quantized.

    Activations are unsigned 7-bit (x86's default range, safe on CPUs without
    VNNI), weights signed 8-bit per output channel; depthwise convs stay float.
    """
    from torch.ao.quantization import QConfig, get_default_qconfig, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    example = torch.zeros(1, _in_channels(backbone), 64, 64)
    with _quiet():
        activation = observer.with_args(  # type: ignore[attr-defined]
            dtype=torch.quint8, quant_min=QUANT_MIN, quant_max=QUANT_MAX
        )
        qconfig = QConfig(activation=activation, weight=get_default_qconfig(ENGINE).weight)
        mapping = get_default_qconfig_mapping(ENGINE).set_global(qconfig)
        for name, module in backbone.named_modules():
            if isinstance(module, nn.Conv2d) and module.groups > 1:
                mapping = mapping.set_module_name(name, None)
        return prepare_fx(backbone, mapping, (example,))


def _observers(prepared: nn.Module, kind: type) -> dict[str, Any]:
    """The activation observers of kind ``kind`` in a prepared graph, by name."""
    return {
        name: module
        for name, module in prepared.named_modules()
        if OBSERVER_KEY in name and type(module) is kind
    }


def _in_channels(backbone: nn.Module) -> int:
    """Input bands of a backbone (its first convolution's input channels)."""
    first = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    return int(first.in_channels)


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence torch's deprecation notices of the FX quantization API (see the module doc)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\.")
        warnings.filterwarnings("ignore", message=_DEPRECATED_TENSORS, category=UserWarning)
        yield
