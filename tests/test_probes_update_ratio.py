"""Update-to-weight ratio per layer against a naive computation around an optimiser step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gradbench.probes.layer_norms import LayerIndex
from gradbench.probes.layers import model_layers
from gradbench.probes.update_ratio import snapshot, update_ratios


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_update_ratio_matches_naive(optimizer):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 2))
    index = LayerIndex(model_layers(model))
    opt = (
        torch.optim.SGD(model.parameters(), lr=0.1)
        if optimizer == "sgd"
        else torch.optim.Adam(model.parameters(), lr=1e-2)
    )
    model(torch.randn(5, 4)).pow(2).mean().backward()
    before_naive = {n: p.detach().clone() for n, p in model.named_parameters()}
    before = snapshot(index)
    opt.step()
    ratios, weight_norms = update_ratios(index, before)
    for i, prefix in enumerate(["0.", "1.", "2."]):
        names = [n for n in before_naive if n.startswith(prefix)]
        old = torch.cat([before_naive[n].flatten() for n in names])
        new = torch.cat([dict(model.named_parameters())[n].detach().flatten() for n in names])
        assert ratios[i] == pytest.approx(((new - old).norm() / old.norm()).item(), rel=1e-5)
        assert weight_norms[i] == pytest.approx(old.norm().item(), rel=1e-6)
    assert np.all(ratios > 0)


def test_zero_weights_give_nan_not_inf():
    layer = nn.Linear(3, 3, bias=False)
    nn.init.zeros_(layer.weight)
    index = LayerIndex(model_layers(layer))
    before = snapshot(index)
    with torch.no_grad():
        layer.weight.add_(1.0)
    ratios, _ = update_ratios(index, before)
    assert np.isnan(ratios[0])
