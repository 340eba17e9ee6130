"""Update-to-weight ratio per layer: ||w_after - w_before|| / ||w_before||.

How far one optimiser step moves each layer relative to its size. Around 1e-3 is the
usual rule of thumb for a healthy step; orders of magnitude below it in the first
layers while the last ones move means those layers are not learning (vanishing), far
above it means steps that overwrite the weights (exploding or too high a learning
rate). Taken on the schedule: weights are copied before the optimiser step and
compared after it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from gradbench.probes.layer_norms import LayerIndex


def snapshot(index: LayerIndex) -> list[Tensor]:
    """Copies of the weights as they are now (before the optimiser step)."""
    with torch.no_grad():
        return [p.detach().clone() for p in index.params]


def update_ratios(index: LayerIndex, before: list[Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer (||Δw|| / ||w_before||, ||w_before||); nan where a layer's weights are all zero."""
    with torch.no_grad():
        after = [p.detach() for p in index.params]
        deltas = torch._foreach_sub(after, before)
        delta_norms = index.reduce(list(torch._foreach_norm(deltas))).numpy()
        weight_norms = index.reduce(list(torch._foreach_norm(before))).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(weight_norms > 0, delta_norms / weight_norms, np.nan)
    return ratios, weight_norms
