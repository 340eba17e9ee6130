"""Deep fully connected networks: the textbook setting of Glorot & Bengio (2010).

``mlp-N`` has N weight layers (N-1 hidden layers of ``width`` units, then the output
layer). With sigmoid units and naive initialisation the first layers' gradients vanish;
with ReLU and He initialisation, or ``residual=True``, they do not.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from gradbench.errors import UsageError
from gradbench.mitigations import make_activation, make_norm, pick_norm
from gradbench.registry import MODELS
from gradbench.task import InputSpec


class MLPLayer(nn.Module):
    def __init__(self, width: int, activation: str, norm: str, residual: bool):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = make_norm(norm, width, dims=1)
        self.act = make_activation(activation)
        self.residual = residual

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.norm(self.linear(x)))
        return x + out if self.residual else out


class MLP(nn.Module):
    def __init__(
        self,
        spec: InputSpec,
        depth: int,
        width: int,
        activation: str,
        norm: str,
        residual: bool,
    ):
        super().__init__()
        if spec.kind == "tokens":
            raise UsageError("an MLP needs real-valued inputs; this task's input is token ids")
        if depth < 2:
            raise UsageError(f"mlp depth counts weight layers and must be >= 2, got {depth}")
        if width < 1:
            raise UsageError(f"mlp width must be >= 1, got {width}")
        self.input = nn.Sequential(
            nn.Flatten(), nn.Linear(math.prod(spec.shape), width), make_activation(activation)
        )
        self.hidden = nn.Sequential(
            *(MLPLayer(width, activation, norm, residual) for _ in range(depth - 2))
        )
        self.head = nn.Linear(width, spec.num_outputs)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.hidden(self.input(x)))


@MODELS.register(
    "mlp",
    suffix_param="depth",
    tags=("mlp",),
    description="Deep MLP with N weight layers (mlp-20); optional batch norm and residual adds",
)
def mlp(
    spec: InputSpec,
    *,
    depth: int = 8,
    width: int = 128,
    activation: str = "relu",
    batch_norm: bool = False,
    norm: str = "auto",  # batch, layer, group, none; auto: as batch_norm says
    residual: bool = False,
) -> nn.Module:
    return MLP(spec, depth, width, activation, pick_norm(norm, batch_norm), residual)
