"""Saturated sigmoid/tanh units and dead ReLUs: values, and hooks present only when armed."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradbench.probes.saturation import SaturationProbe, saturated_fraction


def test_sigmoid_and_tanh_saturation_count_entries_near_the_flat_ends():
    assert saturated_fraction(torch.tensor([[0.005, 0.5], [0.995, 0.98]]), "sigmoid") == 0.5
    assert saturated_fraction(torch.tensor([[-0.999, 0.0, 0.995, 0.5]]), "tanh") == 0.5


def test_dead_relu_units_are_zero_for_every_sample():
    out = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert saturated_fraction(out, "relu") == pytest.approx(0.5)  # units 0 and 3
    conv = torch.zeros(2, 3, 2, 2)
    conv[1, 0, 0, 0] = 1.0  # one of 12 positions alive
    assert saturated_fraction(conv, "relu") == pytest.approx(11 / 12)
    assert saturated_fraction(torch.tensor([[-0.01, 0.3], [-0.2, -0.1]]), "leaky_relu") == 0.5


def test_probe_matches_a_naive_reference_and_only_hooks_when_armed():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(5, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2)
    )
    probe = SaturationProbe(model)
    assert probe.names == ["1", "3"] and probe.kinds == ["sigmoid", "relu"]
    x = torch.randn(16, 5) * 4
    model(x)
    assert probe.collect() is None  # never armed: nothing hooked, nothing measured
    assert not model[1]._forward_hooks
    probe.arm()
    model(x)
    got = probe.collect()
    assert not model[1]._forward_hooks and not model[3]._forward_hooks  # removed again
    hidden = torch.sigmoid(model[0](x))
    relu = torch.relu(model[2](hidden))
    naive_sat = ((hidden < 0.01) | (hidden > 0.99)).float().mean().item()
    naive_dead = (relu.max(dim=0).values == 0).float().mean().item()
    assert got == pytest.approx([naive_sat, naive_dead])
    assert 0 < got[0] < 1  # the scaled input pushes some but not all units to the ends


def test_eval_mode_passes_are_ignored():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh())
    probe = SaturationProbe(model)
    probe.arm()
    model.eval()
    model(torch.randn(4, 3))
    values = probe.collect()
    assert len(values) == 1 and math.isnan(values[0])
