"""FLOPs of one training step, measured with ``torch.utils.flop_counter.FlopCounterMode``.

The counter intercepts ATen operators and applies a shape formula to the ones it knows:
matrix products (``mm``, ``addmm``, ``bmm``, ...), convolutions and their backward, and
the GPU attention kernels. A multiply-add counts as two FLOPs. Everything else counts
zero: bias adds, activations, normalisation, softmax, losses, optimiser updates,
embedding look-ups. Operators it has no formula for count zero too, unless they
decompose into ones it knows. What that means for the models gradbench trains:

- recurrent layers: on CPU ``nn.RNN`` and ``nn.GRU`` decompose into ``mm``/``addmm``
  (counted, but one Python-intercepted call per op and time step: seconds per count at
  T=100), ``nn.LSTM`` runs as one oneDNN kernel (``mkldnn_rnn_layer``) and on CUDA
  every recurrent layer is one cuDNN kernel (``_cudnn_rnn``): both count zero;
- ``F.scaled_dot_product_attention`` on CPU runs ``_scaled_dot_product_flash_attention
  _for_cpu``, which counts zero (the counter knows only the GPU attention kernels).

So a training step is counted with every ``nn.RNN``/``nn.LSTM``/``nn.GRU`` call
replaced by ``recurrent_flops``, a formula equal to the counter's own op-by-op count of
ATen's decomposed recurrence (tests/test_flops.py checks it on every configuration of
cell, layers, direction, packing and projection), on any device and in microseconds;
and ``EXTRA_FORMULAS`` gives the fused recurrent and CPU attention kernels formulas of
their own, for recurrent ops called outside a module. See docs/budgets.md.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

from gradbench.task import Batch

aten = torch.ops.aten
Shape = Sequence[int]


def recurrent_tokens(input_shape: Shape, batch_sizes: Sequence[int]) -> int:
    """Time steps x batch a recurrent kernel processes: a packed input's real steps only."""
    if batch_sizes:
        return int(sum(batch_sizes))
    return int(input_shape[0]) * int(input_shape[1])


def matrix_entries(weights: Sequence[Shape | None]) -> int:
    """Entries of the 2-D weight matrices (input, recurrent, projection); biases are skipped."""
    return sum(math.prod(w) for w in weights if w is not None and len(w) == 2)


def recurrent_forward_flops(tokens: int, weights: Sequence[Shape | None]) -> int:
    """Every weight matrix of every layer and direction multiplies every token once.

    For a layer with G gates (RNN 1, GRU 3, LSTM 4), hidden size H and input size I this
    is 2 * tokens * G*H * (I + H): the input and recurrent products, what the
    decomposed kernels' ``addmm`` and ``mm`` calls add up to.
    """
    return 2 * tokens * matrix_entries(weights)


def mkldnn_rnn_layer_flop(
    input_shape: Shape, w_ih: Shape, w_hh: Shape, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """oneDNN LSTM, one layer and direction (CPU ``nn.LSTM``)."""
    batch_sizes = args[5] if len(args) > 5 else kwargs.get("batch_sizes", ())
    return recurrent_forward_flops(recurrent_tokens(input_shape, batch_sizes), [w_ih, w_hh])


def mkldnn_rnn_layer_backward_flop(
    input_shape: Shape, w_ih: Shape, w_hh: Shape, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """Twice the forward: the kernel computes input/hidden and weight gradients alike."""
    batch_sizes = args[17] if len(args) > 17 else kwargs.get("batch_sizes", ())
    tokens = recurrent_tokens(input_shape, batch_sizes)
    return 2 * recurrent_forward_flops(tokens, [w_ih, w_hh])


def cudnn_rnn_flop(
    input_shape: Shape, weights: Sequence[Shape], *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """cuDNN RNN/LSTM/GRU, all layers and directions (projection matrices included)."""
    batch_sizes = args[12] if len(args) > 12 else kwargs.get("batch_sizes", ())
    return recurrent_forward_flops(recurrent_tokens(input_shape, batch_sizes), weights)


def cudnn_rnn_backward_flop(
    input_shape: Shape, weights: Sequence[Shape], *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """Input/hidden gradients and weight gradients, each as costly as the forward."""
    batch_sizes = args[16] if len(args) > 16 else kwargs.get("batch_sizes", ())
    mask = args[19] if len(args) > 19 else kwargs.get("output_mask", (True,) * 4)
    forward = recurrent_forward_flops(recurrent_tokens(input_shape, batch_sizes), weights)
    return forward * (int(any(mask[:3])) + int(mask[3]))


def cpu_flash_attention_flop(
    query: Shape, key: Shape, value: Shape, *args: Any, out_shape: Any = None, **kwargs: Any
) -> int:
    """CPU fused attention: the two batched products, as the counter does on GPU."""
    return sdpa_flop_count(query, key, value)


def cpu_flash_attention_backward_flop(
    grad_out: Shape,
    query: Shape,
    key: Shape,
    value: Shape,
    *args: Any,
    out_shape: Any = None,
    **kwargs: Any,
) -> int:
    """Recomputed scores plus four gradient products, as the counter does on GPU."""
    return sdpa_backward_flop_count(grad_out, query, key, value)


# Operator -> formula over argument shapes (FlopCounterMode's ``custom_mapping``).
EXTRA_FORMULAS: dict[Any, Callable[..., int]] = {
    aten.mkldnn_rnn_layer: mkldnn_rnn_layer_flop,
    aten.mkldnn_rnn_layer_backward: mkldnn_rnn_layer_backward_flop,
    aten._cudnn_rnn: cudnn_rnn_flop,
    aten._cudnn_rnn_backward: cudnn_rnn_backward_flop,
    aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_attention_flop,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: cpu_flash_attention_backward_flop,
}


def flop_counter() -> FlopCounterMode:
    """A silent FlopCounterMode that also knows the fused kernels above."""
    return FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)


@contextmanager
def fused_rnn_kernels_off() -> Iterator[None]:
    """Route recurrent layers through ATen's decomposed path (oneDNN and cuDNN off).

    Only the ``enabled`` switches change, and they are restored on exit. Convolutions
    are counted at ``aten.convolution`` whatever backend runs them, so their counts do
    not change; they only run slower while this is on.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # oneDNN's TF32 notice on machines without XPU
        mkldnn = torch.backends.mkldnn.set_flags(_enabled=False, _fp32_precision=None)
        cudnn = torch.backends.cudnn.set_flags(_enabled=False, _fp32_precision=None)
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.mkldnn.set_flags(_enabled=mkldnn[0], _fp32_precision=None)
            torch.backends.cudnn.set_flags(_enabled=cudnn[0], _fp32_precision=None)


# Gate blocks per recurrent mode (nn.RNNBase.mode): rows of W_ih and W_hh are G * hidden.
GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


def recurrent_flops(
    module: nn.RNNBase,
    tokens: int,
    first_rows: tuple[int, int],
    *,
    input_grad: bool,
    hidden_grad: bool = False,
) -> tuple[int, int]:
    """(forward, backward) FLOPs of one call of an ``nn.RNN``/``nn.LSTM``/``nn.GRU``.

    ``tokens`` is time steps x batch (a packed input's real steps); ``first_rows`` the
    batch rows at the first step each direction processes (the full batch; for a
    packed reverse pass, the batch at the last step). Per layer and direction, with G
    gates, hidden size H, recurrent size R (H, or the LSTM projection P) and layer
    input size I:

    - forward: 2 * tokens * (G*H*I + G*H*R + P*H): input, recurrent and projection products;
    - backward: the weight gradients (as much again), the layer input's gradient
      (2 * tokens * G*H*I, only where that input needs one: not raw data at layer 0),
      the hidden state's gradient through time (2 * (tokens - first_rows) * G*H*R: the
      initial state needs none unless given with requires_grad) and the projection's
      (2 * tokens * P*H).
    """
    gates = GATES[module.mode]
    hidden, proj = module.hidden_size, module.proj_size
    recurrent = proj or hidden
    directions = 2 if module.bidirectional else 1
    grad = torch.is_grad_enabled()
    forward = backward = 0
    # Does this layer's input need a gradient? Raw data at layer 0 does not.
    layer_input_grad = input_grad
    for layer in range(module.num_layers):
        layer_input = module.input_size if layer == 0 else recurrent * directions
        suffixes = ("", "_reverse")[:directions]
        params = dict(module.named_parameters())
        layer_trains = grad and any(
            p.requires_grad
            for name, p in params.items()
            if any(name.endswith(f"_l{layer}{suffix}") for suffix in suffixes)
        )
        for direction in range(directions):
            e_ih, e_hh = gates * hidden * layer_input, gates * hidden * recurrent
            e_hr = proj * hidden
            forward += 2 * tokens * (e_ih + e_hh + e_hr)
            if not (grad and (layer_trains or layer_input_grad or hidden_grad)):
                continue
            suffix = f"_l{layer}{suffixes[direction]}"
            trains = {k: params[f"weight_{k}{suffix}"].requires_grad for k in ("ih", "hh")}
            backward += 2 * tokens * (e_ih * trains["ih"] + e_hh * trains["hh"])
            if proj:  # the projection's weight gradient, and the gradient through it
                backward += 2 * tokens * e_hr * (1 + params[f"weight_hr{suffix}"].requires_grad)
            if layer_input_grad:
                backward += 2 * tokens * e_ih
            skipped = 0 if hidden_grad else first_rows[direction]
            backward += 2 * (tokens - skipped) * e_hh
        layer_input_grad = grad and (layer_input_grad or hidden_grad or layer_trains)
    return forward, backward


def _zeros_tied(like: Tensor, shape: Sequence[int], anchor: Tensor) -> Tensor:
    return like.new_zeros(tuple(shape)) + anchor


def _recurrent_stand_in(module: nn.RNNBase, tally: list[int], input: Any, hx: Any = None) -> Any:
    """Count a recurrent call by formula and return outputs of the right shapes.

    The outputs are zeros tied to the input, initial state and weights (times zero),
    so the layers around the module see the same shapes and the same gradient flow,
    and the counter sees their FLOPs exactly as in a real step.
    """
    directions = 2 if module.bidirectional else 1
    out_size = (module.proj_size or module.hidden_size) * directions
    states = directions * module.num_layers
    hidden_states = [] if hx is None else list(hx) if isinstance(hx, (tuple, list)) else [hx]
    if isinstance(input, PackedSequence):
        data, batch_sizes = input.data, [int(b) for b in input.batch_sizes]
        tokens, batch = data.shape[0], batch_sizes[0]
        first_rows = (batch_sizes[0], batch_sizes[-1])
    else:
        data = input
        batched = input.dim() == 3
        steps, batch = (
            (input.shape[1], input.shape[0])
            if batched and module.batch_first
            else (input.shape[0], input.shape[1] if batched else 1)
        )
        tokens, first_rows = steps * batch, (batch, batch)
    forward, backward = recurrent_flops(
        module,
        tokens,
        first_rows,
        input_grad=data.requires_grad,
        hidden_grad=any(h.requires_grad for h in hidden_states),
    )
    tally.append(forward + backward)
    anchor = data.sum() * 0
    for tensor in (*module.parameters(), *hidden_states):
        anchor = anchor + tensor.sum() * 0
    if isinstance(input, PackedSequence):
        output: Any = PackedSequence(
            _zeros_tied(data, (tokens, out_size), anchor),
            input.batch_sizes,
            input.sorted_indices,
            input.unsorted_indices,
        )
        state_shape: tuple[int, ...] = (states, batch)
    elif input.dim() == 3:
        shape = (batch, steps, out_size) if module.batch_first else (steps, batch, out_size)
        output = _zeros_tied(data, shape, anchor)
        state_shape = (states, batch)
    else:
        output = _zeros_tied(data, (steps, out_size), anchor)
        state_shape = (states,)
    h_n = _zeros_tied(data, (*state_shape, module.proj_size or module.hidden_size), anchor)
    if module.mode == "LSTM":
        return output, (h_n, _zeros_tied(data, (*state_shape, module.hidden_size), anchor))
    return output, h_n


@contextmanager
def recurrent_formulas(model: nn.Module) -> Iterator[list[int]]:
    """Within this, recurrent modules of ``model`` count themselves by formula into a list."""
    tally: list[int] = []
    patched = [m for m in model.modules() if isinstance(m, nn.RNNBase)]
    for module in patched:
        # An instance attribute shadows the class's forward; hooks still run.
        module.forward = functools.partial(_recurrent_stand_in, module, tally)
    try:
        yield tally
    finally:
        for module in patched:
            del module.forward


def forward(model: nn.Module, batch: Batch) -> Tensor:
    """Call a model the way the training loop does."""
    return model(batch.x, batch.lengths) if batch.lengths is not None else model(batch.x)


def training_step_flops(
    model: nn.Module, batch: Batch, loss: Callable[[Tensor, Batch], Tensor]
) -> int:
    """Forward + backward FLOPs of one step of ``model`` on ``batch`` (same device).

    Recurrent modules are counted by ``recurrent_flops`` (their outputs are stand-in
    zeros), everything else by the counter. Gradients accumulate into ``model``: pass a
    copy you can throw away.
    """
    with recurrent_formulas(model) as recurrent, flop_counter() as counter:
        loss(forward(model, batch), batch).backward()
    return int(counter.get_total_flops()) + sum(recurrent)
