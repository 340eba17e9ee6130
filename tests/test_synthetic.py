"""Synthetic probes: generator shapes and content, determinism, baselines from the data."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from gradbench_tasks.synthetic import AddingProblem, CopyTask, adding_data, copy_data
from torch import nn

from gradbench.config import TrainConfig
from gradbench.models.build import build_model, model_options
from gradbench.plugins import load_plugins
from gradbench.registry import TASKS
from gradbench.task import DataConfig, Task
from gradbench.train import train


@pytest.fixture(scope="module")
def adding() -> AddingProblem:
    return AddingProblem(length=40, train_size=4000, test_size=2000, data_seed=0)


class Constant(nn.Module):
    """Predicts the same output for every sample: what a model that learnt nothing does."""

    def __init__(self, value: torch.Tensor, shape: tuple[int, ...]):
        super().__init__()
        self.value, self.shape = value, shape

    def forward(self, x, lengths=None):
        return self.value.expand(x.shape[0], *self.shape)


def test_adding_data_has_two_markers_one_per_half_and_their_sum_as_target():
    x, y = adding_data(500, 30, torch.Generator().manual_seed(3))
    assert x.shape == (500, 30, 2) and y.shape == (500,)
    markers = x[..., 1]
    assert torch.equal(markers[:, :15].sum(1), torch.ones(500))
    assert torch.equal(markers[:, 15:].sum(1), torch.ones(500))
    torch.testing.assert_close(y, (x[..., 0] * markers).sum(1))
    assert 0 <= float(x[..., 0].min()) and float(x[..., 0].max()) < 1


def test_adding_task_is_deterministic_in_its_data_seed_and_versioned_by_its_parameters(adding):
    again = AddingProblem(length=40, train_size=4000, test_size=2000, data_seed=0)
    other = AddingProblem(length=40, train_size=4000, test_size=2000, data_seed=1)
    longer = AddingProblem(length=41, train_size=4000, test_size=2000, data_seed=0)
    assert torch.equal(adding.splits["train"][0], again.splits["train"][0])
    assert not torch.equal(adding.splits["train"][0], other.splits["train"][0])
    assert not torch.equal(adding.splits["train"][0][:2000], adding.splits["test"][0])
    ids = [t.dataset_id("train") for t in (adding, again, other, longer)]
    assert ids[0] == ids[1]
    assert len({i.version for i in ids}) == 3
    assert ids[0].source == "synthetic" and ids[0].num_examples == 4000
    assert adding.dataset_id("test").num_examples == 2000
    # The training seed fixes the order only: same samples, different order.
    first = torch.cat([b.y for b in adding.batches("train", 100, seed=0)])
    second = torch.cat([b.y for b in adding.batches("train", 100, seed=1)])
    assert not torch.equal(first, second)
    torch.testing.assert_close(first.sort().values, second.sort().values)


def test_adding_baseline_is_the_mse_of_predicting_the_training_mean(adding):
    # Var(U + U') = 1/6 for two independent U(0, 1): the figure the literature quotes.
    assert abs(adding.baselines["test_mse"] - 1 / 6) < 0.015
    mean = adding.splits["train"][1].mean()
    model = Constant(mean.view(1, 1), (1,))
    metrics = adding.evaluate(model, torch.device("cpu"), 512)
    assert metrics["test_mse"] == pytest.approx(adding.baselines["test_mse"], rel=1e-5)


def test_copy_data_layout_and_baselines():
    x, y = copy_data(300, delay=7, copy_length=4, num_symbols=6, generator=torch.Generator())
    assert x.shape == (300, 4 + 7 + 4) and y.shape == (300, 4)
    assert torch.equal(x[:, :4], y + 1)
    assert bool((x[:, 4:10] == 0).all()) and bool((x[:, 10] == 7).all())
    assert bool((x[:, 11:] == 0).all())
    task = CopyTask(
        delay=7, copy_length=4, num_symbols=6, train_size=3000, test_size=1000, data_seed=0
    )
    spec = task.input_spec()
    assert spec.kind == "tokens" and spec.shape == (15,) and spec.output_steps == 4
    assert spec.vocab_size == 8 and spec.num_outputs == 6
    assert abs(task.baselines["test_accuracy"] - 1 / 6) < 0.03
    assert abs(task.baselines["test_loss"] - math.log(6)) < 0.01
    # A model that always answers the majority symbol scores exactly the baseline.
    majority = torch.bincount(task.splits["train"][1].flatten(), minlength=6).argmax()
    logits = torch.nn.functional.one_hot(majority, 6).float().view(1, 1, 6)
    metrics = task.evaluate(Constant(logits, (4, 6)), torch.device("cpu"), 256)
    assert metrics["test_accuracy"] == pytest.approx(task.baselines["test_accuracy"])
    assert set(metrics) == {m.name for m in task.metrics}


def test_registered_names_carry_the_length():
    load_plugins()
    data = DataConfig()
    task = TASKS.create("adding-25", data=data, train_size=100, test_size=50)
    assert isinstance(task, Task) and task.input_spec().shape == (25, 2)
    assert task.name == "adding-25"
    copy = TASKS.create("copy-12", data=data, train_size=100, test_size=50)
    assert copy.input_spec().shape == (12 + 20,)
    assert copy.dataset_id("train").details["delay"] == 12


def test_gru_learns_a_short_adding_problem_that_a_constant_cannot():
    # Short (T=10) so it takes seconds; the long-range contrast is `gradbench run adding-100`.
    task = AddingProblem(length=10, train_size=6400, test_size=1000, data_seed=0)
    torch.manual_seed(0)
    model = build_model("gru", task.input_spec(), {**model_options("gru"), "width": 32})
    config = TrainConfig(steps=200, optimizer="adam", lr=1e-2, batch_size=64, device="cpu")
    result = train(task, model, config, seed=0)
    assert result.metrics["test_mse"] < 0.25 * task.baselines["test_mse"]


@pytest.fixture(scope="module")
def fashion_data(tmp_path_factory) -> DataConfig:
    root = os.environ.get("GRADBENCH_DATA")
    if not root:
        pytest.skip("GRADBENCH_DATA is not set: no Fashion-MNIST files to read")
    return DataConfig(Path(root), tmp_path_factory.mktemp("cache"), download=False)


def test_sequential_fashion_reads_rows_pixels_strides_and_permutations(fashion_data):
    rows = TASKS.create("seq-fashion", data=fashion_data, train_limit=300)
    assert rows.input_spec().shape == (28, 28) and rows.input_spec().kind == "sequence"
    assert rows.splits["train"][0].shape == (300, 28, 28)
    assert rows.splits["test"][0].shape == (10000, 28, 28)
    assert rows.dataset_id("train").split == "train[:300]"
    pixels = TASKS.create("seq-fashion", data=fashion_data, train_limit=300, pixels=True, stride=4)
    assert pixels.input_spec().shape == (196, 1)
    torch.testing.assert_close(
        pixels.splits["train"][0][:, :, 0], rows.splits["train"][0].reshape(300, -1)[:, ::4]
    )
    permuted = TASKS.create(
        "seq-fashion", data=fashion_data, train_limit=300, pixels=True, stride=4, permute=True
    )
    original = pixels.splits["train"][0][0, :, 0]
    shuffled = permuted.splits["train"][0][0, :, 0]
    assert not torch.equal(original, shuffled)
    torch.testing.assert_close(original.sort().values, shuffled.sort().values)
    versions = {t.dataset_id("test").version for t in (rows, pixels, permuted)}
    assert len(versions) == 3
    assert rows.baselines["test_accuracy"] == pytest.approx(0.1)
