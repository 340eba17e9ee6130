"""Matched budgets: parameter and FLOP counts, the width solver, and what runs record.

Each architecture pair the project has is sized across a range of targets: the solved
width must be the best one (no neighbouring width is nearer the target), land within
tolerance wherever the model's granularity allows, and be flagged where it does not.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench import budget as budgets
from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.models.build import ModelSpec, build_model, parse_model_arg, resolve_options
from gradbench.registry import MODELS
from gradbench.task import Batch, DatasetId, InputSpec, MetricSpec

SEQUENCE_MODELS = [name for name in ("rnn", "lstm", "gru", "irnn", "transformer") if name in MODELS]
RECURRENT = [name for name in ("rnn", "lstm", "gru") if name in MODELS]


class SequenceTask:
    """Six steps of three features, two classes; ``lengths=True`` pads like real audio does."""

    name = "fake-seq"
    metrics = (MetricSpec("test_accuracy", True),)
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 4}

    def __init__(self, lengths: bool = False):
        self.lengths = lengths

    def input_spec(self) -> InputSpec:
        return InputSpec(kind="sequence", shape=(6, 3), num_outputs=2)

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        generator = torch.Generator().manual_seed(seed)
        lengths = torch.randint(1, 7, (batch_size,), generator=generator) if self.lengths else None
        x = torch.randn(batch_size, 6, 3, generator=generator)
        return Batch(x, torch.randint(0, 2, (batch_size,), generator=generator), lengths)

    def batches(self, split: str, batch_size: int, seed: int):
        for index in range(4):
            yield self.fake_batch(batch_size, seed * 100 + index)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output, batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        return {"test_accuracy": 0.5}

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId("fake-seq", split, "v1", "synthetic", 16)


def options(name: str, **given) -> dict:
    # The CNNs are image models; every other name here is built for a sequence task.
    kind = "image" if name.startswith(("plain", "resnet")) else "sequence"
    return resolve_options(ModelSpec(parse_model_arg(name).name, given), {}, kind)


def assert_best_width(task, name: str, opts: dict, info: dict, batch_size: int = 4) -> None:
    """No allowed neighbouring width is nearer the target; the flag matches the error."""
    counter = budgets.ModelCounter(name, opts, task, batch_size)
    measure = counter.measure(info["match"])
    target, width = info["match_target"], opts["width"]
    step = budgets.width_multiple(opts)
    assert measure(width) == info["match_achieved"]
    assert info["match_rel_error"] == pytest.approx((info["match_achieved"] - target) / target)
    for other in (width - step, width + step):
        if other >= step:
            assert abs(measure(other) - target) >= abs(info["match_achieved"] - target)
    within = abs(info["match_rel_error"]) <= info["match_tolerance"]
    assert info["match_within_tolerance"] is within


@pytest.fixture
def image_task(make_fake_task):
    return make_fake_task(shape=(1, 8, 8), classes=3)


def test_count_parameters_total_and_trainable() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    assert budgets.count_parameters(model) == (16 + 10, 4 + 10)


@pytest.mark.parametrize("target", [3e3, 2e4, 8e4])
def test_plain_and_resnet_get_the_same_best_width(image_task, target: float) -> None:
    pairs = [("plain-8", options("plain-8")), ("resnet-8", options("resnet-8"))]
    (plain, plain_info), (res, res_info) = budgets.match_models(
        pairs, image_task, kind="params", target=target
    )
    # Option-A shortcuts are parameter-free: the pair is identical in size at any width.
    assert plain["width"] == res["width"]
    assert plain_info["match_achieved"] == res_info["match_achieved"]
    assert_best_width(image_task, "plain-8", plain, plain_info)


def test_a_cnn_target_inside_the_granularity_lands_within_tolerance(image_task) -> None:
    # CIFAR nets grow ~quadratically in width, so only targets near a width's count are
    # reachable within ±2%: aim 1% above width 12's count.
    at_12 = budgets.ModelCounter("plain-8", options("plain-8"), image_task, 4).parameters(12)
    matched = budgets.match_models(
        [("plain-8", options("plain-8")), ("resnet-8", options("resnet-8"))],
        image_task,
        kind="params",
        target=1.01 * at_12,
    )
    for opts, info in matched:
        assert opts["width"] == 12
        assert info["match_within_tolerance"] and abs(info["match_rel_error"]) <= 0.02


@pytest.mark.parametrize("target", [3e3, 4.2e3, 2e4, 5e4, 8e4])
def test_cnn_pair_lands_within_two_percent_with_the_fine_knob(image_task, target) -> None:
    # Between widths the count jumps by ~2/width (40% at width 5): the per-stage
    # multiplier fills the gap, one stage's channel at a time.
    pairs = [("plain-8", options("plain-8")), ("resnet-8", options("resnet-8"))]
    (plain, plain_info), (res, res_info) = budgets.match_models(
        pairs, image_task, kind="params", target=target
    )
    assert plain == {**res, "residual": plain["residual"]}  # the same widths and multiplier
    assert plain_info["match_achieved"] == res_info["match_achieved"]
    assert abs(plain_info["match_rel_error"]) <= 0.02, plain_info
    counter = budgets.ModelCounter("plain-8", options("plain-8"), image_task, 4)
    multiplier = plain.get("width_multiplier", 1.0)
    assert counter.parameters(plain["width"], multiplier) == plain_info["match_achieved"]
    if multiplier != 1.0:
        assert plain_info["match_width_multiplier"] == multiplier
        assert 1.0 < multiplier < (plain["width"] + 1) / plain["width"]


def test_the_paper_architecture_stays_when_an_integer_width_fits(image_task) -> None:
    at_12 = budgets.ModelCounter("plain-8", options("plain-8"), image_task, 4).parameters(12)
    ((opts, info),) = budgets.match_models(
        [("plain-8", options("plain-8"))], image_task, kind="params", target=at_12
    )
    assert opts["width"] == 12 and opts["width_multiplier"] == 1.0
    assert "match_width_multiplier" not in info


def test_flops_of_variable_length_tasks_are_a_mean_over_real_batches() -> None:
    task = SequenceTask(lengths=True)
    batches, basis = budgets.representative_batches(task, 4)
    assert basis["batches"] == "train" and basis["count"] == len(batches) == 4
    lengths = torch.cat([b.lengths for b in batches]).float()
    assert basis["mean_length"] == pytest.approx(float(lengths.mean()))
    model = build_model("lstm", task.input_spec(), options("lstm", width=8))
    per_batch = [budgets._count_on_cpu(copy.deepcopy(model), task, b) for b in batches]
    assert budgets.flops_per_step(model, task, 4) == pytest.approx(sum(per_batch) / 4)
    assert len(set(per_batch)) > 1  # the batches' lengths differ, and so do their costs
    fixed = SequenceTask(lengths=False)
    assert budgets.representative_batches(fixed, 4)[1] == {
        "batches": "fake",
        "count": 1,
        "batch_size": 4,
    }


@pytest.mark.skipif(not SEQUENCE_MODELS, reason="no sequence models registered")
@pytest.mark.parametrize("target", [2e4, 1e5, 4e5])
def test_sequence_models_match_a_parameter_target_within_two_percent(target: float) -> None:
    task = SequenceTask()
    models = [(name, options(name)) for name in SEQUENCE_MODELS]
    matched = budgets.match_models(models, task, kind="params", target=target)
    for (name, _), (opts, info) in zip(models, matched, strict=True):
        assert abs(info["match_rel_error"]) <= 0.02, (name, opts["width"], info)
        assert_best_width(task, name, opts, info)


@pytest.mark.skipif(not RECURRENT, reason="no recurrent models registered")
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "padded"])
def test_recurrent_models_match_flops_and_the_runner_records_the_same_count(lengths) -> None:
    task = SequenceTask(lengths=lengths)
    models = [(name, options(name)) for name in RECURRENT]
    matched = budgets.match_models(models, task, kind="flops", target=None, batch_size=4)
    first_opts, first_info = matched[0]
    assert first_opts["width"] == options(RECURRENT[0])["width"]  # the first, as given
    assert first_info["match_reference"] == RECURRENT[0] and first_info["match_rel_error"] == 0
    for (name, _), (opts, info) in zip(models, matched, strict=True):
        assert abs(info["match_rel_error"]) <= 0.02, (name, info)
        assert info["match_batch_size"] == 4
        # What a run records (flops_per_step on the built model) is what was matched.
        model = build_model(name, task.input_spec(), opts)
        assert budgets.flops_per_step(model, task, 4) == info["match_achieved"]


def test_cnn_pair_matched_on_flops(image_task) -> None:
    pairs = [("resnet-8", options("resnet-8", width=8)), ("plain-14", options("plain-14"))]
    matched = budgets.match_models(pairs, image_task, kind="flops", target=None, batch_size=4)
    reference = matched[0][1]["match_target"]
    assert matched[0][0]["width"] == 8
    model = build_model("resnet-8", image_task.input_spec(), options("resnet-8", width=8))
    assert budgets.flops_per_step(model, image_task, 4) == reference
    assert_best_width(image_task, "plain-14", *matched[1])


@pytest.mark.parametrize(
    "target, fragments",
    [
        (10, ["out of reach", "reaches", "too small", "widths 1 to"]),
        (1e15, ["out of reach", "too large", "memory stops it"]),
    ],
)
def test_unreachable_targets_fail_with_the_reachable_range(image_task, target, fragments) -> None:
    with pytest.raises(UsageError) as error:
        budgets.match_models(
            [("plain-8", options("plain-8"))], image_task, kind="params", target=target
        )
    message = str(error.value)
    for fragment in fragments:
        assert fragment in message
    smallest = budgets.ModelCounter("plain-8", options("plain-8"), image_task, 4).parameters(1)
    assert budgets.si_number(smallest) in message


def test_width_cap_bounds_the_range(image_task, monkeypatch) -> None:
    monkeypatch.setattr(budgets, "MAX_WIDTH", 32)
    counter = budgets.ModelCounter("plain-8", options("plain-8"), image_task, 4)
    with pytest.raises(UsageError, match="the width cap stops it at width 32") as error:
        budgets.match_models(
            [("plain-8", options("plain-8"))], image_task, kind="params", target=1e7
        )
    assert budgets.si_number(counter.parameters(32)) in str(error.value)


def test_memory_limit_is_where_training_state_stops_fitting(image_task, monkeypatch) -> None:
    counter = budgets.ModelCounter("plain-8", options("plain-8"), image_task, 4)
    limit = counter.parameters(20) * budgets.BYTES_PER_PARAMETER
    assert budgets.max_width(counter, 1, limit) == 20


def test_a_model_without_width_cannot_be_matched(image_task, restore_registries) -> None:
    @MODELS.register("fixed-net")
    def fixed_net(spec: InputSpec, *, activation: str = "relu") -> nn.Module:
        return nn.Sequential(nn.Flatten(), nn.Linear(64, spec.num_outputs))

    with pytest.raises(UsageError, match="fixed-net has no width option"):
        budgets.match_models(
            [("plain-8", options("plain-8")), ("fixed-net", options("fixed-net"))],
            image_task,
            kind="params",
            target=None,
        )


@pytest.mark.parametrize(
    "kind, target, tolerance, message",
    [
        ("memory", 1e4, 0.02, "not one of params, flops"),
        ("params", -5, 0.02, "must be > 0"),
        ("params", 1e4, 0, "--tolerance must be > 0"),
    ],
)
def test_bad_match_arguments(image_task, kind, target, tolerance, message) -> None:
    with pytest.raises(UsageError, match=message):
        budgets.match_models(
            [("plain-8", options("plain-8"))],
            image_task,
            kind=kind,
            target=target,
            tolerance=tolerance,
        )


def quadratic(width: int) -> float:
    return 500 + 3 * width**2 + 40 * width


@pytest.mark.parametrize("target", [600, 5_000, 123_456, 9_999_999, 1e8])
@pytest.mark.parametrize("multiple", [1, 4])
def test_solver_finds_the_nearest_width_in_a_few_counts(target: float, multiple: int) -> None:
    calls: list[int] = []

    def measure(width: int) -> float:
        calls.append(width)
        return quadratic(width)

    solution = budgets.solve_width(measure, target, start=16, multiple=multiple, top=8192)
    allowed = range(multiple, 8193, multiple)
    best = min(allowed, key=lambda w: (abs(quadratic(w) - target), w))
    assert abs(quadratic(solution.width) - target) == abs(quadratic(best) - target)
    assert solution.width % multiple == 0
    assert solution.outside == ("below" if target < quadratic(multiple) else None)
    assert len(calls) <= 16, calls  # a bisection over 8192 widths alone would take 13


def test_solver_handles_plateaus_and_reports_the_side_it_fell_off() -> None:
    def steps(width: int) -> float:
        return 100.0 * math.ceil(width / 8)

    assert steps(budgets.solve_width(steps, 1000, start=3).width) == 1000
    assert budgets.solve_width(quadratic, 10, start=50) == budgets.Solution(
        1, quadratic(1), "below"
    )
    top = budgets.solve_width(quadratic, 1e12, start=50, top=100)
    assert top == budgets.Solution(100, quadratic(100), "above")


def test_flops_per_step_leaves_the_model_and_the_rng_untouched(image_task) -> None:
    torch.manual_seed(0)
    model = build_model("resnet-8", image_task.input_spec(), options("resnet-8", width=4))
    before = copy.deepcopy(model.state_dict())
    state = torch.random.get_rng_state()
    flops = budgets.flops_per_step(model, image_task, 8)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():  # weights and batch-norm statistics
        assert torch.equal(value, before[key]), key
    # Shapes only on the meta device, yet the same count as real arithmetic on the CPU,
    # and linear in the batch size.
    batch = image_task.fake_batch(8)
    assert flops == budgets._count_on_cpu(copy.deepcopy(model), image_task, batch)
    assert budgets.flops_per_step(model, image_task, 16) == 2 * flops


class NeedsValues(nn.Module):
    """A model that reads a value (as packing by lengths does), which the meta device cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 3)

    def forward(self, x: Tensor) -> Tensor:
        scale = float(x.abs().max().item()) + 1.0
        return self.linear(x.flatten(1)) / scale


def test_flops_per_step_falls_back_to_real_arithmetic(image_task) -> None:
    flops = budgets.flops_per_step(NeedsValues(), image_task.__class__(shape=(1, 4, 4)), 8)
    assert flops == 2 * 8 * 16 * 3 * 2  # forward and weight gradient of one Linear


def test_flops_per_step_is_none_with_a_warning_when_uncountable(image_task) -> None:
    class Broken(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            raise RuntimeError("cannot run")

    with pytest.warns(UserWarning, match="FLOPs not counted: cannot run"):
        assert budgets.flops_per_step(Broken(), image_task, 4) is None


def test_total_flops_budget_gives_each_model_its_steps() -> None:
    assert budgets.steps_for_flops(3e8, 1e12) == 3333
    assert budgets.steps_for_flops(3e8, 1e3) == 1  # at least one step
    with pytest.raises(UsageError, match="FLOPs per step"):
        budgets.steps_for_flops(0.0, 1e12)
    config = budgets.apply_flops_budget(TrainConfig(epochs=2.0), 4e8, 1e12)
    assert (config.steps, config.epochs) == (2500, None)
    record = budgets.flops_budget_record(1e12, 3e8, 3333)
    assert record["kind"] == "flops" and record["achieved"] == pytest.approx(9.999e11)
    assert abs(record["rel_error"]) <= 0.5 * 3e8 / 1e12


def test_step_time_is_the_median_of_timed_steps_after_warm_up(image_task) -> None:
    ticks = iter([0, 1, 1, 3, 3, 4, 4, 10])  # steps of 1 (warm-up), 2, 1 and 6 seconds
    model = build_model("plain-8", image_task.input_spec(), options("plain-8", width=4))
    before = copy.deepcopy(model.state_dict())
    config = TrainConfig(steps=1, batch_size=4)
    seconds = budgets.measure_step_seconds(
        model, image_task, config, torch.device("cpu"), steps=3, clock=lambda: next(ticks)
    )
    assert seconds == 2
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_run_matched_on_flops_records_it(image_task, results_dir) -> None:
    from gradbench.records import ResultsStore
    from gradbench.runner import Plan, run_plan

    plan = Plan(
        task="fake",
        models=[parse_model_arg("resnet-8:width=6"), parse_model_arg("plain-14")],
        seeds=[0],
        train=TrainConfig(steps=1, batch_size=8, probes="off", device="cpu"),
        match="flops",
        match_target=None,
    )
    records = run_plan(plan, image_task, ResultsStore(results_dir))
    target = records[0]["budget"]["match_target"]
    assert records[0]["flops_per_step"] == target
    for record in records:
        budget = record["budget"]
        assert budget["match"] == "flops" and budget["match_tolerance"] == 0.02
        assert record["flops_per_step"] == budget["match_achieved"]
        assert budget["match_rel_error"] == pytest.approx(
            (budget["match_achieved"] - target) / target
        )
        assert record["model_options"]["width"] == budget["match_width"]
