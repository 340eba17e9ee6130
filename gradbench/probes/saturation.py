"""Activation saturation: saturated sigmoid/tanh units and dead ReLUs, from forward hooks.

A sigmoid output within 0.01 of 0 or 1, or a tanh output beyond ±0.99, has a local
derivative under 4% (sigmoid: s(1-s) < 0.0099 against a peak of 0.25) or 2% (tanh:
1-y² < 0.0199 against 1) of its maximum: the gradient through it is nearly cut
(Glorot & Bengio 2010 watched exactly this in deep sigmoid nets). The saturated
fraction is over all units and samples of the batch. A ReLU unit (one position of the
per-sample activation tensor) is dead on a batch when its output is zero for every
sample; a leaky ReLU's when it is negative for every sample (it then passes only the
leak). Only module activations are seen (``nn.Sigmoid`` and friends); functional
calls such as ``F.relu`` and the tanh inside ``nn.RNN`` are not.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

SIGMOID_MARGIN = 0.01
TANH_LIMIT = 0.99

ACTIVATION_KINDS: dict[type[nn.Module], str] = {
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
}


def saturated_fraction(output: Tensor, kind: str) -> Tensor:
    """Fraction of saturated entries (sigmoid/tanh) or of dead units (ReLU family)."""
    y = output.detach()
    if kind == "sigmoid":
        return ((y < SIGMOID_MARGIN) | (y > 1 - SIGMOID_MARGIN)).float().mean()
    if kind == "tanh":
        return (y.abs() > TANH_LIMIT).float().mean()
    # A unit is alive if any sample of the batch puts it in the active (positive) range.
    alive = (y > 0).flatten(1).any(dim=0) if y.dim() > 1 else (y > 0).any().reshape(1)
    return 1.0 - alive.float().mean()


def activation_modules(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(name, kind, module) of every hookable activation, in registration order."""
    found = []
    for name, module in model.named_modules():
        kind = ACTIVATION_KINDS.get(type(module))
        if kind is not None:
            found.append((name or "model", kind, module))
    return found


class SaturationProbe:
    """Forward hooks installed only for scheduled steps, so unscheduled steps pay nothing."""

    def __init__(self, model: nn.Module):
        self.modules = activation_modules(model)
        self.names = [name for name, _, _ in self.modules]
        self.kinds = [kind for _, kind, _ in self.modules]
        self._handles: list = []
        self._values: list[Tensor | None] = [None] * len(self.modules)

    def arm(self) -> None:
        """Capture the next training-mode forward pass."""
        if self._handles or not self.modules:
            return
        self._values = [None] * len(self.modules)
        for i, (_, kind, module) in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(self._hook(i, kind)))

    def _hook(self, i: int, kind: str) -> Callable:
        def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
            # Evaluation passes run in eval mode; only the training forward is measured.
            # The first call of a step wins (a module applied twice keeps its first use).
            if module.training and self._values[i] is None and isinstance(output, Tensor):
                self._values[i] = saturated_fraction(output, kind)

        return hook

    def collect(self) -> list[float] | None:
        """Remove the hooks; the captured fractions (nan for a module that did not run)."""
        if not self._handles:
            return None
        for handle in self._handles:
            handle.remove()
        self._handles = []
        values = [torch.nan if v is None else v for v in self._values]
        self._values = [None] * len(self.modules)
        if not values:
            return []
        return torch.stack([torch.as_tensor(v, dtype=torch.float32).cpu() for v in values]).tolist()
