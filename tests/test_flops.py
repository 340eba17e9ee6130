"""FLOP counting: hand counts on tiny cases, and the recurrent formula against the counter.

The reference for a recurrent layer is ``FlopCounterMode``'s own op-by-op count of ATen's
decomposed recurrence (fused kernels off): the formula must agree exactly, for every
cell, stacking, direction, packing and gradient need, so that RNN, GRU and LSTM are
counted by one convention whichever kernel trains them.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from torch.utils.flop_counter import FlopCounterMode

from gradbench.flops import (
    EXTRA_FORMULAS,
    cudnn_rnn_backward_flop,
    cudnn_rnn_flop,
    flop_counter,
    fused_rnn_kernels_off,
    recurrent_flops,
    recurrent_formulas,
    training_step_flops,
)
from gradbench.task import Batch

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
LENGTHS = torch.tensor([5, 3, 3, 1])  # batch 4, T = 5: packed tokens 12


def mse(output: torch.Tensor, batch: Batch) -> torch.Tensor:
    return F.mse_loss(output, batch.y)


def test_two_linear_layers_match_a_hand_count() -> None:
    # Linear(5, 7) -> ReLU -> Linear(7, 3) on a batch of 4; a multiply-add is 2 FLOPs.
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    batch = Batch(torch.randn(4, 5), torch.randn(4, 3))
    forward = 2 * 4 * (5 * 7 + 7 * 3)  # 448
    backward = (
        2 * 4 * 7 * 3  # second layer, weight gradient
        + 2 * 4 * 7 * 3  # second layer, input gradient
        + 2 * 4 * 5 * 7  # first layer, weight gradient (raw data needs no gradient)
    )
    assert training_step_flops(model, batch, mse) == forward + backward == 1064


@pytest.mark.parametrize(
    "cell, hand_count",
    [
        # B=2, T=5 (10 tokens), input 3, hidden 4, G gates: forward 2*10*G*4*(3+4);
        # backward: weight gradients (as much again) + the hidden state's gradient
        # through time for the 8 rows after the first step, 2*8*G*4*4.
        ("rnn", 2 * 10 * 4 * 7 * 2 + 2 * 8 * 4 * 4),  # 1376
        ("gru", 2 * 10 * 12 * 7 * 2 + 2 * 8 * 12 * 4),  # 4128
        ("lstm", 2 * 10 * 16 * 7 * 2 + 2 * 8 * 16 * 4),  # 5504
    ],
)
def test_recurrent_layer_matches_a_hand_count(cell: str, hand_count: int) -> None:
    torch.manual_seed(0)
    layer = CELLS[cell](3, 4, batch_first=True)
    x = torch.randn(2, 5, 3)
    # The counter, op by op, on ATen's decomposed recurrence:
    with fused_rnn_kernels_off(), flop_counter() as counter:
        layer(x)[0].sum().backward()
    assert counter.get_total_flops() == hand_count
    # The formula gradbench counts with:
    forward, backward = recurrent_flops(layer, 10, (2, 2), input_grad=False)
    assert forward + backward == hand_count


def _configurations() -> list[tuple]:
    grid = itertools.product(CELLS, (1, 2), (False, True), (False, True), (False, True))
    base = [
        (cell, layers, bi, packed, grad, True, 0, False, False)
        for cell, layers, bi, packed, grad in grid
    ]
    special = [
        ("lstm", 2, True, True, False, False, 0, False, False),  # time-major
        ("gru", 1, False, False, True, False, 0, False, False),
        ("lstm", 2, True, True, False, True, 2, False, False),  # projection, packed
        ("lstm", 1, False, False, True, True, 2, False, False),
        ("rnn", 2, True, True, False, True, 0, True, False),  # initial state needs grad
        ("lstm", 1, True, False, False, True, 0, True, False),
        ("gru", 2, False, False, True, True, 0, False, True),  # unbatched
        ("lstm", 1, True, False, False, True, 0, True, True),
    ]
    return base + special


@pytest.mark.parametrize(
    "cell, layers, bidirectional, packed, input_grad, batch_first, proj, hidden_grad, unbatched",
    _configurations(),
)
def test_recurrent_formula_equals_the_counters_op_by_op_count(
    cell, layers, bidirectional, packed, input_grad, batch_first, proj, hidden_grad, unbatched
) -> None:
    torch.manual_seed(0)
    extra = {"proj_size": proj} if proj else {}
    layer = CELLS[cell](3, 4, layers, batch_first=batch_first, bidirectional=bidirectional, **extra)
    x = torch.randn(4, 5, 3) if batch_first else torch.randn(5, 4, 3)
    if unbatched:
        x = torch.randn(5, 3)
    x.requires_grad_(input_grad)
    states = (2 if bidirectional else 1) * layers
    hx = None
    if hidden_grad:
        shape = (states,) if unbatched else (states, 4)
        h0 = torch.zeros(*shape, proj or 4, requires_grad=True)
        hx = (h0, torch.zeros(*shape, 4, requires_grad=True)) if cell == "lstm" else h0

    def step() -> None:
        inputs = (
            pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
            if packed
            else x
        )
        output, final = layer(inputs, hx)
        h_n = final[0] if cell == "lstm" else final
        (output.data if packed else output).sum().add(h_n.sum()).backward()

    with fused_rnn_kernels_off(), flop_counter() as reference:
        step()
    with recurrent_formulas(layer) as tally, flop_counter() as rest:
        step()
    assert "forward" not in vars(layer)  # the stand-in is gone again
    assert sum(tally) > 0
    assert sum(tally) + rest.get_total_flops() == reference.get_total_flops()


def test_frozen_recurrent_weights_need_no_weight_gradients() -> None:
    layer = nn.GRU(3, 4)
    trained = sum(recurrent_flops(layer, 10, (2, 2), input_grad=False))
    for param in layer.parameters():
        param.requires_grad_(False)
    forward, backward = recurrent_flops(layer, 10, (2, 2), input_grad=False)
    assert backward == 0
    assert forward == 2 * 10 * 12 * 7 < trained
    with torch.no_grad():
        assert recurrent_flops(layer, 10, (2, 2), input_grad=True)[1] == 0


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this build")
def test_fused_cpu_lstm_is_invisible_to_the_bare_counter_and_counted_by_ours() -> None:
    # The gap this module exists for: CPU nn.LSTM is one oneDNN kernel the counter skips.
    layer = nn.LSTM(3, 4, num_layers=2, batch_first=True)
    x = torch.randn(2, 5, 3)
    with FlopCounterMode(display=False) as bare:
        layer(x)[0].sum().backward()
    assert bare.get_total_flops() == 0
    with flop_counter() as ours:
        layer(x)[0].sum().backward()
    # Every weight matrix meets every token once: layer 0 16*3 + 16*4, layer 1 16*4 + 16*4.
    forward = 2 * 10 * (16 * 3 + 16 * 4 + 16 * 4 + 16 * 4)  # 4800
    counts = {str(op): n for op, n in ours.get_flop_counts()["Global"].items()}
    assert counts == {
        "aten.mkldnn_rnn_layer": forward,
        "aten.mkldnn_rnn_layer_backward": 2 * forward,
    }


def test_cudnn_formulas_by_hand() -> None:
    # Shapes as cuDNN's op receives them: a 2-layer bidirectional GRU, input 3, hidden 4.
    weights = []
    for layer in range(2):
        width = 3 if layer == 0 else 8
        for _ in range(2):  # directions
            weights += [(12, width), (12, 4), (12,), (12,)]
    entries = 2 * (12 * 3 + 12 * 4) + 2 * (12 * 8 + 12 * 4)  # 456
    padded = (5, 2, 3)  # T, B, I
    args = [4, None, (4, 2, 4), None, 3, 4, 0, 2, False, 0.0, True, True, []]
    assert cudnn_rnn_flop(padded, weights, *args) == 2 * 10 * entries
    packed_args = args[:12] + [[2, 2, 1]]  # packed: 5 real tokens
    assert cudnn_rnn_flop((5, 3), weights, *packed_args) == 2 * 5 * entries
    back = [4, None, (4, 2, 4), None, None, None, None, None, 3, 4, 0, 2, False, 0.0, True]
    back += [True, [], None, None]
    assert cudnn_rnn_backward_flop(padded, weights, *back, [False, False, False, True]) == (
        2 * 10 * entries
    )
    assert cudnn_rnn_backward_flop(padded, weights, *back, [True, True, False, True]) == (
        4 * 10 * entries
    )
    assert set(EXTRA_FORMULAS) >= {torch.ops.aten._cudnn_rnn, torch.ops.aten._cudnn_rnn_backward}


def test_cpu_attention_kernel_matches_a_hand_count() -> None:
    # batch*heads = 4, 5 queries and keys, head size 4: one product is 2*4*5*5*4 = 800 FLOPs.
    q = torch.randn(2, 2, 5, 4, requires_grad=True)
    with FlopCounterMode(display=False) as bare:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    with flop_counter() as ours:
        F.scaled_dot_product_attention(q, q, q).sum().backward()
    assert ours.get_total_flops() == 2 * 800 + 5 * 800  # scores, values; backward recomputes
    assert bare.get_total_flops() in (0, ours.get_total_flops())  # 0 on CPU as of torch 2.14


def test_fused_kernel_switches_are_restored() -> None:
    before = (torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled)
    with fused_rnn_kernels_off():
        assert not torch.backends.mkldnn.enabled and not torch.backends.cudnn.enabled
    assert (torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled) == before
