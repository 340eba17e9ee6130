"""Plain 3D CNN vs 3D ResNet: equal parameters, shortcuts the only difference, per-layer norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gradbench.errors import UsageError
from gradbench.models.build import build_model, model_options
from gradbench.probes.layer_norms import LayerIndex, layer_grad_norms
from gradbench.probes.layers import model_layers
from gradbench.task import InputSpec

CLIP = InputSpec(kind="video", shape=(5, 1, 12, 12), num_outputs=4)


def make(name: str, spec: InputSpec = CLIP, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, spec, model_options(name) | {"width": 2} | options)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("depth", [8, 14])
@pytest.mark.parametrize("batch_norm", [True, False])
def test_plain3d_and_resnet3d_have_identical_parameters(depth: int, batch_norm: bool) -> None:
    plain = make(f"plain3d-{depth}", batch_norm=batch_norm)
    resnet = make(f"resnet3d-{depth}", batch_norm=batch_norm)
    assert count(plain) == count(resnet) > 0
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [
        (k, v.shape) for k, v in resnet.state_dict().items()
    ]
    convs = sum(isinstance(m, nn.Conv3d) for m in plain.modules())
    assert convs + 1 == depth  # depth = 3D convolutions + the linear classifier


def test_the_pair_differs_only_by_the_shortcuts() -> None:
    plain = make("plain3d-8").eval()
    resnet = make("resnet3d-8").eval()
    resnet.load_state_dict(plain.state_dict())
    x = torch.randn(2, 5, 1, 12, 12)
    assert not torch.allclose(plain(x), resnet(x))
    for block in resnet.blocks:
        block.residual = False
    torch.testing.assert_close(plain(x), resnet(x))


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (3, 3, 9, 7), (5, 1, 12, 12)])
def test_any_clip_shape_gives_logits_and_finite_gradients_everywhere(shape) -> None:
    spec = InputSpec(kind="video", shape=shape, num_outputs=3)
    model = make("resnet3d-8", spec)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 3)
    out.sum().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name


def test_per_layer_gradient_norms_cover_every_3d_layer_in_depth_order() -> None:
    model = make("plain3d-8", batch_norm=False)
    layers = model_layers(model)
    names = [layer.name for layer in layers]
    assert names[0].startswith("stem") and names[-1] == "head"
    assert sum(isinstance(m, nn.Conv3d) for m in model.modules()) == len(names) - 1
    model(torch.randn(2, 5, 1, 12, 12)).logsumexp(-1).sum().backward()
    norms = layer_grad_norms(LayerIndex(layers))
    assert norms.shape == (len(layers),) and (norms > 0).all()


def test_bad_depths_and_inputs_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="6n\\+2"):
        make("plain3d-10")
    with pytest.raises(UsageError, match="needs a video task"):
        make("resnet3d-8", InputSpec(kind="image", shape=(1, 12, 12), num_outputs=4))
    with pytest.raises(UsageError, match="width"):
        make("resnet3d-8", width=0)
