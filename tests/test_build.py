"""Model arguments (NAME:key=value), option typing, shared options, and building."""

from __future__ import annotations

import pytest
from torch import nn

from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.models.build import (
    ModelSpec,
    build_model,
    model_options,
    parse_model_arg,
    resolve_options,
)
from gradbench.registry import MODELS
from gradbench.runner import Plan, prepare_models
from gradbench.task import InputSpec

SPEC = InputSpec(kind="image", shape=(1, 8, 8), num_outputs=3)


def test_name_only() -> None:
    spec = parse_model_arg("resnet-20")
    assert spec == ModelSpec("resnet-20", {})
    assert spec.label == "resnet-20"


def test_options_are_converted_to_the_type_of_their_default() -> None:
    spec = parse_model_arg(" plain-8 : width=4 , batch-norm=off, activation=tanh,init=he")
    assert spec.name == "plain-8"
    assert spec.options == {"width": 4, "batch_norm": False, "activation": "tanh", "init": "he"}
    assert isinstance(spec.options["width"], int)
    assert spec.label == "plain-8:activation=tanh,batch_norm=False,init=he,width=4"


@pytest.mark.parametrize(
    "text, value", [("yes", True), ("1", True), ("On", True), ("false", False), ("0", False)]
)
def test_boolean_spellings(text: str, value: bool) -> None:
    assert parse_model_arg(f"mlp-3:residual={text}").options["residual"] is value


@pytest.mark.parametrize(
    "text, message",
    [
        ("mlp-3:width=abc", "width='abc' is not an integer"),
        ("mlp-3:width=2.5", "is not an integer"),
        ("mlp-3:residual=maybe", "is not true or false"),
        ("plain-8:foo=1", "model plain-8 has no option 'foo'; it takes activation, batch_norm"),
        ("plain-8:width", "must be written key=value"),
        ("plain-8:=4", "must be written key=value"),
        (":width=4", "has no name"),
        ("resnt-8", "unknown model 'resnt-8'; did you mean resnet-8"),
        ("plain-8:depth=14", "depth is set by the name"),
    ],
)
def test_bad_model_arguments(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_model_arg(text)


def test_depth_may_be_given_to_the_bare_family_name() -> None:
    assert parse_model_arg("plain:depth=14").options == {"depth": 14}


def test_model_options_lists_defaults_with_the_suffix_applied() -> None:
    options = model_options("resnet-56")
    assert options == {
        "depth": 56,
        "width": 16,
        "activation": "relu",
        "batch_norm": True,
        "norm": "auto",
        "residual": True,
        "width_multiplier": 1.0,
        "init": "default",
    }


def test_resolve_precedence_defaults_shared_own() -> None:
    spec = parse_model_arg("plain-8:width=4")
    resolved = resolve_options(
        spec, {"width": 8, "activation": "tanh", "batch_norm": None, "init": None}
    )
    assert resolved["width"] == 4  # the model's own option wins over the shared one
    assert resolved["activation"] == "tanh"  # shared, given
    assert resolved["batch_norm"] is True  # shared but not given (None): the default
    assert resolved["init"] == "default"


def test_shared_string_values_are_converted_too() -> None:
    resolved = resolve_options(parse_model_arg("mlp-3"), {"width": "12", "residual": "true"})
    assert resolved["width"] == 12 and resolved["residual"] is True


def test_bad_shared_init_fails_at_resolution() -> None:
    with pytest.raises(UsageError, match="unknown init"):
        resolve_options(parse_model_arg("mlp-3"), {"init": "zeros"})


@pytest.fixture
def narrow_model(restore_registries: None) -> str:
    """A model that takes width (with a None-default option) but no activation."""

    @MODELS.register("narrow-test")
    def narrow(spec: InputSpec, *, width: int = 4, dropout: float | None = None) -> nn.Module:
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.Linear(width, 3))
        model.dropout = dropout
        return model

    return "narrow-test"


def test_shared_options_apply_only_to_models_that_take_them(narrow_model: str) -> None:
    shared = {"width": 6, "activation": "tanh"}
    narrow = resolve_options(parse_model_arg(narrow_model), shared)
    mlp = resolve_options(parse_model_arg("mlp-3"), shared)
    assert narrow == {"width": 6, "dropout": None, "init": "default"}
    assert mlp["width"] == 6 and mlp["activation"] == "tanh"


def test_a_shared_option_no_chosen_model_takes_is_an_error(
    narrow_model: str, make_fake_task
) -> None:
    plan = Plan(
        task="fake",
        models=[parse_model_arg(narrow_model)],
        seeds=[0],
        train=TrainConfig(steps=1, batch_size=16),
        shared_model_options={"activation": "tanh", "width": None},
    )
    with pytest.raises(UsageError, match="no chosen model takes the option\\(s\\) activation"):
        prepare_models(plan, make_fake_task(shape=(1, 8, 8)))


def test_none_default_options_read_numbers_and_none(narrow_model: str) -> None:
    assert parse_model_arg(f"{narrow_model}:dropout=0.25").options == {"dropout": 0.25}
    assert parse_model_arg(f"{narrow_model}:dropout=none").options == {"dropout": None}


def test_build_model_applies_factory_options_and_init() -> None:
    spec = parse_model_arg("mlp-3:width=64,init=normal:0.5")
    model = build_model(spec.name, SPEC, resolve_options(spec, {}))
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [64, 64, 3]
    assert linears[1].weight.std().item() == pytest.approx(0.5, rel=0.1)


def test_impossible_sizes_fail_at_prepare_time_with_one_line(make_fake_task) -> None:
    plan = Plan(
        task="fake",
        models=[parse_model_arg("mlp-3"), parse_model_arg("resnet-14")],
        seeds=[0],
        train=TrainConfig(steps=1, batch_size=16),
        shared_model_options={"width": -3},
    )
    with pytest.raises(UsageError) as caught:
        prepare_models(plan, make_fake_task(shape=(1, 8, 8)))
    assert "width must be >= 1" in str(caught.value) and "\n" not in str(caught.value)
