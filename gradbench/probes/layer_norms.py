"""Per-layer gradient norms, their size-free forms, and the first/last-layer ratio.

One fused pass (``torch._foreach_norm``) gives every parameter's gradient norm; a
layer's norm is the root of the sum of its parameters' squared norms, i.e. the L2 norm
of all its gradients concatenated.

Raw norms grow with a layer's size (a 64x64 convolution has 4,096 times the entries of
a 1x1), so layers are compared by the **RMS gradient per element**, ``||g|| /
sqrt(n)``: the typical size of one weight's gradient, the same for a layer of any
size whose entries are alike. (``||g|| / ||w||``, the relative gradient, is stored
too.) The ratio of the first weight layer's RMS gradient to the last one's is the
classic vanishing-gradient signature (Bengio et al. 1994; Glorot & Bengio 2010): far
below 1, the layers near the input barely learn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gradbench.probes.layers import Layer

# Norms are floored here before taking logs, so that an exactly-zero gradient (underflow
# or a layer cut off from the loss) gives a large finite log ratio instead of -inf.
NORM_FLOOR = 1e-30


class LayerIndex:
    """Flat parameter list of a set of layers and which layer each parameter belongs to."""

    def __init__(self, layers: list[Layer]):
        self.layers = layers
        self.params = [p for layer in layers for p in layer.params]
        self.owner = torch.tensor(
            [i for i, layer in enumerate(layers) for _ in layer.params], dtype=torch.long
        )
        self.sizes = np.array([max(1, layer.size) for layer in layers], dtype=np.float64)

    def reduce(self, per_param: list[Tensor]) -> Tensor:
        """Per-layer L2 norm from per-parameter L2 norms (a float64 vector on the CPU)."""
        if not per_param:
            return torch.zeros(len(self.layers), dtype=torch.float64)
        squares = torch.stack(per_param).cpu().double() ** 2  # MPS has no float64
        totals = torch.zeros(len(self.layers), dtype=torch.float64)
        totals.index_add_(0, self.owner, squares)
        return totals.sqrt()

    def rms(self, norms: np.ndarray) -> np.ndarray:
        """Per-element RMS from per-layer L2 norms: ``||g|| / sqrt(n)``."""
        return np.asarray(norms, dtype=np.float64) / np.sqrt(self.sizes)


def layer_grad_norms(index: LayerIndex) -> np.ndarray:
    """L2 norm of each layer's gradient (0 for a layer whose parameters got none)."""
    grads = [p.grad if p.grad is not None else p.new_zeros(()) for p in index.params]
    with torch.no_grad():
        per_param = list(torch._foreach_norm(grads)) if grads else []
    return index.reduce(per_param).numpy()


def first_last_ratio_log10(values: np.ndarray, ends: tuple[int, int] | None) -> float:
    """log10(values[first] / values[last]), floored; nan if undefined.

    ``values`` are per-layer gradient sizes (RMS per element in the probes), ``ends``
    the first and last layer's indices (``layers.gradient_ends``).
    """
    if ends is None:
        return math.nan
    first, last = float(values[ends[0]]), float(values[ends[1]])
    if not (math.isfinite(first) and math.isfinite(last)):
        return math.nan
    return math.log10(max(first, NORM_FLOOR)) - math.log10(max(last, NORM_FLOOR))


def mean_first_last_ratio_log10(table: np.ndarray, ends: tuple[int, int] | None) -> float:
    """log10 of (mean first-layer value / mean last-layer value) over probe steps.

    ``table`` is steps x layers; steps with a non-finite value are left out. A ratio of
    means rather than a mean of ratios: a burst of large gradients (an explosion) weighs
    as much as it moved the weights, and a few steps of zero gradient do not send the
    summary to the floor.
    """
    table = np.asarray(table, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        return math.nan
    rows = np.all(np.isfinite(table), axis=1)
    if not rows.any():
        return math.nan
    return first_last_ratio_log10(table[rows].mean(axis=0), ends)
