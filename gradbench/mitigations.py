"""Mitigation switches shared by every model: activations, normalisation, initialisation.

These are the knobs the vanishing/exploding-gradient literature turns: saturating vs
non-saturating activations (Glorot & Bengio 2010), variance-preserving initialisation
(Glorot & Bengio 2010; He et al. 2015), orthogonal recurrent weights (Saxe et al. 2014).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from gradbench.config import NORMS
from gradbench.errors import UsageError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    # leaky_relu:SLOPE sets the slope of inactive units (torch's default: 0.01).
    "leaky_relu": nn.LeakyReLU,
    # One learnable slope per activation layer, starting at 0.25 (He et al. 2015).
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}
# Group norm's number of groups (Wu & He 2018), reduced to a divisor of narrow layers.
NORM_GROUPS = 32

INITS = ("default", "xavier", "he", "orthogonal", "normal:STD")


def parse_activation(name: str) -> tuple[str, float | None]:
    """Validate an activation name; ``leaky_relu:SLOPE`` carries its negative slope."""
    kind, sep, rest = name.partition(":")
    if kind not in ACTIVATIONS:
        raise UsageError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)} "
            "(leaky_relu:SLOPE sets the slope)"
        )
    if not sep:
        return kind, None
    try:
        slope = float(rest) if kind == "leaky_relu" else None
    except ValueError:
        slope = None
    if slope is None or not 0 <= slope < 1:
        raise UsageError(f"activation {name!r}: only leaky_relu takes a slope, 0 <= SLOPE < 1")
    return kind, slope


def make_activation(name: str) -> nn.Module:
    """A fresh activation module; each call is its own layer (a PReLU's slope is not shared)."""
    kind, slope = parse_activation(name)
    if slope is not None:
        return nn.LeakyReLU(slope)
    return ACTIVATIONS[kind]()


def pick_norm(norm: str | None, batch_norm: bool) -> str:
    """The normalisation to build. ``norm`` (batch, layer, group, none) wins when given;
    "auto" leaves it to the shorthand ``batch_norm`` (--batch-norm/--no-batch-norm)."""
    if norm in (None, "auto"):
        return "batch" if batch_norm else "none"
    if norm not in NORMS:
        raise UsageError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")
    return norm


def settle_norm(options: dict[str, Any], given: dict[str, Any]) -> None:
    """Make ``norm`` and its shorthand ``batch_norm`` agree in resolved model options, so a
    run record says once what was built; ``given`` holds the options the user set."""
    if "norm" not in options or "batch_norm" not in options:
        return
    norm = pick_norm(options["norm"], options["batch_norm"])
    shorthand = given.get("batch_norm")
    if options["norm"] not in (None, "auto") and shorthand is not None:
        # --no-batch-norm with --norm layer agree (no batch norm); --batch-norm does not.
        if (shorthand is True and norm != "batch") or (shorthand is False and norm == "batch"):
            raise UsageError(f"batch_norm={shorthand} contradicts norm={norm}; give one of them")
    options["norm"] = norm
    options["batch_norm"] = norm == "batch"


def make_norm(norm: str, channels: int, dims: int = 2) -> nn.Module:
    """A normalisation layer for ``channels`` features (``dims``: 2 for images, 1 for vectors).

    Layer norm is group norm with one group (Wu & He 2018): it normalises each example over
    all its channels and positions, with a per-channel scale and shift, as batch norm has.
    """
    if norm == "batch":
        return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)
    if norm == "layer":
        return nn.GroupNorm(1, channels) if dims == 2 else nn.LayerNorm(channels)
    if norm == "group":
        return nn.GroupNorm(math.gcd(channels, NORM_GROUPS), channels)
    return nn.Identity()


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
    }.get((activation or "relu").partition(":")[0], "relu")  # prelu, elu, gelu: rectifiers


def init_weights(model: nn.Module, scheme: str, activation: str | None = None) -> None:
    """Re-initialise weight matrices and kernels in place; biases go to zero.

    Norm layers keep their (1, 0) defaults and embeddings their N(0, 1) unless
    ``normal:STD`` is asked for. Recurrent hidden-to-hidden matrices are treated per
    gate block, so "orthogonal" gives each gate an orthogonal recurrence, unless the
    model set its own recurrence (a recurrent module marked ``own_recurrent_init``:
    the IRNN's identity, ``recurrent_init=orthogonal``): that is part of the
    architecture the run is labelled with, so the scheme applies to the other weights
    only. An LSTM's forget-gate bias is kept likewise.
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
            own_recurrence = getattr(module, "own_recurrent_init", False)
            for name, param in module.named_parameters():
                if own_recurrence and name.startswith(("weight_hh", "bias")):
                    continue  # the model's own recurrence (IRNN: identity, zero biases)
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
