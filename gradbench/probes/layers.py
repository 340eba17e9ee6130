"""What a "layer" is for the per-layer probes: parameters grouped by owning module.

Each module that owns parameters directly (Conv, Linear, Embedding, a norm layer, a
module with its own ``nn.Parameter`` such as a position table) is one layer, in
registration order, which is depth order (input first) for gradbench's models.
``nn.RNN``/``nn.LSTM``/``nn.GRU`` hold every stacked layer in one module, so they are
split by their ``_l{k}`` parameter suffix.

Each layer has a kind. ``weight``: a matrix or kernel the signal is multiplied by
(Linear, Conv, recurrent, attention projections): the layers between which the
vanishing/exploding ratio is measured. ``norm``: BatchNorm/LayerNorm/GroupNorm/RMSNorm,
whose gain and bias gradients measure the scale of the normalised signal, not how well
a gradient crossed a weight matrix. ``embedding``: a look-up table (its gradient is
sparse: rows of the tokens in the batch). ``other``: anything else, e.g. a position
table held by the model itself; never an end of the first/last ratio.

The ends of that ratio are named explicitly (``gradient_ends``): a model may say which
modules they are (an attribute ``gradient_ends = ("stem.0", "head")`` of module
paths); otherwise they are its first and last ``weight`` layers.
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
WEIGHT_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Bilinear,
    nn.modules.conv._ConvNd,
    nn.RNNBase,
    nn.RNNCellBase,
    nn.MultiheadAttention,
)
EMBEDDING_TYPES = (nn.Embedding, nn.EmbeddingBag)


@dataclass(frozen=True)
class Layer:
    name: str
    kind: str  # "weight", "norm", "embedding" or "other"
    params: tuple[nn.Parameter, ...]

    @property
    def size(self) -> int:
        """Number of trainable scalars: what an RMS per element divides by."""
        return sum(p.numel() for p in self.params)


def layer_kind(module: nn.Module) -> str:
    if isinstance(module, NORM_TYPES):
        return "norm"
    if isinstance(module, EMBEDDING_TYPES):
        return "embedding"
    if isinstance(module, WEIGHT_TYPES):
        return "weight"
    return "other"


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
        kind = layer_kind(module)
        for suffix, params in groups.items():
            layers.append(Layer((path or "model") + suffix, kind, tuple(params)))
    return layers


def gradient_ends(model: nn.Module, layers: list[Layer]) -> tuple[int, int] | None:
    """Indices (into ``layers``) of the first and last weight layer; None if under two.

    A model's own ``gradient_ends`` (two module paths) wins; a path names the module's
    layer, or for a stacked recurrent module its first (for the start) or last (for
    the end) layer.
    """
    declared = getattr(model, "gradient_ends", None)
    if declared is not None:
        first_path, last_path = declared

        def under(path: str) -> list[int]:
            return [
                i
                for i, layer in enumerate(layers)
                if layer.name == path or layer.name.startswith(path + ".l")
            ]

        firsts, lasts = under(first_path), under(last_path)
        if firsts and lasts and firsts[0] != lasts[-1]:
            return firsts[0], lasts[-1]
    weights = [i for i, layer in enumerate(layers) if layer.kind == "weight"]
    if len(weights) < 2:
        return None
    return weights[0], weights[-1]
