"""Mitigation switches shared by every model: activations and weight initialisation.

These are the knobs the vanishing/exploding-gradient literature turns: saturating vs
non-saturating activations (Glorot & Bengio 2010), variance-preserving initialisation
(Glorot & Bengio 2010; He et al. 2015), orthogonal recurrent weights (Saxe et al. 2014).
"""

from __future__ import annotations

import math

from torch import nn

from gradbench.errors import UsageError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
}

INITS = ("default", "xavier", "he", "orthogonal", "normal:STD")


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UsageError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def parse_init(scheme: str) -> tuple[str, float | None]:
    """Validate an init name; ``normal:STD`` carries its standard deviation."""
    if scheme.startswith("normal:"):
        try:
            std = float(scheme.split(":", 1)[1])
        except ValueError:
            std = -1.0
        if not std > 0:
            raise UsageError(f"init {scheme!r}: write normal:STD with STD > 0, e.g. normal:0.01")
        return "normal", std
    if scheme not in INITS:
        raise UsageError(f"unknown init {scheme!r}; choose one of {', '.join(INITS)}")
    return scheme, None


def _gain_name(activation: str | None) -> str:
    # He init assumes rectifiers; for saturating units use their own gain.
    return {
        "leaky_relu": "leaky_relu",
        "tanh": "tanh",
        "sigmoid": "sigmoid",
        "linear": "linear",
    }.get(activation or "relu", "relu")


def init_weights(model: nn.Module, scheme: str, activation: str | None = None) -> None:
    """Re-initialise weight matrices and kernels in place; biases go to zero.

    Norm layers keep their (1, 0) defaults and embeddings their N(0, 1) unless
    ``normal:STD`` is asked for. Recurrent hidden-to-hidden matrices are treated per
    gate block, so "orthogonal" gives each gate an orthogonal recurrence.
    """
    kind, std = parse_init(scheme)
    if kind == "default":
        return
    nonlinearity = _gain_name(activation)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            _init_matrix(module.weight, kind, std, nonlinearity)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.RNN, nn.LSTM, nn.GRU)):
            for name, param in module.named_parameters():
                if name.startswith("weight"):
                    gates = param.shape[0] // module.hidden_size
                    for block in param.data.chunk(gates, dim=0):
                        _init_matrix(block, kind, std, "tanh")
                elif name.startswith("bias"):
                    nn.init.zeros_(param)
                    # An LSTM's forget-gate bias (Jozefowicz et al. 2015) is part of the
                    # architecture, not of the init scheme: keep it (gate order i, f, g, o).
                    forget_bias = getattr(module, "forget_bias", 0.0)
                    if forget_bias and isinstance(module, nn.LSTM) and name.startswith("bias_ih"):
                        param.data.chunk(4)[1].fill_(forget_bias)
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            # The packed query/key/value projection is three matrices, initialised apart.
            for block in module.in_proj_weight.data.chunk(3, dim=0):
                _init_matrix(block, kind, std, "linear")
            if module.in_proj_bias is not None:
                nn.init.zeros_(module.in_proj_bias)
        elif isinstance(module, nn.Embedding) and kind == "normal":
            nn.init.normal_(module.weight, 0.0, std)


def _init_matrix(weight, kind: str, std: float | None, nonlinearity: str) -> None:
    if kind == "xavier":
        nn.init.xavier_uniform_(weight, gain=nn.init.calculate_gain(nonlinearity))
    elif kind == "he":
        if nonlinearity in ("relu", "leaky_relu"):
            nn.init.kaiming_normal_(weight, nonlinearity=nonlinearity)
        else:  # He's derivation is for rectifiers; fan-in scaling with the unit's gain
            fan_in = weight[0].numel()
            nn.init.normal_(weight, 0.0, nn.init.calculate_gain(nonlinearity) / math.sqrt(fan_in))
    elif kind == "orthogonal":
        nn.init.orthogonal_(weight, gain=nn.init.calculate_gain(nonlinearity))
    elif kind == "normal":
        nn.init.normal_(weight, 0.0, std)
