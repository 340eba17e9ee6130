"""Stopping budgets of the training loop, on a fake clock: no test sleeps.

Time passes only when the task says so: each training loss costs ``step_seconds`` and
each evaluation ``eval_seconds`` (made large, so counting it by mistake would stop a
run far too early). Evaluation returns scripted metrics, one per call.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.config import TrainConfig
from gradbench.leaderboard import build_tables
from gradbench.records import ResultsStore
from gradbench.runner import Plan, run_plan, stopping_budget
from gradbench.task import Batch, DatasetId, InputSpec, MetricSpec
from gradbench.train import train

BATCH = 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockedTask:
    """Linear regression in memory, three batches an epoch, on a clock it advances itself."""

    name = "clocked"
    metrics = (MetricSpec("score", True), MetricSpec("error", False))

    def __init__(
        self,
        clock: FakeClock,
        scores: list[float],
        *,
        step_seconds: float = 1.0,
        eval_seconds: float = 100.0,
    ):
        self.clock = clock
        self.scores = scores
        self.step_seconds = step_seconds
        self.eval_seconds = eval_seconds
        self.eval_calls = 0
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(3 * BATCH, 2, generator=generator)
        self.y = self.x.sum(dim=1, keepdim=True)

    def input_spec(self) -> InputSpec:
        return InputSpec(kind="sequence", shape=(1, 2), num_outputs=1, target="regression")

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        for start in range(0, len(self.y) - batch_size + 1, batch_size):
            yield Batch(self.x[start : start + batch_size], self.y[start : start + batch_size])

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        self.clock.now += self.step_seconds
        return F.mse_loss(output, batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        self.clock.now += self.eval_seconds
        score = self.scores[min(self.eval_calls, len(self.scores) - 1)]
        self.eval_calls += 1
        return {"score": score, "error": 1.0 - score}

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        return Batch(self.x[:batch_size], self.y[:batch_size])

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId("clocked", split, "v1", "synthetic", len(self.y))


def run(task: ClockedTask, **budget):
    config = TrainConfig(
        batch_size=BATCH, optimizer="sgd", lr=0.01, device="cpu", probes="off", **budget
    )
    torch.manual_seed(0)
    return train(task, nn.Linear(2, 1), config, seed=0, clock=task.clock)


def test_seconds_budget_stops_at_the_step_that_spends_it_and_excludes_evaluation() -> None:
    task = ClockedTask(FakeClock(), [0.0])
    result = run(task, seconds=10, eval_every=2)
    # 1 s a step: the 10th step spends the budget, across four epoch boundaries. Had the
    # 100 s evaluations counted, the run would have stopped after step 2.
    assert (result.steps, result.stop_reason) == (10, "seconds")
    assert result.train_seconds == 10
    assert [e["step"] for e in result.evals] == [2, 4, 6, 8, 10]  # the last is the final one
    assert [e["train_seconds"] for e in result.evals] == [2, 4, 6, 8, 10]
    assert result.eval_seconds == 5 * 100
    assert task.clock.now == 10 + 5 * 100


def test_seconds_budget_with_fractional_steps() -> None:
    result = run(ClockedTask(FakeClock(), [0.0], step_seconds=0.75), seconds=3)
    assert (result.steps, result.train_seconds, result.stop_reason) == (4, 3.0, "seconds")


def test_a_step_cap_stops_first_when_it_comes_first() -> None:
    result = run(ClockedTask(FakeClock(), [0.0]), seconds=100, steps=5)
    assert (result.steps, result.stop_reason, result.train_seconds) == (5, "steps", 5)


@pytest.mark.parametrize(
    "metric, value",
    [("score", 0.75), ("error", 0.25)],  # higher is better, lower is better
)
def test_target_stops_at_the_first_evaluation_reaching_it(metric: str, value: float) -> None:
    task = ClockedTask(FakeClock(), [0.1, 0.4, 0.8, 0.9])
    result = run(task, steps=100, eval_every=3, target_metric=metric, target_value=value)
    # Evaluations at steps 3, 6, 9: the third (score 0.8) is the first to reach it.
    assert (result.stop_reason, result.steps) == ("target", 9)
    assert result.target_reached is True
    assert (result.target_step, result.target_seconds) == (9, 9)
    assert task.eval_calls == 3  # no extra evaluation after the stop
    assert result.metrics["score"] == 0.8


def test_target_reached_at_the_final_evaluation_is_recorded() -> None:
    task = ClockedTask(FakeClock(), [0.1, 0.9])
    result = run(task, steps=6, eval_every=4, target_metric="score", target_value=0.75)
    # Step 4 misses; the budget ends at step 6 and the final evaluation reaches it.
    assert (result.stop_reason, result.steps) == ("steps", 6)
    assert (result.target_reached, result.target_step, result.target_seconds) == (True, 6, 6)


def test_target_not_reached_is_recorded_as_such() -> None:
    task = ClockedTask(FakeClock(), [0.1])
    result = run(task, steps=6, eval_every=2, target_metric="score", target_value=0.75)
    assert (result.stop_reason, result.steps) == ("steps", 6)
    assert result.target_reached is False
    assert result.target_step is None and result.target_seconds is None
    config = TrainConfig(steps=6, target_metric="score", target_value=0.75)
    budget = stopping_budget(config, result, None)
    assert budget["kind"] == "target" and budget["achieved"] is None


def test_seconds_cap_ends_a_time_to_target_run_that_never_gets_there() -> None:
    task = ClockedTask(FakeClock(), [0.1])
    result = run(task, seconds=7, eval_every=2, target_metric="score", target_value=0.75)
    assert (result.stop_reason, result.steps, result.train_seconds) == ("seconds", 7, 7)
    assert result.target_reached is False


def test_not_reached_ranks_as_infinitely_slow(results_dir, restore_registries) -> None:
    """AlgoPerf's rule: a configuration with any seed that missed the target is infinitely slow."""
    from gradbench.models.build import ModelSpec
    from gradbench.registry import MODELS

    @MODELS.register("clocked-linear")
    def clocked_linear(spec: InputSpec, *, width: int = 1, tag: str = "") -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(2, spec.num_outputs))

    config = TrainConfig(
        steps=4,
        eval_every=2,
        target_metric="score",
        target_value=0.75,
        batch_size=BATCH,
        optimizer="sgd",
        lr=0.01,
        device="cpu",
        probes="off",
    )
    store = ResultsStore(results_dir)
    records = []
    # One configuration reaches the target (second evaluation); the other never does,
    # on either of its seeds.
    for tag, scores, seeds in (("reaches", [0.1, 0.9], [0]), ("misses", [0.1], [0, 1])):
        plan = Plan("clocked", [ModelSpec("clocked-linear", {"tag": tag})], seeds, config)
        records += run_plan(plan, ClockedTask(FakeClock(), scores), store)
    reached, missed = records[0], records[1]
    assert reached["target"]["reached"] is True and reached["target"]["step"] == 4
    assert missed["target"]["reached"] is False and missed["budget"]["achieved"] is None
    table = next(iter(build_tables(store.load()).values()))
    by_model = dict(zip(table["model"], table["time_to_target"], strict=True))
    assert math.isinf(by_model["clocked-linear:tag=misses"])
    assert by_model["clocked-linear:tag=reaches"] == reached["target"]["seconds"]
