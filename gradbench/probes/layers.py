"""What a "layer" is for the per-layer probes: parameters grouped by owning module.

Each module that owns parameters directly (Conv, Linear, Embedding, a norm layer, a
module with its own ``nn.Parameter`` such as a position table) is one layer, in
registration order, which is depth order (input first) for gradbench's models.
``nn.RNN``/``nn.LSTM``/``nn.GRU`` hold every stacked layer in one module, so they are
split by their ``_l{k}`` parameter suffix. Norm layers are kept in the per-layer series
but marked ``kind="norm"``: their gain and bias gradients measure the scale of the
signal, not how well a gradient crossed a weight matrix, so the first/last ratio uses
weight layers only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
)
RECURRENT_TYPES = (nn.RNNBase,)


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "weight" or "norm"
    params: tuple[nn.Parameter, ...]


def model_layers(model: nn.Module) -> list[Layer]:
    """Trainable parameters grouped into layers, input side first; shared ones counted once."""
    layers: list[Layer] = []
    seen: set[int] = set()
    for path, module in model.named_modules():
        groups: dict[str, list[nn.Parameter]] = {}
        for pname, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            suffix = ""
            if isinstance(module, RECURRENT_TYPES):
                match = re.search(r"_l(\d+)(_reverse)?$", pname)
                suffix = f".l{match.group(1)}" if match else ""
            groups.setdefault(suffix, []).append(param)
        kind = "norm" if isinstance(module, NORM_TYPES) else "weight"
        for suffix, params in groups.items():
            layers.append(Layer((path or "model") + suffix, kind, tuple(params)))
    return layers
