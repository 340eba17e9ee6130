"""Per-layer grouping, per-layer gradient norms and the first/last ratio, against naive autograd."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradbench.probes.layer_norms import (
    NORM_FLOOR,
    LayerIndex,
    first_last_ratio_log10,
    layer_grad_norms,
)
from gradbench.probes.layers import model_layers


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 3)
    )


def test_layers_are_parameter_owning_modules_in_depth_order():
    layers = model_layers(small_net())
    assert [layer.name for layer in layers] == ["0", "1", "3", "5"]
    assert [layer.kind for layer in layers] == ["weight", "norm", "weight", "weight"]
    assert [len(layer.params) for layer in layers] == [2, 2, 2, 2]


def test_stacked_recurrent_layers_are_split_and_shared_weights_counted_once():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.rnn = nn.LSTM(4, 4, num_layers=2)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight

    layers = model_layers(Tied())
    assert [layer.name for layer in layers] == ["embed", "rnn.l0", "rnn.l1"]
    assert [len(layer.params) for layer in layers] == [1, 4, 4]


def test_layer_grad_norms_match_a_naive_reference():
    model = small_net()
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    index = LayerIndex(model_layers(model))
    got = layer_grad_norms(index)
    for layer, value in zip(index.layers, got, strict=True):
        module = model.get_submodule(layer.name)
        naive = torch.cat([p.grad.flatten() for p in module.parameters()]).norm().item()
        assert value == pytest.approx(naive, rel=1e-6)
    assert got.dtype == np.float64 and np.all(got > 0)


def test_a_layer_without_gradient_has_norm_zero():
    model = small_net()
    model[5].weight.requires_grad_(True)
    model(torch.randn(4, 6)).sum().backward()
    model[0].weight.grad = None
    model[0].bias.grad = None
    assert layer_grad_norms(LayerIndex(model_layers(model)))[0] == 0.0


def test_first_last_ratio_uses_weight_layers_only_and_floors_zero():
    kinds = ["weight", "norm", "weight", "norm"]
    assert first_last_ratio_log10(np.array([1e-4, 50.0, 1e-1, 1e-9]), kinds) == pytest.approx(-3)
    assert first_last_ratio_log10(np.array([0.0, 1.0, 1.0, 1.0]), kinds) == pytest.approx(
        math.log10(NORM_FLOOR)
    )
    assert math.isnan(first_last_ratio_log10(np.array([1.0, math.inf, math.nan]), kinds[:3]))
    assert math.isnan(first_last_ratio_log10(np.array([1.0]), ["weight"]))
