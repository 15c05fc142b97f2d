"""Inference at any frame size: pad the input to the network's stride, crop the output back.

SurgicalSemiSeg keeps each dataset's own resolution (CholecSeg8k 480x854, m2caiSeg 334x596 and
other sizes, its in-house set 960x540) instead of resizing. An encoder-decoder CNN needs sides that
are multiples of its output stride (DeepLabV3+ with a dilated ResNet: 16; U-Net++: 32), so
:class:`DivisiblePadInferer` pads the batch's bottom and right edges to the next multiple, runs the
network, and crops its output back: the prediction has exactly the input's height and width, and
no pixel is interpolated. Training, validation and inference use the same inferer, so every path
that reuses a bundle's config (MONAI Label, MONAI Deploy) gets the input's size back too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer

__all__ = ["DivisiblePadInferer", "network_stride"]

#: Stride used when the network does not say (smp's encoders without dilation: 2 ** 5).
DEFAULT_STRIDE = 32


def network_stride(network: torch.nn.Module | Callable[..., Any], default: int = DEFAULT_STRIDE) -> int:
    """The multiple a network's input sides must be: its encoder's ``output_stride`` (smp), its
    ``size_multiple`` (fewlabel's U-Net 3+ / ResUNet++), else ``default``. Unwraps
    ``DistributedDataParallel`` / ``DataParallel`` (``.module``)."""
    net = getattr(network, "module", network)
    for value in (getattr(net, "size_multiple", None), getattr(getattr(net, "encoder", None), "output_stride", None)):
        if isinstance(value, int) and value > 0:
            return value
    return int(default)


class DivisiblePadInferer(Inferer):
    """Run ``network`` on inputs padded to a multiple of ``divisor`` and crop the outputs back.

    Args:
        divisor: the multiple each spatial side is padded to; ``None`` (default): the network's own
            stride (:func:`network_stride`), found on the first call.
        value: pad value of the input (0: black, as the frames' border outside the field of view).
        mode: ``torch.nn.functional.pad`` mode (``"constant"``, ``"reflect"``, ``"replicate"``).

    Input ``(B, C, *spatial)``; output ``(B, C_out, *spatial)``, the input's spatial size. Inputs whose
    sides are multiples already go to the network unchanged. Keyword arguments of the call go to the
    network.
    """

    def __init__(self, divisor: int | None = None, value: float = 0.0, mode: str = "constant") -> None:
        super().__init__()
        if divisor is not None and int(divisor) < 1:
            raise ValueError(f"divisor must be >= 1 or None (the network's stride), got {divisor}")
        self.divisor = None if divisor is None else int(divisor)
        self.value = float(value)
        self.mode = mode

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        k = self.divisor or network_stride(network)
        spatial = tuple(int(s) for s in inputs.shape[2:])
        extra = [(-s) % k for s in spatial]
        if not any(extra):
            return network(inputs, *args, **kwargs)
        pad: list[int] = []
        for e in reversed(extra):  # F.pad takes the last dimension first: (left, right, top, bottom, ...)
            pad += [0, e]
        padded = F.pad(inputs, pad, mode=self.mode, value=self.value) if self.mode == "constant" else F.pad(
            inputs, pad, mode=self.mode)
        outputs = network(padded, *args, **kwargs)
        return _crop(outputs, spatial)


def _crop(outputs: Any, spatial: tuple[int, ...]) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs[(..., *(slice(0, s) for s in spatial))]
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_crop(o, spatial) for o in outputs)
    if isinstance(outputs, dict):
        return {k: _crop(v, spatial) for k, v in outputs.items()}
    return outputs
