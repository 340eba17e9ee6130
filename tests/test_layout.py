"""The CPU's default layout: convolution weights channels-last, arithmetic unchanged.

gradbench.layout puts convolution weights in channels-last on the CPU (oneDNN's
layout; 1.1-2.2x faster steps, bench/layout_speed.py). These tests check that it is
applied and recorded, and that it moves training only at the rounding level: the same
run in PyTorch's contiguous layout ends within 1e-4 of it.
"""

from __future__ import annotations

import torch

from gradbench import layout
from gradbench.config import TrainConfig
from gradbench.models.build import build_model, parse_model_arg, resolve_options
from gradbench.plugins import load_plugins
from gradbench.train import train


def run(task, model_arg: str, kind: str, steps: int = 12):
    load_plugins()
    spec = parse_model_arg(model_arg)
    config = TrainConfig(steps=steps, batch_size=16, lr=0.05, probes="default", device="cpu")
    torch.manual_seed(0)
    model = build_model(spec.name, task.input_spec(), resolve_options(spec, {}, kind))
    return train(task, model, config, seed=0, device=torch.device("cpu")), model


def test_conv_models_train_channels_last_and_say_so(make_fake_task):
    task = make_fake_task(train_size=64, shape=(1, 8, 8), classes=4)
    result, model = run(task, "resnet-8:width=4", "image")
    assert result.memory_format == layout.CHANNELS_LAST
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # (A 1-channel kernel is both layouts at once; the others are channels-last only.)
    assert sum(not c.weight.is_contiguous() for c in convs) == len(convs) - 1


def test_3d_convolutions_get_the_3d_layout_and_models_without_any_keep_theirs():
    load_plugins()
    conv3d = torch.nn.Sequential(torch.nn.Conv3d(3, 4, 3), torch.nn.ReLU())
    assert layout.apply_default(conv3d, torch.device("cpu")) == layout.CHANNELS_LAST
    assert conv3d[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    recurrent = torch.nn.LSTM(4, 8)
    assert layout.apply_default(recurrent, torch.device("cpu")) == layout.CONTIGUOUS
    assert all(p.is_contiguous() for p in recurrent.parameters())
    # Elsewhere than the CPU, nothing is converted (cuDNN's fp32 gains only with --fast).
    conv2d = torch.nn.Conv2d(3, 4, 3)
    assert layout.apply_default(conv2d, torch.device("meta")) == layout.CONTIGUOUS
    assert conv2d.weight.is_contiguous()


def test_the_layout_moves_training_only_at_the_rounding_level(make_fake_task, monkeypatch):
    task = make_fake_task(train_size=64, shape=(1, 8, 8), classes=4)
    fast_layout, _ = run(task, "plain-8:width=4", "image")
    monkeypatch.setattr(layout, "apply_default", lambda model, device: layout.CONTIGUOUS)
    contiguous, model = run(task, "plain-8:width=4", "image")
    assert contiguous.memory_format == layout.CONTIGUOUS
    assert all(p.is_contiguous() for p in model.parameters())
    assert fast_layout.losses.shape == contiguous.losses.shape == (12,)
    # Not bit-identical (oneDNN sums in another order), but equal to rounding.
    torch.testing.assert_close(
        torch.from_numpy(fast_layout.losses), torch.from_numpy(contiguous.losses), rtol=1e-4, atol=0
    )
    torch.testing.assert_close(
        torch.from_numpy(fast_layout.grad_norms),
        torch.from_numpy(contiguous.grad_norms),
        rtol=1e-4,
        atol=0,
    )
