"""Non-finite events: the first step where a weight, the loss or a gradient became NaN/Inf.

The training loop stops at the first non-finite loss or global gradient norm; this
module says what went first and where. Weights are checked then (weights already
non-finite mean the previous update broke them, so that update's step is the event),
on the probe schedule, and at the end of the run. For the layer:

- weights: the first non-finite layer in depth order;
- gradients (loss finite): the non-finite layer nearest the output, since back-propagation
  reaches it first and carries the overflow down to the others;
- loss: the first module, in execution order, whose forward output is non-finite,
  found by replaying the forward pass with hooks (once per run, at the failure, under a
  forked RNG and with buffers restored so evaluation afterwards is unaffected).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from gradbench.evaluation import forward
from gradbench.probes.layer_norms import LayerIndex
from gradbench.task import Batch


@dataclass
class NonFiniteEvent:
    step: int
    what: str  # "weight", "loss" or "gradient"
    layer: str | None
    layers: list[str] = field(default_factory=list)  # every affected layer, depth order (≤ 10)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def nonfinite_weight_layers(index: LayerIndex) -> list[str]:
    """Names of layers with a NaN/Inf weight, input side first."""
    if not index.params:
        return []
    with torch.no_grad():
        peaks = torch.stack(torch._foreach_norm([p.detach() for p in index.params], math.inf))
    bad = (~torch.isfinite(peaks)).cpu().numpy()
    names = {index.layers[i].name for i in index.owner[torch.from_numpy(bad)].tolist()}
    return [layer.name for layer in index.layers if layer.name in names]


def nonfinite_grad_layers(norms: np.ndarray, index: LayerIndex) -> list[str]:
    return [layer.name for layer, n in zip(index.layers, norms, strict=True) if not np.isfinite(n)]


def first_nonfinite_module(model: nn.Module, batch: Batch) -> str | None:
    """Replay the forward pass; the first module (execution order) with a non-finite output."""
    found: list[str] = []
    handles = []

    def watch(name: str):
        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            if not found and isinstance(output, Tensor) and not torch.isfinite(output).all():
                found.append(name)

        return hook

    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_hook(watch(name)))
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [batch.x.device] if batch.x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            output = forward(model, batch)
            if not found and not torch.isfinite(output).all():
                found.append("model")
    finally:
        for handle in handles:
            handle.remove()
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
    return found[0] if found else None
