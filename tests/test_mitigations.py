"""A shared --init never overrides a model's own recurrent initialisation."""

from __future__ import annotations

import torch

from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.task import InputSpec

SPEC = InputSpec(kind="sequence", shape=(6, 3), num_outputs=2)


def build(name: str, init: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    resolved = resolve_options(ModelSpec(name, options), {"init": init, "width": 16}, SPEC.kind)
    return build_model(name, SPEC, resolved)


def test_irnn_with_he_init_keeps_its_identity_recurrence_and_zero_biases():
    model = build("irnn", "he")
    layer = model.layers[0]
    torch.testing.assert_close(layer.weight_hh_l0.detach(), torch.eye(16))
    assert (layer.bias_ih_l0 == 0).all() and (layer.bias_hh_l0 == 0).all()
    # He applies to the other weights: the input matrix is re-drawn (fan-in 3, so
    # std sqrt(2/3), far from PyTorch's default U(-1/4, 1/4)).
    assert layer.weight_ih_l0.std() > 0.5
    assert model.readout.head.weight.std() == build("irnn", "he").readout.head.weight.std()


def test_orthogonal_recurrent_init_is_kept_under_a_shared_init():
    layer = build("rnn", "normal:0.01", recurrent_init="orthogonal").layers[0]
    w = layer.weight_hh_l0.detach()
    torch.testing.assert_close(w @ w.T, torch.eye(16), atol=1e-5, rtol=0)
    assert layer.weight_ih_l0.std() < 0.02  # the shared init reached the input weights


def test_a_model_without_its_own_recurrence_gets_the_shared_init_everywhere():
    layer = build("rnn", "orthogonal").layers[0]
    w = layer.weight_hh_l0.detach()
    gain = 5 / 3  # tanh's gain
    torch.testing.assert_close(w @ w.T, gain**2 * torch.eye(16), atol=1e-4, rtol=0)


def test_lstm_forget_bias_survives_a_shared_init():
    layer = build("lstm", "xavier").layers[0]
    assert (layer.bias_ih_l0.chunk(4)[1] == 1.0).all()
    assert (layer.bias_ih_l0.chunk(4)[0] == 0).all()
