"""The mitigation switches of issue 14: PReLU/ELU/GELU and the leaky slope, --norm, residual.

Each test checks that a switch changes what it should (the module built, the parameters
it adds, the forward pass) and nothing else, on every model family that has the part.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradbench.errors import UsageError
from gradbench.mitigations import make_activation, parse_activation
from gradbench.models.build import build_model, model_options, parse_model_arg, resolve_options
from gradbench.plugins import load_plugins
from gradbench.task import InputSpec

IMAGE = InputSpec(kind="image", shape=(1, 12, 12), num_outputs=3)
TOKENS = InputSpec(kind="tokens", shape=(6,), num_outputs=2, vocab_size=11)

load_plugins()


def build(text: str, spec: InputSpec = IMAGE, shared: dict | None = None, seed: int = 0):
    parsed = parse_model_arg(text)
    options = resolve_options(parsed, shared or {}, spec.kind)
    torch.manual_seed(seed)
    return build_model(parsed.name, spec, options), options


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def modules_of(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.mark.parametrize(
    "name, kind", [("prelu", nn.PReLU), ("elu", nn.ELU), ("gelu", nn.GELU), ("relu", nn.ReLU)]
)
def test_activation_names_build_their_module(name: str, kind: type) -> None:
    assert isinstance(make_activation(name), kind)


def test_leaky_relu_takes_its_slope() -> None:
    assert make_activation("leaky_relu").negative_slope == 0.01
    assert make_activation("leaky_relu:0.2").negative_slope == 0.2
    assert parse_activation("leaky_relu:0.2") == ("leaky_relu", 0.2)
    for bad in ("leaky_relu:x", "leaky_relu:1.5", "prelu:0.3", "swish"):
        with pytest.raises(UsageError):
            make_activation(bad)


@pytest.mark.parametrize("model", ["plain-8:width=4", "resnet-8:width=4", "mlp-4:width=8"])
def test_prelu_adds_one_learnable_slope_per_activation_layer(model: str) -> None:
    relu, _ = build(model)
    prelu, options = build(f"{model},activation=prelu")
    assert options["activation"] == "prelu"
    layers = modules_of(prelu, nn.PReLU)
    assert layers and not modules_of(relu, nn.PReLU)
    assert count(prelu) - count(relu) == len(layers)  # one slope each, none shared
    assert len({id(layer.weight) for layer in layers}) == len(layers)
    # The slopes learn: one SGD step on a loss through them moves every one.
    x = torch.randn(4, *IMAGE.shape)
    prelu(x).sum().backward()
    assert all(layer.weight.grad is not None and layer.weight.grad.abs() > 0 for layer in layers)


def test_prelu_reaches_the_transformer_blocks_one_slope_each() -> None:
    model, _ = build("transformer:width=8,depth=2,heads=2,activation=prelu", TOKENS)
    layers = modules_of(model, nn.PReLU)
    assert len(layers) == 2 and layers[0].weight is not layers[1].weight


def test_shared_activation_option_reaches_every_model() -> None:
    for text in ("plain-8:width=4", "mlp-3:width=8"):
        model, _ = build(text, shared={"activation": "elu"})
        assert modules_of(model, nn.ELU) and not modules_of(model, nn.ReLU)


@pytest.mark.parametrize("family", ["plain-8", "resnet-8"])
@pytest.mark.parametrize(
    "norm, layer, groups",
    [("batch", nn.BatchNorm2d, None), ("layer", nn.GroupNorm, 1), ("group", nn.GroupNorm, 4)],
)
def test_norm_switch_builds_the_named_normalisation(family, norm, layer, groups) -> None:
    model, options = build(f"{family}:width=4,norm={norm}")
    assert options["norm"] == norm and options["batch_norm"] == (norm == "batch")
    norms = modules_of(model, layer)
    assert len(norms) == 7  # stem + two per block (three blocks at depth 8)
    if groups is not None:
        # Width 4: 4, 8, 16 channels; group norm takes gcd(C, 32) groups, layer norm one.
        assert norms[0].num_groups == groups
        assert not modules_of(model, nn.BatchNorm2d)
    # Normalised convolutions carry no bias; the parameter count is batch norm's.
    assert count(model) == count(build(f"{family}:width=4")[0])


def test_norm_none_and_the_batch_norm_shorthand_agree() -> None:
    none, options = build("plain-8:width=4,norm=none")
    short, short_options = build("plain-8:width=4", shared={"batch_norm": False})
    assert options["norm"] == short_options["norm"] == "none"
    assert options["batch_norm"] is short_options["batch_norm"] is False
    assert not modules_of(none, nn.BatchNorm2d) and not modules_of(none, nn.GroupNorm)
    assert count(none) == count(short)
    # --no-batch-norm beside norm=layer: batch norm off, layer norm on.
    _, both = build("plain-8:width=4,norm=layer", shared={"batch_norm": False})
    assert both["norm"] == "layer"


@pytest.mark.parametrize(
    "text, shared",
    [
        ("plain-8:norm=layer,batch_norm=true", {}),
        ("plain-8:norm=batch", {"batch_norm": False}),
        ("plain-8:norm=instance", {}),
    ],
)
def test_contradicting_or_unknown_norms_are_usage_errors(text: str, shared: dict) -> None:
    with pytest.raises(UsageError, match="norm"):
        resolve_options(parse_model_arg(text), shared, "image")


def test_mlp_takes_layer_and_group_norm() -> None:
    layer, _ = build("mlp-4:width=8,norm=layer")
    group, _ = build("mlp-4:width=8,norm=group")
    assert len(modules_of(layer, nn.LayerNorm)) == 2
    assert [m.num_groups for m in modules_of(group, nn.GroupNorm)] == [8, 8]
    assert layer(torch.randn(3, *IMAGE.shape)).shape == (3, 3)


@pytest.mark.parametrize("depth", [8, 14])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_plain_with_residual_true_is_the_resnet(depth: int, batch_norm: bool) -> None:
    shared = {"batch_norm": batch_norm}
    switched, options = build(f"plain-{depth}:width=4,residual=true", shared=shared, seed=3)
    resnet, _ = build(f"resnet-{depth}:width=4", shared=shared, seed=3)
    assert options["residual"] is True
    assert count(switched) == count(resnet)
    # Same seed, same modules: the same weights and the same function.
    for (name, a), (other, b) in zip(
        switched.state_dict().items(), resnet.state_dict().items(), strict=True
    ):
        assert name == other and torch.equal(a, b)
    x = torch.randn(2, *IMAGE.shape)
    torch.testing.assert_close(switched.eval()(x), resnet.eval()(x), rtol=0, atol=0)


def test_residual_switch_changes_the_forward_only() -> None:
    plain, _ = build("plain-8:width=4", seed=1)
    resnet_off, _ = build("resnet-8:width=4,residual=false", seed=1)
    x = torch.randn(2, *IMAGE.shape)
    torch.testing.assert_close(plain.eval()(x), resnet_off.eval()(x), rtol=0, atol=0)
    on, _ = build("plain-8:width=4,residual=true", seed=1)
    assert count(on) == count(plain) and not torch.allclose(on.eval()(x), plain(x))


def test_the_new_options_are_listed_with_their_defaults() -> None:
    assert model_options("plain-20")["residual"] is False
    assert model_options("resnet-20")["residual"] is True
    assert model_options("plain-20")["norm"] == "auto"  # follows batch_norm unless given
    assert model_options("mlp-4")["norm"] == "auto"
