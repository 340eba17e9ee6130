"""The labelled case table: controlled runs whose verdict is known, so the rule cannot drift.

Each case is a short, seeded run of a tiny model on an in-memory task, chosen so that the
expected verdict is the one the literature predicts and that the run itself shows
(docs/probes.md, "The case table"). A change of the rule, a threshold or a probe that
flips one of them fails here.
"""

from __future__ import annotations

import pytest
import torch
from test_probes_toys import ToyTask

from gradbench.config import TrainConfig
from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.plugins import load_plugins
from gradbench.probes import make_probes
from gradbench.registry import TASKS
from gradbench.task import DataConfig
from gradbench.train import train

pytestmark = pytest.mark.slow


def adding(length: int, train_size: int = 2000):
    load_plugins()
    factory = TASKS.resolve("adding")[0].factory
    return factory(DataConfig(), length=length, train_size=train_size, test_size=500)


def run(name: str, task, steps: int, options: dict, **config):
    """(overall verdict, evidence, result) of a seeded run with the default probes."""
    torch.manual_seed(0)
    spec = task.input_spec()
    model = build_model(name, spec, resolve_options(ModelSpec(name, options), {}, spec.kind))
    settings = {"steps": steps, "batch_size": 16, "optimizer": "sgd", "lr": 0.05, "device": "cpu"}
    cfg = TrainConfig(**(settings | {"eval_batch_size": 500} | config))
    probes = make_probes("default", model, task, cfg)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny recurrent nets: one thread is the fastest
    try:
        result = train(task, model, cfg, seed=0, hooks=probes)
    finally:
        torch.set_num_threads(threads)
    verdict, evidence = probes.verdict(result)
    return verdict, evidence, result


def windows(evidence: dict) -> tuple[str | None, str | None]:
    return evidence["start"]["verdict"], evidence["end"]["verdict"]


IMAGE = ToyTask((1, 8, 8), size=512)
# Deep enough for the batch-norm explosion of plain nets (Yang et al. 2019), small enough
# for a second: 56 layers of 4 to 16 channels on 3x16x16 inputs.
COLOUR = ToyTask((3, 16, 16), size=256)


def test_sigmoid_deep_mlp_with_default_init_vanishes():
    # Glorot & Bengio (2010): sigmoid units shrink the gradient at every layer.
    verdict, evidence, _ = run("mlp-12", IMAGE, 30, {"activation": "sigmoid", "width": 32})
    assert (verdict, *windows(evidence)) == ("vanishing", "vanishing", "vanishing")
    assert evidence["end"]["first_last_ratio_log10"] <= -5


def test_relu_he_mlp_is_healthy():
    # He et al. (2015): variance-preserving init for rectifiers.
    options = {"activation": "relu", "width": 32, "init": "he"}
    verdict, evidence, _ = run("mlp-12", IMAGE, 30, options)
    assert (verdict, *windows(evidence)) == ("healthy", "healthy", "healthy")
    assert abs(evidence["end"]["first_last_ratio_log10"]) < 1


def test_irnn_under_sgd_at_a_high_learning_rate_without_clipping_diverges():
    # Le et al. (2015) train the IRNN with clipping; without it the ReLU recurrence blows up.
    verdict, evidence, result = run("irnn", adding(30), 100, {"width": 16}, lr=0.1, batch_size=32)
    assert verdict == "diverged" and result.diverged
    assert evidence["step"] is not None and evidence["step"] < 10


def test_the_same_irnn_with_norm_clipping_does_not_diverge():
    # Pascanu et al. (2013): clipping the gradient norm keeps the run finite.
    verdict, _, result = run(
        "irnn", adding(30), 100, {"width": 16}, lr=0.1, batch_size=32, clip_norm=1.0
    )
    assert verdict != "diverged" and not result.diverged and result.steps == 100


def test_deep_plain_cnn_with_batch_norm_explodes_at_the_start():
    # Yang et al. (2019): batch norm without shortcuts makes the input-side gradient grow
    # exponentially with depth at initialisation.
    verdict, evidence, _ = run("plain-56", COLOUR, 5, {"width": 4})
    assert evidence["start"]["verdict"] == "exploding" and verdict == "exploding"
    assert evidence["start"]["first_last_ratio_log10_first"] >= 2


def test_resnet_of_the_same_depth_is_healthy():
    # He et al. (2016): identity shortcuts keep the ends of the network within an order.
    verdict, evidence, _ = run("resnet-56", COLOUR, 5, {"width": 4})
    assert (verdict, *windows(evidence)) == ("healthy", "healthy", "healthy")
    assert abs(evidence["start"]["first_last_ratio_log10_first"]) < 1


def test_gated_rnn_that_solves_a_short_adding_problem_ends_healthy():
    # Cho et al. (2014); the run must actually solve the task, far below the baseline.
    task = adding(10, train_size=4000)
    verdict, evidence, result = run(
        "gru", task, 300, {"width": 16}, optimizer="adam", lr=1e-2, batch_size=32
    )
    assert result.metrics["test_mse"] < 0.1 * task.baselines["test_mse"]
    assert evidence["end"]["verdict"] == "healthy" and verdict == "healthy"
    assert evidence["end"]["timestep_captures"] >= 4  # enough sampled steps back it


def test_tanh_rnn_on_a_long_adding_problem_stays_at_the_baseline_and_vanishes():
    # Bengio et al. (1994): the tanh recurrence forgets the first marker.
    task = adding(60)
    verdict, evidence, result = run(
        "rnn", task, 150, {"width": 16}, optimizer="adam", lr=1e-2, batch_size=32
    )
    assert result.metrics["test_mse"] > 0.8 * task.baselines["test_mse"]
    assert (verdict, evidence["end"]["verdict"]) == ("vanishing", "vanishing")
    assert evidence["end"]["timestep_log10_start_to_end"] <= -2
    assert evidence["end"]["timestep_captures"] >= 4
