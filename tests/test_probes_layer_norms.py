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
from gradbench.probes.layers import gradient_ends, model_layers


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


def test_first_last_ratio_between_the_named_ends_and_floors_zero():
    ends = (0, 2)
    assert first_last_ratio_log10(np.array([1e-4, 50.0, 1e-1, 1e-9]), ends) == pytest.approx(-3)
    assert first_last_ratio_log10(np.array([0.0, 1.0, 1.0, 1.0]), ends) == pytest.approx(
        math.log10(NORM_FLOOR)
    )
    assert math.isnan(first_last_ratio_log10(np.array([1.0, math.inf, math.nan]), ends))
    assert math.isnan(first_last_ratio_log10(np.array([1.0]), None))


def test_rms_per_element_makes_layers_of_different_sizes_comparable():
    # Every gradient entry 0.1: raw norms differ by sqrt(size), RMS does not.
    model = nn.Sequential(nn.Linear(100, 50), nn.Linear(50, 2))
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.1)
    index = LayerIndex(model_layers(model))
    norms = layer_grad_norms(index)
    assert norms[0] / norms[1] == pytest.approx(math.sqrt(5050 / 102), rel=1e-4)  # float32
    np.testing.assert_allclose(index.rms(norms), [0.1, 0.1], rtol=1e-5)


class Encoder(nn.Module):
    """A Transformer-like model: a position table held by the model itself, an embedding."""

    def __init__(self):
        super().__init__()
        self.position = nn.Parameter(torch.zeros(8, 4))
        self.embed = nn.Embedding(10, 4)
        self.project = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.head = nn.Linear(4, 2)


def test_ends_are_weight_layers_never_the_root_a_table_or_an_embedding():
    model = Encoder()
    layers = model_layers(model)
    kinds = {layer.name: layer.kind for layer in layers}
    assert kinds == {
        "model": "other",
        "embed": "embedding",
        "project": "weight",
        "norm": "norm",
        "head": "weight",
    }
    first, last = gradient_ends(model, layers)
    assert (layers[first].name, layers[last].name) == ("project", "head")


def test_a_model_can_name_its_own_ends():
    model = Encoder()
    model.gradient_ends = ("embed", "head")
    layers = model_layers(model)
    first, last = gradient_ends(model, layers)
    assert (layers[first].name, layers[last].name) == ("embed", "head")
    stacked = nn.Module()
    stacked.rnn = nn.LSTM(3, 4, num_layers=3)
    stacked.gradient_ends = ("rnn", "rnn")
    layers = model_layers(stacked)
    first, last = gradient_ends(stacked, layers)
    assert (layers[first].name, layers[last].name) == ("rnn.l0", "rnn.l2")


def test_gradbench_models_name_real_layers_as_ends():
    from gradbench.models.build import ModelSpec, build_model, resolve_options
    from gradbench.task import InputSpec

    tokens = InputSpec(kind="tokens", shape=(12,), num_outputs=2, vocab_size=30, pad_index=0)
    image = InputSpec(kind="image", shape=(1, 8, 8), num_outputs=3)
    expected = {
        ("transformer", tokens): ("project", "readout.head"),
        ("plain-8", image): ("stem.0", "head"),
        ("mlp-4", image): ("input.1", "head"),
    }
    for (name, spec), ends in expected.items():
        torch.manual_seed(0)
        model = build_model(name, spec, resolve_options(ModelSpec(name, {}), {}, spec.kind))
        layers = model_layers(model)
        first, last = gradient_ends(model, layers)
        assert (layers[first].name, layers[last].name) == ends, name
