"""Non-finite events: which step and which layer went first, for weights, loss and gradients."""

from __future__ import annotations

import math

import torch
from test_probes_toys import ToyTask, config
from torch import nn

from gradbench.probes import ProbeSet, make_probes
from gradbench.probes.layer_norms import LayerIndex
from gradbench.probes.layers import model_layers
from gradbench.probes.nonfinite import first_nonfinite_module, nonfinite_weight_layers
from gradbench.task import Batch
from gradbench.train import train


class InfGrad(torch.autograd.Function):
    """Identity forward; an infinite gradient backward (a finite loss with a broken gradient)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


class BreakAt(nn.Module):
    """Passes through; from step ``at`` on, makes the gradient below it infinite."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += 1
        return InfGrad.apply(x) if self.calls > self.at else x


def mlp(*middle: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), *middle, nn.Tanh(), nn.Linear(16, 4))


def test_nonfinite_weight_layers_in_depth_order():
    model = mlp(nn.Linear(16, 16))
    with torch.no_grad():
        model[4].weight[0, 0] = math.nan
        model[2].bias[3] = math.inf
    assert nonfinite_weight_layers(LayerIndex(model_layers(model))) == ["2", "4"]


def test_first_nonfinite_module_finds_where_the_forward_overflowed():
    model = mlp(nn.Linear(16, 16), nn.Linear(16, 16))
    with torch.no_grad():  # layer 2 outputs 3e38 (finite), layer 3 doubles it (overflow)
        model[2].weight.zero_()
        model[2].bias.fill_(3e38)
        model[3].weight.copy_(2 * torch.eye(16))
        model[3].bias.zero_()
    batch = Batch(torch.randn(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    buffers_rng = torch.get_rng_state()
    assert first_nonfinite_module(model, batch) == "3"
    assert torch.equal(torch.get_rng_state(), buffers_rng)
    assert not any(m._forward_hooks for m in model.modules())


def test_gradient_event_names_the_layer_nearest_the_loss():
    task = ToyTask()
    model = mlp(nn.Linear(16, 16), BreakAt(3), nn.Linear(16, 16))
    probes = make_probes("default", model, task, config(steps=10))
    result = train(task, model, config(steps=10), seed=0, hooks=probes)
    assert result.diverged and result.divergence == "gradient" and result.diverged_step == 3
    event = probes.summary()["nonfinite"]
    assert event["what"] == "gradient" and event["step"] == 3
    assert event["layers"] == ["1", "2"] and event["layer"] == "2"  # below the break only
    verdict, figures = probes.verdict(result)
    assert verdict == "diverged" and figures["step"] == 3 and figures["layer"] == "2"


def test_loss_event_and_its_step_with_a_learning_rate_far_too_high():
    task = ToyTask()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    cfg = config(steps=40, lr=100.0)
    probes = make_probes("default", model, task, cfg)
    result = train(task, model, cfg, seed=0, hooks=probes)
    assert result.diverged
    event = probes.summary()["nonfinite"]
    assert event is not None and event["what"] in ("loss", "gradient", "weight")
    # The event is at (weight: just before) the step where the loop stopped.
    assert result.diverged_step - 1 <= event["step"] <= result.diverged_step
    assert probes.verdict(result)[0] == "diverged"


def test_weights_broken_by_the_last_update_are_caught_at_the_end():
    model = mlp()
    probes = ProbeSet("default")
    probes.start(model, ToyTask(), config())
    with torch.no_grad():
        model[3].weight.fill_(math.nan)
    probes.finish(model, last_step=5)
    assert probes.summary()["nonfinite"] == {
        "step": 4,
        "what": "weight",
        "layer": "3",
        "layers": ["3"],
    }
