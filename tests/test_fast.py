"""Fast mode: bf16 autocast, channels-last and a compiled step train to the same place.

The compiled path runs with the ``aot_eager`` backend here (it traces forward and
backward as inductor does, without minutes of C++ code generation on a loaded 2-core
machine); `make bench` (bench/fast_speed.py) measures inductor's speed.
"""

from __future__ import annotations

import pytest
import torch

from gradbench.config import TrainConfig
from gradbench.fast import BACKEND_ENV, cpu_has_bf16
from gradbench.models.build import build_model, parse_model_arg, resolve_options
from gradbench.plugins import load_plugins
from gradbench.train import train

SEEDS = (0, 1, 2)


def final_loss(task_factory, seed: int, fast: bool) -> tuple[float, dict, torch.nn.Module]:
    load_plugins()
    task = task_factory(train_size=128, shape=(1, 8, 8), classes=4)
    spec = parse_model_arg("plain-8:width=4")
    config = TrainConfig(steps=24, batch_size=16, lr=0.05, probes="off", device="cpu", fast=fast)
    torch.manual_seed(seed)
    model = build_model(spec.name, task.input_spec(), resolve_options(spec, {}, "image"))
    result = train(task, model, config, seed=seed, device=torch.device("cpu"))
    return result.final_train_loss, result.fast, model


@pytest.mark.slow
def test_fast_mode_stays_within_the_seed_spread_of_fp32_eager(make_fake_task, monkeypatch):
    monkeypatch.setenv(BACKEND_ENV, "aot_eager")
    eager = [final_loss(make_fake_task, seed, fast=False)[0] for seed in SEEDS]
    spread = max(eager) - min(eager)
    assert spread > 0
    fast_runs = [final_loss(make_fake_task, seed, fast=True) for seed in SEEDS]
    for seed, (loss, info, model) in zip(SEEDS, fast_runs, strict=True):
        assert abs(loss - eager[seed]) <= spread, (seed, loss, eager)
        assert info["compiled"] and info["channels_last"]
        assert info["bf16_autocast"] == cpu_has_bf16()  # emulated bf16 would only be slower
        assert info["compile_seconds"] > 0
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_fast_mode_leaves_probed_and_sequence_runs_uncompiled(make_fake_task):
    from gradbench.fast import compile_decision

    task = make_fake_task()
    assert compile_decision(task, TrainConfig(steps=1, probes="off")) == (True, None)
    compiled, reason = compile_decision(task, TrainConfig(steps=1, probes="default"))
    assert not compiled and "probes on" in reason

    class Sequence:
        def input_spec(self):
            from gradbench.task import InputSpec

            return InputSpec(kind="sequence", shape=(20, 2), num_outputs=1)

    compiled, reason = compile_decision(Sequence(), TrainConfig(steps=1, probes="off"))
    assert not compiled and "variable lengths" in reason
