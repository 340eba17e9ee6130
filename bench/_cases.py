"""Workloads and timing helpers shared by the benchmarks.

Not a benchmark itself (run_all.py skips files starting with "_"). Each case is a task
held in memory, a model name, a batch size and a learning rate; ``hand_loop`` is what a
user would write by hand: shuffle, slice, forward, the task's loss, backward, step.
``steps_per_second`` and ``best_rates`` time side-by-side steps in interleaved rounds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gradbench.data import data_config
from gradbench.models.build import build_model, parse_model_arg, resolve_options
from gradbench.plugins import load_plugins
from gradbench.runner import load_task
from gradbench.task import Batch


@dataclass
class Case:
    name: str  # what the figures are labelled with
    task: object
    model: str
    batch_size: int
    lr: float

    def fresh_model(self, seed: int = 0) -> torch.nn.Module:
        spec = parse_model_arg(self.model)
        kind = self.task.input_spec().kind
        torch.manual_seed(seed)
        return build_model(spec.name, self.task.input_spec(), resolve_options(spec, {}, kind))

    @property
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task.splits["train"]


def synthetic_image_task():
    """A Fashion-MNIST-shaped task in memory, for machines without the data."""
    from gradbench_tasks.image import ImageClassification

    g = torch.Generator().manual_seed(0)
    train = (torch.randn(8192, 1, 28, 28, generator=g), torch.randint(0, 10, (8192,), generator=g))
    test = (torch.randn(512, 1, 28, 28, generator=g), torch.randint(0, 10, (512,), generator=g))
    return ImageClassification("image", "synthetic", train, test, "synthetic", "0", 10)


def cnn_case(model: str = "resnet-20", batch_size: int = 64) -> Case:
    load_plugins()
    if os.environ.get("GRADBENCH_DATA"):
        return Case(
            f"{model} (fashion-mnist)",
            load_task("image", data_config(), {}),
            model,
            batch_size,
            0.05,
        )
    return Case(f"{model} (synthetic images)", synthetic_image_task(), model, batch_size, 0.05)


def lstm_case(task: str = "adding-100", batch_size: int = 64) -> Case:
    load_plugins()
    return Case(f"lstm ({task})", load_task(task, data_config(), {}), "lstm", batch_size, 0.05)


def hand_loop(case: Case, model: torch.nn.Module, steps: int, seed: int) -> float:
    """Seconds of ``steps`` plain eager fp32 steps: what a user would write by hand."""
    images, labels = case.tensors
    optimizer = torch.optim.SGD(model.parameters(), lr=case.lr, momentum=0.9)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * case.batch_size : (step + 1) * case.batch_size]
        batch = Batch(images[index], labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss = case.task.loss(model(batch.x), batch)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def steps_per_second(step, seconds: float) -> float:
    """Steps per second of ``step`` over about ``seconds`` (at least two steps)."""
    count, started = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and count >= 2:
            return count / elapsed


def best_rates(steps: dict, seconds: float, rounds: int, rate: Callable = steps_per_second) -> dict:
    """Best ``rate`` of each step over ``rounds`` interleaved rounds (as timeit takes the minimum).

    Interleaving spreads load drifts over every entry; the best round is the one least
    disturbed by other processes, which is what the models cost.
    """
    for step in steps.values():
        step()  # warm-up: allocator, kernel selection
    rates = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for key, step in steps.items():
            rates[key] = max(rates[key], rate(step, seconds))
    return rates
