"""The training loop on a tiny in-memory task: determinism, divergence, clipping, options."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.models.build import build_model, model_options, parse_model_arg
from gradbench.records import ResultsStore
from gradbench.runner import Plan, run_plan
from gradbench.train import TrainResult, lr_factor, make_optimizer, train

BASE = {"steps": 6, "batch_size": 16, "lr": 0.1, "device": "cpu", "probes": "off"}


def mlp(task, seed: int = 0, **options) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp-3", task.input_spec(), model_options("mlp-3") | {"width": 8} | options)


def run(task, seed: int = 0, model: nn.Module | None = None, **config) -> TrainResult:
    model = model if model is not None else mlp(task, seed)
    return train(task, model, TrainConfig(**(BASE | config)), seed=seed)


def test_same_seed_same_losses_and_metrics(make_fake_task) -> None:
    first = run(make_fake_task(), seed=3)
    second = run(make_fake_task(), seed=3)
    assert first.steps == second.steps == 6
    np.testing.assert_array_equal(first.losses, second.losses)
    np.testing.assert_array_equal(first.grad_norms, second.grad_norms)
    assert first.metrics == second.metrics
    assert first.final_train_loss == second.final_train_loss


def test_different_seed_different_run(make_fake_task) -> None:
    first = run(make_fake_task(), seed=0)
    other = run(make_fake_task(), seed=1)
    assert not np.array_equal(first.losses, other.losses)


def test_data_order_seed_alone_changes_the_run(make_fake_task) -> None:
    task = make_fake_task()
    a = train(task, mlp(task, 0), TrainConfig(**BASE), seed=0)
    b = train(task, mlp(task, 0), TrainConfig(**BASE), seed=1)  # same init, other order
    assert a.losses[0] != b.losses[0]


def test_training_learns_the_blobs(make_fake_task) -> None:
    result = run(make_fake_task(), steps=40, optimizer="adam", lr=0.02)
    assert result.losses[-5:].mean() < 0.5 * result.losses[:5].mean()
    assert result.metrics["test_accuracy"] > 0.8
    assert result.stop_reason == "steps" and not result.diverged
    assert result.epochs == pytest.approx(40 / 4)  # 64 examples / 16 per batch
    assert result.final_train_loss == pytest.approx(float(np.mean(result.losses[-20:])))


def test_recorded_gradient_norm_matches_a_naive_reference(make_fake_task) -> None:
    task = make_fake_task()
    result = run(task, steps=1)
    model = mlp(task, 0)
    batch = next(task.batches("train", 16, seed=0))
    F.cross_entropy(model(batch.x), batch.y).backward()
    reference = math.sqrt(sum(float((p.grad**2).sum()) for p in model.parameters()))
    assert result.grad_norms[0] == pytest.approx(reference, rel=1e-5)
    assert result.losses[0] == pytest.approx(task.loss(model(batch.x), batch).item(), rel=1e-5)


@pytest.mark.parametrize("poison", ["loss", "gradient"])
def test_injected_non_finite_value_stops_the_run_as_diverged(make_fake_task, poison) -> None:
    task = make_fake_task(poison_step=3, poison=poison)
    result = run(task, steps=10)
    assert result.diverged and result.stop_reason == "diverged"
    assert result.divergence == poison
    assert result.diverged_step == 3 and result.steps == 3
    assert len(result.losses) == 4  # the poisoned step's loss is kept as evidence
    assert np.isfinite(result.losses[:3]).all()
    # The weights never saw the poisoned update, so evaluation still gives numbers.
    assert math.isfinite(result.metrics["test_accuracy"])


def test_a_huge_learning_rate_diverges_as_a_result(make_fake_task) -> None:
    result = run(make_fake_task(), steps=50, lr=1e6, optimizer="sgd")
    assert result.diverged and result.diverged_step is not None
    assert 0 < result.diverged_step < 50
    assert result.steps == result.diverged_step


def test_divergence_is_recorded_and_the_next_run_goes_on(
    make_fake_task, tmp_path, monkeypatch
) -> None:
    task = make_fake_task()
    config = TrainConfig(**(BASE | {"lr": 1e6, "optimizer": "sgd", "steps": 30}))
    plan = Plan(
        task="fake",
        models=[parse_model_arg("mlp-3:width=8"), parse_model_arg("mlp-3:width=4")],
        seeds=[0, 1],
        train=config,
    )
    store = ResultsStore(tmp_path)
    records = run_plan(plan, task, store)
    assert len(records) == 4 and len(store.load()) == 4
    for record in store.load():
        assert record["diverged"] is True
        assert record["diverged_step"] == record["steps"] < 30
        assert record["divergence"] in ("loss", "gradient")
        series = store.series(record)
        assert len(series["loss"]) == record["steps"] + 1
        # The loss of the diverged step: null when it was the non-finite value.
        last = float(series["loss"][-1])
        assert record["final_train_loss"] == (last if math.isfinite(last) else None)


def test_clip_by_norm_counts_hits_and_bounds_the_update(make_fake_task) -> None:
    task = make_fake_task()
    model = mlp(task)
    before = [p.detach().clone() for p in model.parameters()]
    result = run(task, model=model, steps=1, optimizer="sgd", lr=1.0, clip_norm=1e-3)
    assert result.clip_hits == 1
    moved = math.sqrt(
        sum(
            float(((p.detach() - b) ** 2).sum())
            for p, b in zip(model.parameters(), before, strict=True)
        )
    )
    assert moved == pytest.approx(1e-3, rel=1e-3)  # lr * clip_norm
    assert result.grad_norms[0] > 1e-3  # recorded before clipping
    assert run(task, clip_norm=1e6).clip_hits == 0


def test_clip_by_value(make_fake_task) -> None:
    task = make_fake_task()
    model = mlp(task)
    before = [p.detach().clone() for p in model.parameters()]
    result = run(task, model=model, steps=1, optimizer="sgd", lr=1.0, clip_value=1e-4)
    assert result.clip_hits == 1
    for p, b in zip(model.parameters(), before, strict=True):
        assert float((p.detach() - b).abs().max()) <= 1e-4 * (1 + 1e-3)  # fp32 rounding
    assert run(task, clip_value=1e6).clip_hits == 0


@pytest.mark.parametrize("optimizer", ["sgd", "sgd-momentum", "adam", "adamw"])
def test_each_optimizer_trains(make_fake_task, optimizer) -> None:
    lr = 0.05 if optimizer.startswith("sgd") else 0.01
    result = run(make_fake_task(), steps=12, optimizer=optimizer, lr=lr, weight_decay=1e-4)
    assert np.isfinite(result.losses).all()
    assert result.losses[-3:].mean() < result.losses[:3].mean()


def test_make_optimizer_builds_what_was_asked(make_fake_task) -> None:
    model = mlp(make_fake_task())

    def built(name: str) -> torch.optim.Optimizer:
        config = TrainConfig(steps=1, optimizer=name, lr=0.3, weight_decay=0.01, momentum=0.8)
        return make_optimizer(model, config)

    assert type(built("sgd")) is torch.optim.SGD and built("sgd").defaults["momentum"] == 0
    assert built("sgd-momentum").defaults["momentum"] == 0.8
    assert type(built("adam")) is torch.optim.Adam
    assert type(built("adamw")) is torch.optim.AdamW
    assert built("adamw").defaults["weight_decay"] == 0.01


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_each_schedule_runs_with_warmup(make_fake_task, schedule) -> None:
    result = run(make_fake_task(), steps=8, schedule=schedule, warmup_steps=2)
    assert result.steps == 8 and np.isfinite(result.losses).all()


def test_warmup_and_schedule_factors() -> None:
    warm = lr_factor(TrainConfig(steps=100, warmup_steps=4), 100)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = lr_factor(TrainConfig(steps=100, schedule="cosine"), 100)
    assert cosine(0) == 1.0
    assert cosine(50) == pytest.approx(0.5)
    assert cosine(100) == pytest.approx(0.0, abs=1e-12)
    step = lr_factor(TrainConfig(steps=100, schedule="step"), 100)
    assert [step(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    # After warm-up the schedule starts from its beginning.
    both = lr_factor(TrainConfig(steps=110, schedule="cosine", warmup_steps=10), 110)
    assert both(9) == 1.0 and both(10) == 1.0 and both(60) == pytest.approx(0.5)


def test_schedule_needs_a_step_budget() -> None:
    with pytest.raises(UsageError, match="--schedule cosine needs a --steps or --epochs"):
        lr_factor(TrainConfig(seconds=5, schedule="cosine"), None)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"batch_size": 10_000}, "larger than the training set"),
        ({"target_metric": "nope", "target_value": 1.0, "eval_every": 1}, "is not one of"),
    ],
)
def test_train_refuses_what_check_training_refuses(make_fake_task, config, message) -> None:
    """train() runs the same check the sweep runs up front (gradbench.train.check_training)."""
    with pytest.raises(UsageError, match=message):
        run(make_fake_task(), **config)


def test_bf16_autocast_runs_on_cpu_and_changes_the_arithmetic(make_fake_task) -> None:
    fp32 = run(make_fake_task(), steps=3)
    bf16 = run(make_fake_task(), steps=3, precision="bf16")
    assert np.isfinite(bf16.losses).all() and math.isfinite(bf16.metrics["test_loss"])
    assert not np.array_equal(fp32.losses, bf16.losses)
    np.testing.assert_allclose(fp32.losses, bf16.losses, rtol=0.05)


def test_epoch_budget_and_periodic_evaluation(make_fake_task) -> None:
    result = run(make_fake_task(), steps=None, epochs=2, eval_every=3)
    assert result.steps == 8 and result.epochs == 2.0 and result.stop_reason == "epochs"
    assert [e["step"] for e in result.evals] == [3, 6, 8]
    assert result.metrics == {k: result.evals[-1][k] for k in result.metrics}


def test_batch_larger_than_the_training_set_is_a_usage_error(make_fake_task) -> None:
    with pytest.raises(UsageError, match="larger than the training set"):
        run(make_fake_task(train_size=8), batch_size=16)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, model, task, config) -> None:
        self.calls.append(("start",))

    def after_backward(self, step, model, batch, loss, grad_norm) -> None:
        grads = [p.grad for p in model.parameters()]
        norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
        self.calls.append(("backward", step, round(norm / grad_norm, 6)))

    def after_step(self, step, model) -> None:
        self.calls.append(("step", step))

    def finish(self, model, last_step) -> None:
        self.calls.append(("finish", last_step))


def test_hooks_see_every_step_with_unclipped_gradients(make_fake_task) -> None:
    hooks = Recorder()
    task = make_fake_task()
    train(
        task,
        mlp(task),
        TrainConfig(**(BASE | {"steps": 2, "clip_norm": 1e-3})),
        seed=0,
        hooks=hooks,
    )
    assert hooks.calls == [
        ("start",),
        ("backward", 0, 1.0),
        ("step", 0),
        ("backward", 1, 1.0),
        ("step", 1),
        ("finish", 2),
    ]


class SlowProbes:
    """Hooks that take 5 clock seconds per step, on a clock nothing else advances."""

    def __init__(self, now: list[float]):
        self.now = now

    def start(self, model, task, config) -> None:
        self.now[0] += 3.0

    def after_backward(self, step, model, batch, loss, grad_norm) -> None:
        self.now[0] += 5.0

    def after_step(self, step, model) -> None:
        pass

    def finish(self, model, last_step) -> None:
        self.now[0] += 1.0


def test_probe_time_is_kept_out_of_the_training_clock(make_fake_task) -> None:
    now = [0.0]
    task = make_fake_task()
    # Stopped by its 4 steps, never by --seconds: the hooks' 24 s are not training.
    config = TrainConfig(**(BASE | {"steps": 4, "seconds": 4.0, "eval_every": 2}))
    result = train(task, mlp(task), config, seed=0, hooks=SlowProbes(now), clock=lambda: now[0])
    assert result.stop_reason == "steps" and result.steps == 4
    assert result.train_seconds == 0.0
    assert result.probe_seconds == 3.0 + 4 * 5.0 + 1.0


def test_training_time_still_counts_under_a_seconds_budget(make_fake_task) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 0.5  # every reading of the clock: half a second of "training"
        return now[0]

    task = make_fake_task()
    config = TrainConfig(**(BASE | {"steps": 50, "seconds": 3.0}))
    result = train(task, mlp(task), config, seed=0, hooks=SlowProbes(now), clock=clock)
    assert result.stop_reason == "seconds" and result.train_seconds >= 3.0
    assert result.probe_seconds > 5 * result.steps  # hooks' 5 s a step, none of it training


@pytest.mark.parametrize(
    "options, message",
    [
        ({}, "give a budget"),
        ({"steps": 1, "clip_norm": 1.0, "clip_value": 1.0}, "not both"),
        ({"steps": 1, "optimizer": "lbfgs"}, "--optimizer 'lbfgs' is not one of"),
        ({"steps": 1, "schedule": "poly"}, "--schedule 'poly'"),
        ({"steps": 1, "precision": "fp16"}, "--precision 'fp16'"),
        ({"steps": 0}, "--steps must be > 0"),
        ({"steps": 1, "lr": -1.0}, "--lr must be > 0"),
        ({"steps": 1, "weight_decay": -1.0}, ">= 0"),
        ({"steps": 1, "target_metric": "test_accuracy"}, "METRIC=VALUE"),
    ],
)
def test_train_config_validation(options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TrainConfig(**options)
