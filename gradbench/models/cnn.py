"""CIFAR-style plain CNN and ResNet (He et al. 2016, section 4.2), side by side.

Depth 6n+2: a 3x3 stem, three stages of n two-convolution blocks (widths w, 2w, 4w;
stride 2 entering stages 2 and 3), global average pooling and a linear classifier.
``plain-N`` and ``resnet-N`` are the same network except for the identity shortcuts,
which are parameter-free (option A: subsample and zero-pad channels), so the pair has
exactly the same parameter count at every depth and width. The shortcuts are a switch
(``plain-56:residual=true`` builds ``resnet-56``), and so is the normalisation
(``norm=batch|layer|group|none``; ``batch_norm=false`` is shorthand for ``norm=none``).

``width_multiplier`` (default 1.0: the paper's widths) scales every stage's channel
count before rounding it to whole channels: stage s has round(m * width * 2^s). It is
the budget solver's fine knob: one more base channel adds ~2/width of the parameters
(13% at width 15), while m moves one stage at a time by a channel or two, so a
parameter or FLOP target lands within ±2% (docs/budgets.md).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.errors import UsageError
from gradbench.mitigations import make_activation, make_norm, pick_norm
from gradbench.registry import MODELS
from gradbench.task import InputSpec


def check_depth(depth: int) -> int:
    if depth < 8 or (depth - 2) % 6:
        raise UsageError(
            f"CIFAR-style depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth}"
        )
    return (depth - 2) // 6


def spatial_norm(norm: str, channels: int, spatial_dims: int) -> nn.Module:
    """``make_norm`` for 2D feature maps, or 3D ones (video) where it is batch norm."""
    if spatial_dims == 3 and norm == "batch":
        return nn.BatchNorm3d(channels)
    return make_norm(norm, channels)


class Block(nn.Module):
    """Two 3x3 convolutions (3x3x3 with ``spatial_dims=3``), optionally with an option-A
    shortcut: subsample every spatial axis, zero-pad channels."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        activation: str,
        norm: str,
        residual: bool,
        spatial_dims: int = 2,
    ):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.residual = residual
        # A normalisation's shift makes the convolution's bias redundant.
        self.conv1 = conv(c_in, c_out, 3, stride, 1, bias=norm == "none")
        self.bn1 = spatial_norm(norm, c_out, spatial_dims)
        self.act1 = make_activation(activation)
        self.conv2 = conv(c_out, c_out, 3, 1, 1, bias=norm == "none")
        self.bn2 = spatial_norm(norm, c_out, spatial_dims)
        self.act2 = make_activation(activation)
        self.stride = stride
        self.pad = c_out - c_in
        self.spatial_dims = spatial_dims

    def shortcut(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            # Same output size as the strided convolution (padding 1): ceil(n / 2).
            every = slice(None, None, self.stride)
            x = x[(slice(None), slice(None)) + (every,) * self.spatial_dims]
        if self.pad:
            x = F.pad(x, (0, 0) * self.spatial_dims + (0, self.pad))
        return x

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + self.shortcut(x)
        return self.act2(out)


def cifar_stem(
    channels: int, width: int, activation: str, norm: str, spatial_dims: int = 2
) -> nn.Sequential:
    """The 3x3 (3x3x3) convolution, normalisation and activation before the stages."""
    conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
    return nn.Sequential(
        # A normalisation's shift makes the convolution's bias redundant.
        conv(channels, width, 3, 1, 1, bias=norm == "none"),
        spatial_norm(norm, width, spatial_dims),
        make_activation(activation),
    )


def cifar_stages(
    stage_channels: list[int],
    blocks_per_stage: int,
    activation: str,
    norm: str,
    residual: bool,
    spatial_dims: int = 2,
) -> nn.Sequential:
    """The three stages after the stem (whose width is ``stage_channels[0]``): n blocks
    each, stride 2 entering stages 2 and 3."""
    layers: list[nn.Module] = []
    c_in = stage_channels[0]
    for stage, c_out in enumerate(stage_channels):
        for index in range(blocks_per_stage):
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append(Block(c_in, c_out, stride, activation, norm, residual, spatial_dims))
            c_in = c_out
    return nn.Sequential(*layers)


class CifarNet(nn.Module):
    def __init__(
        self,
        spec: InputSpec,
        depth: int,
        width: int,
        activation: str,
        norm: str,
        residual: bool,
        width_multiplier: float = 1.0,
    ):
        super().__init__()
        if spec.kind != "image":
            raise UsageError(f"CNNs need an image task; this task's input is {spec.kind}")
        blocks_per_stage = check_depth(depth)
        if width < 1:
            raise UsageError(f"CNN width (stem channels) must be >= 1, got {width}")
        if not width_multiplier > 0:
            raise UsageError(f"CNN width_multiplier must be > 0, got {width_multiplier}")
        stage_channels = [max(1, round(width * 2**s * width_multiplier)) for s in range(3)]
        self.stem = cifar_stem(spec.shape[0], stage_channels[0], activation, norm)
        self.blocks = cifar_stages(stage_channels, blocks_per_stage, activation, norm, residual)
        self.head = nn.Linear(stage_channels[-1], spec.num_outputs)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))


@MODELS.register(
    "plain",
    suffix_param="depth",
    tags=("cnn", "image"),
    description="CIFAR-style plain CNN of depth 6n+2 (plain-20, plain-56): ResNet minus shortcuts",
)
def plain(
    spec: InputSpec,
    *,
    depth: int = 20,
    width: int = 16,
    activation: str = "relu",
    batch_norm: bool = True,
    norm: str = "auto",  # batch, layer, group, none; auto: as batch_norm says
    residual: bool = False,
    width_multiplier: float = 1.0,
) -> nn.Module:
    return CifarNet(
        spec, depth, width, activation, pick_norm(norm, batch_norm), residual, width_multiplier
    )


@MODELS.register(
    "resnet",
    suffix_param="depth",
    tags=("cnn", "image"),
    description="CIFAR ResNet of depth 6n+2 (resnet-20, resnet-56, ...), option-A shortcuts",
)
def resnet(
    spec: InputSpec,
    *,
    depth: int = 20,
    width: int = 16,
    activation: str = "relu",
    batch_norm: bool = True,
    norm: str = "auto",  # batch, layer, group, none; auto: as batch_norm says
    residual: bool = True,
    width_multiplier: float = 1.0,
) -> nn.Module:
    return CifarNet(
        spec, depth, width, activation, pick_norm(norm, batch_norm), residual, width_multiplier
    )
