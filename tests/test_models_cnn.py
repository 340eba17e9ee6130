"""Plain CNN vs ResNet (and the MLP): matched sizes, depth rules, gradients, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from gradbench_tasks.image import ImageClassification
from torch import nn

from gradbench.errors import UsageError
from gradbench.models.build import build_model, model_options
from gradbench.task import InputSpec

FASHION = InputSpec(kind="image", shape=(1, 28, 28), num_outputs=10)
CIFAR = InputSpec(kind="image", shape=(3, 32, 32), num_outputs=10)


def make(name: str, spec: InputSpec = FASHION, **options) -> nn.Module:
    resolved = model_options(name) | options
    return build_model(name, spec, resolved)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def image_task() -> ImageClassification:
    """The real image task class on a few random images (its fake_batch needs no files)."""
    images = torch.randn(8, 1, 28, 28)
    labels = torch.arange(8) % 10
    return ImageClassification(
        "image", "fashion-mnist", (images, labels), (images, labels), "synthetic", "t", 10
    )


def test_resnet20_has_the_published_parameter_count() -> None:
    # He et al. (2016), CIFAR-10 ResNet-20 with option-A shortcuts: 0.27M (269,722).
    assert count(make("resnet-20", CIFAR)) == 269_722


def test_width_multiplier_rounds_each_stage_and_defaults_to_the_paper() -> None:
    assert model_options("resnet-20")["width_multiplier"] == 1.0
    paper, scaled = make("resnet-20", CIFAR), make("resnet-20", CIFAR, width_multiplier=1.0)
    assert count(paper) == count(scaled) == 269_722

    def stage_channels(model: nn.Module) -> list[int]:
        return [model.stem[0].out_channels] + [model.blocks[i].conv1.out_channels for i in (3, 6)]

    assert stage_channels(make("plain-20", width=15, width_multiplier=1.03)) == [15, 31, 62]
    assert stage_channels(make("plain-20", width=15, width_multiplier=1.0)) == [15, 30, 60]
    resnet = make("resnet-20", width=15, width_multiplier=1.03)
    assert count(resnet) == count(make("plain-20", width=15, width_multiplier=1.03))
    resnet(torch.randn(2, 1, 28, 28)).sum().backward()  # uneven zero-padded shortcuts run
    with pytest.raises(UsageError, match="width_multiplier must be > 0"):
        make("plain-8", width_multiplier=0.0)


@pytest.mark.parametrize("depth", [8, 14, 20, 56])
@pytest.mark.parametrize("width", [4, 16])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_plain_and_resnet_have_identical_parameter_counts(
    depth: int, width: int, batch_norm: bool
) -> None:
    plain = make(f"plain-{depth}", width=width, batch_norm=batch_norm)
    resnet = make(f"resnet-{depth}", width=width, batch_norm=batch_norm)
    assert count(plain) == count(resnet) > 0
    # Same modules under the same names: the pair differs in the forward pass only.
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [
        (k, v.shape) for k, v in resnet.state_dict().items()
    ]


def test_the_pair_differs_only_by_the_shortcuts() -> None:
    plain = make("plain-8", width=4).eval()
    resnet = make("resnet-8", width=4).eval()
    resnet.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(plain(x), resnet(x))
    # With every shortcut switched off the two compute the same function.
    for block in resnet.blocks:
        block.residual = False
    torch.testing.assert_close(plain(x), resnet(x))


def test_depth_grows_by_six_per_block_per_stage() -> None:
    convs = [
        sum(isinstance(m, nn.Conv2d) for m in make(f"resnet-{d}", width=4).modules())
        for d in (8, 14, 20)
    ]
    linears = sum(isinstance(m, nn.Linear) for m in make("resnet-20", width=4).modules())
    # depth = convolutions + the linear classifier
    assert [c + linears for c in convs] == [8, 14, 20]


@pytest.mark.parametrize("name", ["resnet-7", "plain-10", "resnet-2", "plain-0"])
def test_depth_must_be_6n_plus_2(name: str) -> None:
    with pytest.raises(UsageError, match="6n\\+2"):
        make(name)


def test_batch_norm_switch() -> None:
    with_bn = make("resnet-8", width=4)
    without = make("resnet-8", width=4, batch_norm=False)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in with_bn.modules()) == 7
    assert not any(isinstance(m, nn.BatchNorm2d) for m in without.modules())
    # Without batch norm the convolutions carry their own bias; with it they do not.
    assert all(m.bias is not None for m in without.modules() if isinstance(m, nn.Conv2d))
    assert all(m.bias is None for m in with_bn.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize(
    "name, options",
    [
        ("plain-8", {"width": 4}),
        ("resnet-8", {"width": 4}),
        ("resnet-8", {"width": 4, "batch_norm": False, "activation": "tanh"}),
        ("mlp-3", {"width": 8}),
        ("mlp-4", {"width": 8, "batch_norm": True, "residual": True, "activation": "sigmoid"}),
    ],
)
def test_every_parameter_gets_a_finite_gradient(name: str, options: dict) -> None:
    task = image_task()
    torch.manual_seed(0)
    model = make(name, task.input_spec(), **options).train()
    batch = task.fake_batch(batch_size=4)
    output = model(batch.x)
    assert output.shape == (4, 10)
    task.loss(output, batch).backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{pname} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{pname} has a non-finite gradient"
        assert param.grad.abs().sum() > 0, f"{pname} has an all-zero gradient"


def test_activation_option_replaces_every_activation() -> None:
    model = make("plain-8", width=4, activation="tanh")
    assert any(isinstance(m, nn.Tanh) for m in model.modules())
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    mlp = make("mlp-4", width=8, activation="sigmoid")
    assert sum(isinstance(m, nn.Sigmoid) for m in mlp.modules()) == 3


def test_mlp_depth_counts_weight_layers() -> None:
    assert sum(isinstance(m, nn.Linear) for m in make("mlp-5", width=8).modules()) == 5
    with pytest.raises(UsageError, match=">= 2"):
        make("mlp-1")


@pytest.mark.parametrize(
    "name, options, message",
    [
        ("plain-8", {"activation": "swish"}, "unknown activation 'swish'"),
        ("plain-8", {"init": "glorot"}, "unknown init 'glorot'"),
        ("mlp-3", {"init": "normal:-1"}, "STD > 0"),
        ("mlp-3", {"init": "normal:abc"}, "STD > 0"),
        ("plain-8", {"width": 0}, "width .* must be >= 1"),
        ("mlp-3", {"width": 0}, "width must be >= 1"),
    ],
)
def test_bad_options_are_usage_errors(name: str, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        make(name, **options)


def test_cnn_needs_an_image_task_and_mlp_real_inputs() -> None:
    sequence = InputSpec(kind="sequence", shape=(10, 2), num_outputs=1, target="regression")
    tokens = InputSpec(kind="tokens", shape=(10,), num_outputs=2, vocab_size=50, pad_index=0)
    with pytest.raises(UsageError, match="image task"):
        make("resnet-8", sequence)
    with pytest.raises(UsageError, match="token ids"):
        make("mlp-3", tokens)
    assert make("mlp-3", sequence, width=4)(torch.randn(2, 10, 2)).shape == (2, 1)


def weight_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def test_he_init_gives_std_sqrt_2_over_fan_in() -> None:
    torch.manual_seed(0)
    model = make("mlp-3", width=256, init="he")
    for layer in weight_layers(model):
        fan_in = layer.weight.shape[1]
        expected = math.sqrt(2.0 / fan_in)
        assert layer.weight.std().item() == pytest.approx(expected, rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0
    conv = weight_layers(make("resnet-8", width=16, init="he"))[3]
    fan_in = conv.weight[0].numel()
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_in), rel=0.05)


def test_he_init_for_saturating_units_uses_their_gain() -> None:
    torch.manual_seed(0)
    hidden = weight_layers(make("mlp-3", width=256, activation="tanh", init="he"))[1]
    expected = (5.0 / 3.0) / math.sqrt(256)  # calculate_gain("tanh") / sqrt(fan_in)
    assert hidden.weight.std().item() == pytest.approx(expected, rel=0.05)


def test_xavier_init_bounds() -> None:
    torch.manual_seed(0)
    hidden = weight_layers(make("mlp-3", width=128, activation="sigmoid", init="xavier"))[1]
    bound = 1.0 * math.sqrt(6.0 / (128 + 128))  # gain of sigmoid is 1
    assert hidden.weight.abs().max().item() <= bound
    assert hidden.weight.abs().max().item() > 0.95 * bound  # uniform fills its range


def test_orthogonal_init_is_orthogonal_with_the_activation_gain() -> None:
    torch.manual_seed(0)
    hidden = weight_layers(make("mlp-3", width=32, init="orthogonal"))[1].weight.detach()
    torch.testing.assert_close(hidden @ hidden.T, 2.0 * torch.eye(32), atol=1e-4, rtol=0)


def test_normal_init_and_default_init() -> None:
    torch.manual_seed(0)
    model = make("mlp-3", width=256, init="normal:0.01")
    assert weight_layers(model)[1].weight.std().item() == pytest.approx(0.01, rel=0.05)
    # "default" leaves the framework's initialisation alone: same seed, same weights.
    torch.manual_seed(1)
    default = make("mlp-3", width=16, init="default")
    torch.manual_seed(1)
    untouched = make("mlp-3", width=16)
    for a, b in zip(default.parameters(), untouched.parameters(), strict=True):
        assert torch.equal(a, b)


def test_init_leaves_batch_norm_at_one_and_zero() -> None:
    model = make("resnet-8", width=4, init="he")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight))
            assert torch.equal(m.bias, torch.zeros_like(m.bias))
