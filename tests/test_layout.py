"""Memory layout: contiguous by default, and why (gradbench.layout).

Channels-last makes CPU convolutions 1.1-2.2x faster (bench/layout_speed.py), but
PyTorch's eager channels-last batch-norm backward on the CPU is less precise, and the
error compounds with depth. These tests pin both halves of that decision: the default
run stays contiguous and says so, fast mode uses channels-last only where the step is
compiled, and the precision gap that keeps it off is real (should a PyTorch upgrade
close it, the last test fails and the default can be revisited).
"""

from __future__ import annotations

import copy

import torch

from gradbench import layout
from gradbench.config import TrainConfig
from gradbench.models.build import build_model, parse_model_arg, resolve_options
from gradbench.plugins import load_plugins
from gradbench.train import train


def run(task, model_arg: str, **options):
    load_plugins()
    spec = parse_model_arg(model_arg)
    config = TrainConfig(steps=4, batch_size=16, lr=0.05, device="cpu", **options)
    torch.manual_seed(0)
    model = build_model(spec.name, task.input_spec(), resolve_options(spec, {}, "image"))
    return train(task, model, config, seed=0, device=torch.device("cpu")), model


def test_runs_train_contiguous_by_default_and_say_so(make_fake_task):
    task = make_fake_task(train_size=64, shape=(1, 8, 8), classes=4)
    result, model = run(task, "resnet-8:width=4")
    assert result.memory_format == layout.CONTIGUOUS
    assert all(p.is_contiguous() for p in model.parameters())


def test_fast_mode_keeps_eager_cpu_runs_contiguous(make_fake_task):
    """With probes on, fast mode does not compile; eager channels-last would cost the
    gradients (and the probes that read them) their precision, so it is skipped."""
    task = make_fake_task(train_size=64, shape=(1, 8, 8), classes=4)
    result, model = run(task, "resnet-8:width=4", fast=True, probes="default")
    assert not result.fast["compiled"] and not result.fast["channels_last"]
    assert "precision" in result.fast["channels_last_skipped"]
    assert result.memory_format == layout.CONTIGUOUS
    assert all(p.is_contiguous() for p in model.parameters())


def test_to_channels_last_converts_2d_and_3d_convolutions_only():
    conv3d = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.ReLU())
    assert layout.to_channels_last(conv3d)
    assert conv3d[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    conv2d = torch.nn.Conv2d(3, 4, 3)
    assert layout.to_channels_last(conv2d) and not conv2d.weight.is_contiguous()
    recurrent = torch.nn.LSTM(4, 8)
    assert not layout.to_channels_last(recurrent)
    assert all(p.is_contiguous() for p in recurrent.parameters())


def test_channels_last_batch_norm_backward_is_less_precise_on_the_cpu():
    """Against float64, on post-ReLU-like activations (a large mean): the eager
    channels-last kernel's gradients are several times further off than contiguous."""
    torch.manual_seed(0)
    x = torch.randn(32, 8, 24, 24) + 30.0
    grad = torch.randn_like(x)
    errors = {}
    reference = None
    for name in ("double", "contiguous", "channels_last"):
        norm = torch.nn.BatchNorm2d(8).train()
        inputs, upstream = x.clone(), grad.clone()
        if name == "double":
            norm, inputs, upstream = norm.double(), inputs.double(), upstream.double()
        if name == "channels_last":
            inputs = inputs.contiguous(memory_format=torch.channels_last)
            upstream = upstream.contiguous(memory_format=torch.channels_last)
        inputs.requires_grad_(True)
        norm(inputs).backward(upstream)
        grads = [inputs.grad.double(), norm.weight.grad.double()]
        if reference is None:
            reference = copy.deepcopy(grads)
            continue
        errors[name] = max(
            ((g - r).norm() / r.norm()).item() for g, r in zip(grads, reference, strict=True)
        )
    assert errors["channels_last"] > 5 * errors["contiguous"], errors
