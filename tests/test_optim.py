"""Optimisers beyond Adam and the one-cycle and plateau schedules (gradbench.optim)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gradbench.train as train_module
from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.optim import (
    PLATEAU_FACTOR,
    PLATEAU_PATIENCE,
    Schedule,
    evaluation_interval,
    make_optimizer,
)
from gradbench.train import train


def tiny_model(task) -> nn.Module:
    torch.manual_seed(0)
    spec = task.input_spec()
    return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(spec.shape)), spec.num_outputs))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("rmsprop", torch.optim.RMSprop),
        ("adagrad", torch.optim.Adagrad),
        ("radam", torch.optim.RAdam),
        ("nadam", torch.optim.NAdam),
    ],
)
def test_new_optimizers_are_torch_s_own_and_train(make_fake_task, name, kind) -> None:
    task = make_fake_task()
    model = tiny_model(task)
    config = TrainConfig(steps=15, batch_size=16, optimizer=name, lr=0.01, weight_decay=1e-4)
    optimizer = make_optimizer(model, config)
    assert type(optimizer) is kind
    assert optimizer.defaults["lr"] == 0.01 and optimizer.defaults["weight_decay"] == 1e-4
    result = train(task, model, config, seed=0, device=torch.device("cpu"))
    assert np.isfinite(result.losses).all()
    assert result.losses[-3:].mean() < result.losses[:3].mean()


def test_optimizers_take_different_steps(make_fake_task) -> None:
    task = make_fake_task()
    after = {}
    for name in ("sgd", "rmsprop", "adagrad", "radam", "nadam"):
        model = tiny_model(task)
        config = TrainConfig(steps=2, batch_size=16, optimizer=name, lr=0.01)
        train(task, model, config, seed=0, device=torch.device("cpu"))
        after[name] = model[1].weight.detach().clone()
    names = list(after)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not torch.allclose(after[a], after[b]), (a, b)


def schedule_for(config: TrainConfig, total: int | None, higher: bool = True):
    model = nn.Linear(2, 2)
    optimizer = make_optimizer(model, config)
    return optimizer, Schedule(optimizer, config, total, "test_accuracy", higher)


def lrs_over(optimizer, schedule, steps: int) -> list[float]:
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.after_step()
    return seen


def test_onecycle_climbs_to_the_base_rate_and_anneals() -> None:
    config = TrainConfig(steps=100, schedule="onecycle", lr=0.1)
    optimizer, schedule = schedule_for(config, 100)
    momentum_at_start = optimizer.param_groups[0]["momentum"]
    lrs = lrs_over(optimizer, schedule, 30)
    momentum_at_peak = optimizer.param_groups[0]["momentum"]
    lrs += lrs_over(optimizer, schedule, 70)
    peak = int(np.argmax(lrs))
    assert lrs[0] == pytest.approx(0.1 / 25)  # torch's div_factor
    assert peak == pytest.approx(30, abs=1) and lrs[peak] == pytest.approx(0.1, rel=1e-3)
    assert lrs[-1] < 1e-4
    # SGD with momentum: the momentum cycles against the rate (0.95 down to 0.85).
    assert momentum_at_start == 0.95 and momentum_at_peak == pytest.approx(0.85, abs=1e-3)


def test_onecycle_warmup_steps_set_the_climb() -> None:
    config = TrainConfig(steps=100, schedule="onecycle", lr=0.1, warmup_steps=10)
    optimizer, schedule = schedule_for(config, 100)
    assert int(np.argmax(lrs_over(optimizer, schedule, 100))) == pytest.approx(10, abs=1)


def test_onecycle_works_with_an_optimizer_without_momentum() -> None:
    config = TrainConfig(steps=10, schedule="onecycle", optimizer="adagrad", lr=0.1)
    optimizer, schedule = schedule_for(config, 10)
    assert len(lrs_over(optimizer, schedule, 10)) == 10


def test_onecycle_needs_a_step_budget() -> None:
    with pytest.raises(UsageError, match="onecycle needs a --steps or --epochs"):
        schedule_for(TrainConfig(seconds=5, schedule="onecycle"), None)


def test_plateau_evaluates_ten_times_unless_told_otherwise() -> None:
    # A time budget has no step count to spread the evaluations over.
    with pytest.raises(UsageError, match="plateau .* needs --eval-every"):
        TrainConfig(seconds=5, schedule="plateau")
    TrainConfig(seconds=5, schedule="plateau", eval_every=5)
    assert evaluation_interval(TrainConfig(steps=100, schedule="plateau"), 100) == 10
    assert evaluation_interval(TrainConfig(steps=5, schedule="plateau"), 5) == 1
    assert evaluation_interval(TrainConfig(steps=100, schedule="plateau", eval_every=7), 100) == 7
    assert evaluation_interval(TrainConfig(steps=100, schedule="cosine"), 100) is None


def test_plateau_lowers_the_rate_only_when_the_metric_stalls() -> None:
    config = TrainConfig(steps=100, schedule="plateau", eval_every=1, lr=0.1)
    optimizer, schedule = schedule_for(config, 100, higher=True)
    for accuracy in (0.1, 0.2, 0.3, 0.4):  # improving: no change
        schedule.after_eval({"test_accuracy": accuracy})
    assert optimizer.param_groups[0]["lr"] == 0.1
    for _ in range(PLATEAU_PATIENCE + 1):  # stalled for more than the patience
        schedule.after_eval({"test_accuracy": 0.4})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * PLATEAU_FACTOR)
    # Steps in between do not undo the reduction.
    lrs_over(optimizer, schedule, 5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * PLATEAU_FACTOR)


def test_plateau_follows_the_metric_direction() -> None:
    config = TrainConfig(steps=100, schedule="plateau", eval_every=1, lr=0.1)
    optimizer, schedule = schedule_for(config, 100, higher=False)
    for loss in (1.0, 0.9, 0.8, 0.7, 0.6):  # a falling loss is progress
        schedule.after_eval({"test_accuracy": loss})
    assert optimizer.param_groups[0]["lr"] == 0.1


def test_plateau_waits_for_the_warmup_to_end() -> None:
    config = TrainConfig(steps=100, schedule="plateau", eval_every=1, lr=0.1, warmup_steps=4)
    optimizer, schedule = schedule_for(config, 100)
    for _ in range(10):  # stalled evaluations during warm-up are ignored
        schedule.after_eval({"test_accuracy": 0.5})
    assert lrs_over(optimizer, schedule, 6) == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_plateau_in_the_training_loop_reads_the_evaluations(make_fake_task, monkeypatch) -> None:
    """A task whose evaluation never improves: after the patience the rate falls."""
    task = make_fake_task()
    task.evaluate = lambda model, device, batch_size: {"test_accuracy": 0.5, "test_loss": 1.0}
    built = []

    def capture(model, config):
        built.append(make_optimizer(model, config))
        return built[-1]

    monkeypatch.setattr(train_module, "make_optimizer", capture)
    config = TrainConfig(steps=12, batch_size=16, schedule="plateau", lr=0.05, optimizer="sgd")
    result = train(task, tiny_model(task), config, seed=0, device=torch.device("cpu"))
    # No --eval-every: every 12 // 10 = 1 step, the last one being the final evaluation.
    assert result.steps == 12 and [e["step"] for e in result.evals] == list(range(1, 13))
    # 11 evaluations during training: the first sets the best; with a patience of 2 the
    # rate falls after every third evaluation without progress: 3 times.
    assert built[0].param_groups[0]["lr"] == pytest.approx(0.05 * PLATEAU_FACTOR**3)
