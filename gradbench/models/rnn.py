"""Recurrent nets side by side: plain RNN (tanh, or ReLU: the IRNN of Le et al. 2015), LSTM, GRU.

Each is the same network around a different recurrence: input layer (an embedding for
token tasks, raw features otherwise), ``depth`` stacked single-layer fused modules
(``nn.RNN``/``nn.LSTM``/``nn.GRU``, so the fast kernels do the training), optional
LayerNorm between layers, then the shared pooling and head of ``sequence.py``.

``forward`` packs padded batches (``pack_padded_sequence``), so padding never changes
a result. ``hidden_sequence`` recomputes the top layer one step at a time with the
*same* parameter tensors, so that each state h_t is a node of the graph through which
every later state flows and ``torch.autograd.grad(loss, hs)`` is the total derivative
dL/dh_t (the fused module's outputs would only give the direct part). Its cost per
training step against the fused path, measured by ``bench/sequence_speed.py`` (one CPU
thread, width 128, batch 64, forward + backward + Adam): RNN 1.0x / 0.9x, LSTM 2.0x /
1.4x, GRU 1.3x / 1.2x at T=50 / T=200. The probe runs it on a few samples at a few
steps only, so training keeps the fused kernels; unidirectional nets skip it altogether
(``hidden_grad_norms``: the same figures from the fused kernel).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gradbench.errors import UsageError
from gradbench.models.frontend import make_frontend
from gradbench.models.sequence import (
    POOLINGS,
    Readout,
    check_choice,
    check_sequence_spec,
    input_size,
    length_mask,
    make_embedding,
)
from gradbench.registry import MODELS
from gradbench.task import InputSpec

CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
# The fused kernels implement these two only; other activations would need a slow loop.
RNN_ACTIVATIONS = ("tanh", "relu")


def parse_recurrent_init(value: str) -> tuple[str, float]:
    """'default', 'orthogonal', 'identity' or 'identity:SCALE' (Le et al. 2015 use 1.0)."""
    kind, _, scale = value.partition(":")
    if kind not in ("default", "identity", "orthogonal") or (scale and kind != "identity"):
        raise UsageError(
            f"recurrent_init={value!r}: choose default, orthogonal, identity or identity:SCALE"
        )
    try:
        factor = float(scale) if scale else 1.0
    except ValueError:
        raise UsageError(f"recurrent_init={value!r}: SCALE must be a number") from None
    return kind, factor


def recurrent_layers(
    cell: str,
    features: int,
    width: int,
    depth: int,
    activation: str,
    bidirectional: bool,
    layer_norm: bool,
) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``depth`` single-layer fused modules taking ``features`` first, and the norm after
    each (LayerNorm, or Identity without ``layer_norm``)."""
    layers, norms = nn.ModuleList(), nn.ModuleList()
    extra = {"nonlinearity": activation} if cell == "rnn" else {}
    for _ in range(depth):
        layers.append(
            CELLS[cell](features, width, batch_first=True, bidirectional=bidirectional, **extra)
        )
        features = width * (2 if bidirectional else 1)
        # Across the stack only: the fused kernels leave no room for LayerNorm inside
        # the recurrence (Ba et al. 2016), so this does not touch the path through time.
        norms.append(nn.LayerNorm(features) if layer_norm else nn.Identity())
    return layers, norms


class RecurrentNet(nn.Module):
    def __init__(
        self,
        spec: InputSpec,
        cell: str,
        *,
        width: int,
        depth: int,
        activation: str = "tanh",
        bidirectional: bool = False,
        pooling: str = "last",
        embed_dim: int = 64,
        layer_norm: bool = False,
        recurrent_init: str = "default",
        forget_bias: float = 0.0,
        frontend: str = "none",
    ):
        super().__init__()
        check_sequence_spec(spec, cell)
        check_choice(cell, "pooling", pooling, POOLINGS)
        if width < 1 or depth < 1:
            raise UsageError(f"{cell}: width and depth must be >= 1, got {width} and {depth}")
        if cell == "rnn":
            check_choice(cell, "activation", activation, RNN_ACTIVATIONS)
        self.cell = cell
        self.activation = activation
        self.hidden_size = width
        self.directions = 2 if bidirectional else 1
        self.embed = make_embedding(spec, embed_dim)
        features = input_size(spec, embed_dim)
        # Optional strided convolutions over time before the recurrence (off: None).
        self.frontend = make_frontend(frontend, features, cell)
        self.layers, self.norms = recurrent_layers(
            cell, features, width, depth, activation, bidirectional, layer_norm
        )
        features = width * self.directions
        self.readout = Readout(spec, features, pooling, width if bidirectional else None)
        self._init_recurrence(recurrent_init, forget_bias)

    def _init_recurrence(self, recurrent_init: str, forget_bias: float) -> None:
        kind, scale = parse_recurrent_init(recurrent_init)
        with torch.no_grad():
            for layer in self.layers:
                for name, param in layer.named_parameters():
                    if name.startswith("weight_hh") and kind != "default":
                        for block in param.chunk(param.shape[0] // self.hidden_size, dim=0):
                            if kind == "identity":
                                block.copy_(torch.eye(self.hidden_size) * scale)
                            else:
                                nn.init.orthogonal_(block)
                    elif name.startswith("bias") and kind == "identity":
                        param.zero_()  # Le et al. (2015): identity recurrence, zero biases
                # Read by mitigations.init_weights: a generic --init leaves this alone.
                layer.own_recurrent_init = kind != "default"
                if self.cell == "lstm" and forget_bias:
                    # Read by mitigations.init_weights, so a generic --init keeps it.
                    layer.forget_bias = forget_bias
                    for name, param in layer.named_parameters():
                        # Gate order i, f, g, o; one of the two bias vectors carries it.
                        if name.startswith("bias_ih"):
                            param.chunk(4)[1].fill_(forget_bias)
                        elif name.startswith("bias_hh"):
                            param.chunk(4)[1].zero_()

    def _inputs(self, x: Tensor) -> Tensor:
        return self.embed(x) if self.embed is not None else x

    def _prepare(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The first recurrent layer's input and lengths: after the front end, if any."""
        states = self._inputs(x)
        if self.frontend is None:
            return states, lengths
        return self.frontend(states, lengths)

    def _fused(self, layer: nn.RNNBase, x: Tensor, lengths: Tensor | None) -> Tensor:
        if lengths is None:
            return layer(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = layer(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        states, lengths = self._prepare(x, lengths)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            states = norm(self._fused(layer, states, lengths))
        return self.readout(states, lengths)

    def hidden_grad_norms(
        self, x: Tensor, lengths: Tensor | None, loss_fn: Callable[[Tensor], Tensor]
    ) -> Tensor | None:
        """Per-sample ||dL/dh_t|| of the top layer, (B, T), in one fused pass, or None.

        The step-by-step ``hidden_sequence`` costs a Python loop over T. For a tanh/ReLU
        RNN or an LSTM, h_t reaches the loss directly (out_t) and through the next step's
        gate pre-activations a_{t+1} = W_ih x_{t+1} + W_hh h_t + b only, so
        dL/dh_t = dL/dout_t + W_hh^T dL/da_{t+1}. dL/da_t is read off a zero input z_t
        added to the pre-activations, by running the fused kernel on [x_t, z_t] with input
        weights [W_ih, I]. Same numbers as ``hidden_sequence`` (tested), ~1 fused pass;
        zero at padded steps, as there. None for bidirectional nets.

        The GRU's h_t also reaches h_{t+1} directly, h_{t+1} = (1 - u) n + u h_t, and its
        candidate gate multiplies the recurrent term by the reset gate, n = tanh(a_n +
        r (W_hn h_t + b_hn)). So its total is a backward recursion over elementwise
        products, no autograd: g_t = dL/dout_t + [dL/da_r, dL/da_u, r dL/da_n]_{t+1} W_hh
        + u_{t+1} g_{t+1}, with r and u recomputed from the fused pass's states.
        """
        if self.directions != 1:
            return None
        states, lengths = self._prepare(x, lengths)
        *lower, (top, top_norm) = list(zip(self.layers, self.norms, strict=True))
        for layer, norm in lower:
            states = norm(self._fused(layer, states, lengths))
        gates = top.weight_hh_l0.shape[0]
        batch, steps, features = states.shape
        z = states.new_zeros(batch, steps, gates, requires_grad=True)
        probe = self._gate_probe_layer(top, features + gates)
        eye = torch.eye(gates, dtype=states.dtype, device=states.device)
        weights = {
            "weight_ih_l0": torch.cat([top.weight_ih_l0, eye], dim=1),
            "weight_hh_l0": top.weight_hh_l0,
        }
        if top.bias:
            weights |= {"bias_ih_l0": top.bias_ih_l0, "bias_hh_l0": top.bias_hh_l0}
        inputs = torch.cat([states, z], dim=-1)
        if lengths is not None:
            inputs = pack_padded_sequence(
                inputs, lengths.cpu(), batch_first=True, enforce_sorted=False
            )
        out = functional_call(probe, weights, (inputs,))[0]
        if lengths is not None:
            out = pad_packed_sequence(out, batch_first=True, total_length=steps)[0]
        loss = loss_fn(self.readout(top_norm(out), lengths))
        d_out, d_z = torch.autograd.grad(loss, [out, z], allow_unused=True)
        d_out = torch.zeros_like(out) if d_out is None else d_out
        d_z = torch.zeros_like(z) if d_z is None else d_z
        if lengths is not None:  # padded steps carry no gradient (as in hidden_sequence)
            mask = length_mask(lengths.to(d_out.device), steps)
            d_out = d_out * mask.unsqueeze(-1).to(d_out.dtype)
        with torch.no_grad():  # figures, not a graph: the weights need no gradient here
            if self.cell == "gru":
                total = self._gru_total(top, states, out, d_out, d_z)
            else:
                total = d_out.clone()
                total[:, :-1] += d_z[:, 1:] @ top.weight_hh_l0
        return total.float().norm(dim=2)

    def fused_probe_pays(self, device: torch.device, padded: bool) -> bool:
        """Whether ``hidden_grad_norms`` is cheaper than the step-by-step pass here.

        On CUDA cuDNN fuses every cell, while the step-by-step pass launches kernels per
        step. On the CPU only the LSTM on unpadded input has a fused kernel (oneDNN);
        PyTorch's CPU RNN, GRU and packed LSTM are themselves per-step compositions, and
        the wider augmented pass then costs more. Fused / step-by-step time of one probe
        pass (``python bench/probe_paths.py``: 6 samples, one thread): unpadded LSTM 0.73
        on adding-200; GRU 1.57 and RNN 1.67 there; on speech-digits (T=127, padded)
        RNN 1.13, LSTM 1.15, GRU 1.24. On SST-2's 31-token sentences the fused pass wins
        (0.80-0.94), but both take under 10 ms there, so the rule stays simple.
        """
        if device.type == "cuda":
            return True
        return self.cell == "lstm" and not padded

    @staticmethod
    def _gru_total(top: nn.GRU, x: Tensor, h: Tensor, d_out: Tensor, d_a: Tensor) -> Tensor:
        """dL/dh_t (B, T, H) of a GRU layer from its inputs x, states h = out, the
        gradient reaching each output directly and that of each step's gate
        pre-activations (see ``hidden_grad_norms``). Zero at padded steps when d_out is:
        d_a is zero there (the packed kernel never reads those steps)."""
        w_hh = top.weight_hh_l0
        b_ih = top.bias_ih_l0 if top.bias else None
        b_hh = top.bias_hh_l0 if top.bias else None
        a_r, a_u, _ = F.linear(x[:, 1:], top.weight_ih_l0, b_ih).chunk(3, dim=-1)
        h_r, h_u, _ = F.linear(h[:, :-1], w_hh, b_hh).chunk(3, dim=-1)
        reset, update = torch.sigmoid(a_r + h_r), torch.sigmoid(a_u + h_u)  # r, u at t+1
        d_r, d_u, d_n = d_a[:, 1:].chunk(3, dim=-1)
        direct = d_out.clone()
        direct[:, :-1] += torch.cat([d_r, d_u, reset * d_n], dim=-1) @ w_hh
        # g_t = direct_t + u_{t+1} g_{t+1}, from the last step back: elementwise, T small
        # kernels (a closed form through cumulative products of u would underflow).
        steps = direct.unbind(1)
        gates = update.unbind(1)
        totals = [steps[-1]]
        for t in range(len(steps) - 2, -1, -1):
            totals.append(torch.addcmul(steps[t], gates[t], totals[-1]))
        return torch.stack(totals[::-1], dim=1)

    def _gate_probe_layer(self, top: nn.RNNBase, input_size: int) -> nn.RNNBase:
        """A parameter-free twin of the top layer taking [x, z]; cached, not registered."""
        cache = self.__dict__.setdefault("_gate_probe_cache", {})
        key = (input_size, top.weight_hh_l0.device, top.weight_hh_l0.dtype)
        if key not in cache:
            extra = {"nonlinearity": top.nonlinearity} if self.cell == "rnn" else {}
            twin = type(top)(
                input_size, self.hidden_size, bias=top.bias, batch_first=True, **extra
            ).to(device=top.weight_hh_l0.device, dtype=top.weight_hh_l0.dtype)
            cache[key] = twin.requires_grad_(False)
        return cache[key]

    def hidden_sequence(
        self, x: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``(output, [h_0, ..., h_{T-1}])``: the top layer's states, each of shape (B, width).

        Lower layers run fused (their states do not depend on the top layer's). The top
        layer runs step by step with the fused module's own weight tensors. For an LSTM
        h_t is the output state (the cell state c_t is not returned); for a bidirectional
        net the forward direction's states (the backward direction's do not depend on
        them). At padded steps a sample's state is carried unchanged, so the state at its
        true last step is what the last-state pooling reads.
        """
        states, lengths = self._prepare(x, lengths)
        *lower, top = list(zip(self.layers, self.norms, strict=True))
        for layer, norm in lower:
            states = norm(self._fused(layer, states, lengths))
        mask = None if lengths is None else length_mask(lengths.to(states.device), states.shape[1])
        outputs = []
        hs: list[Tensor] = []
        for direction in range(self.directions):
            seq, direction_states = self._stepwise(top[0], states, mask, reverse=direction == 1)
            outputs.append(seq)
            if direction == 0:
                hs = direction_states
        states = top[1](torch.cat(outputs, dim=-1))
        return self.readout(states, lengths), hs

    def _stepwise(
        self, layer: nn.RNNBase, x: Tensor, mask: Tensor | None, reverse: bool
    ) -> tuple[Tensor, list[Tensor]]:
        suffix = "_reverse" if reverse else ""
        w_ih = getattr(layer, f"weight_ih_l0{suffix}")
        w_hh = getattr(layer, f"weight_hh_l0{suffix}")
        b_ih = getattr(layer, f"bias_ih_l0{suffix}")
        b_hh = getattr(layer, f"bias_hh_l0{suffix}")
        batch, steps, _ = x.shape
        # The input projection has no recurrence: one matrix product for all steps.
        # Unbound once rather than sliced per step: each slice's backward would
        # allocate a full-size gradient, making the backward pass quadratic in T.
        gates_in = F.linear(x, w_ih, b_ih).unbind(1)
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size) if self.cell == "lstm" else None
        states: list[Tensor] = [h] * steps
        for t in range(steps - 1, -1, -1) if reverse else range(steps):
            gates_h = F.linear(h, w_hh, b_hh)
            if self.cell == "lstm":
                i, f, g, o = (gates_in[t] + gates_h).chunk(4, dim=-1)
                c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(c_new)
            elif self.cell == "gru":
                ir, iz, in_ = gates_in[t].chunk(3, dim=-1)
                hr, hz, hn = gates_h.chunk(3, dim=-1)
                r = torch.sigmoid(ir + hr)
                z = torch.sigmoid(iz + hz)
                h_new = (1 - z) * torch.tanh(in_ + r * hn) + z * h
            else:
                pre = gates_in[t] + gates_h
                h_new = torch.tanh(pre) if self.activation == "tanh" else torch.relu(pre)
            if mask is not None:
                keep = mask[:, t, None]
                h_new = torch.where(keep, h_new, h)
                if c is not None:
                    c_new = torch.where(keep, c_new, c)
            h = h_new
            if c is not None:
                c = c_new
            states[t] = h
        seq = torch.stack(states, dim=1)
        if mask is not None:  # as pad_packed_sequence does: zero outputs at padded steps
            seq = seq * mask.unsqueeze(-1).to(seq.dtype)
        return seq, states


@MODELS.register(
    "rnn",
    suffix_param="depth",
    tags=("rnn", "sequence"),
    description="Plain (Elman) RNN, tanh by default (activation=relu), stacked: rnn-2",
)
def rnn(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    activation: str = "tanh",
    bidirectional: bool = False,
    pooling: str = "last",
    embed_dim: int = 64,
    layer_norm: bool = False,
    recurrent_init: str = "default",
    frontend: str = "none",
) -> nn.Module:
    return RecurrentNet(
        spec,
        "rnn",
        width=width,
        depth=depth,
        activation=activation,
        bidirectional=bidirectional,
        pooling=pooling,
        embed_dim=embed_dim,
        layer_norm=layer_norm,
        recurrent_init=recurrent_init,
        frontend=frontend,
    )


@MODELS.register(
    "irnn",
    suffix_param="depth",
    tags=("rnn", "sequence"),
    description="IRNN (Le et al. 2015): ReLU RNN with identity recurrent weights, zero biases",
)
def irnn(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    bidirectional: bool = False,
    pooling: str = "last",
    embed_dim: int = 64,
    layer_norm: bool = False,
    recurrent_init: str = "identity",
    frontend: str = "none",
) -> nn.Module:
    return RecurrentNet(
        spec,
        "rnn",
        width=width,
        depth=depth,
        activation="relu",
        bidirectional=bidirectional,
        pooling=pooling,
        embed_dim=embed_dim,
        layer_norm=layer_norm,
        recurrent_init=recurrent_init,
        frontend=frontend,
    )


@MODELS.register(
    "lstm",
    suffix_param="depth",
    tags=("rnn", "gated", "sequence"),
    description="LSTM (Hochreiter & Schmidhuber 1997), forget-gate bias 1, stacked: lstm-2",
)
def lstm(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    bidirectional: bool = False,
    pooling: str = "last",
    embed_dim: int = 64,
    layer_norm: bool = False,
    recurrent_init: str = "default",
    forget_bias: float = 1.0,
    frontend: str = "none",
) -> nn.Module:
    return RecurrentNet(
        spec,
        "lstm",
        width=width,
        depth=depth,
        bidirectional=bidirectional,
        pooling=pooling,
        embed_dim=embed_dim,
        layer_norm=layer_norm,
        recurrent_init=recurrent_init,
        forget_bias=forget_bias,
        frontend=frontend,
    )


@MODELS.register(
    "gru",
    suffix_param="depth",
    tags=("rnn", "gated", "sequence"),
    description="GRU (Cho et al. 2014), stacked: gru-2",
)
def gru(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 1,
    bidirectional: bool = False,
    pooling: str = "last",
    embed_dim: int = 64,
    layer_norm: bool = False,
    recurrent_init: str = "default",
    frontend: str = "none",
) -> nn.Module:
    return RecurrentNet(
        spec,
        "gru",
        width=width,
        depth=depth,
        bidirectional=bidirectional,
        pooling=pooling,
        embed_dim=embed_dim,
        layer_norm=layer_norm,
        recurrent_init=recurrent_init,
        frontend=frontend,
    )
