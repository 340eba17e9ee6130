"""Plain 3D CNN and 3D ResNet for video, side by side: ``cnn.py``'s pair with 3x3x3 kernels.

The CIFAR-style layout of ``cnn.py`` (depth 6n+2: a stem, three stages of n
two-convolution blocks of widths w, 2w, 4w, stride 2 entering stages 2 and 3, global
average pooling, a linear classifier) with every convolution a 3x3x3 one over
(time, height, width), striding time as well as space, as the 3D ResNets of Hara et al.
(2018) do. ``plain3d-N`` and ``resnet3d-N`` differ only by the parameter-free identity
shortcuts (option A: subsample in time and space, zero-pad channels), so the pair has
exactly the same parameters at every depth and width.
"""

from __future__ import annotations

from torch import Tensor, nn

from gradbench.errors import UsageError
from gradbench.models.cnn import check_depth, cifar_stages, cifar_stem
from gradbench.models.video import check_video_spec
from gradbench.registry import MODELS
from gradbench.task import InputSpec


class Cifar3dNet(nn.Module):
    def __init__(
        self,
        spec: InputSpec,
        depth: int,
        width: int,
        activation: str,
        batch_norm: bool,
        residual: bool,
    ):
        super().__init__()
        name = "resnet3d" if residual else "plain3d"
        _, channels, _, _ = check_video_spec(spec, name)
        blocks_per_stage = check_depth(depth)
        if width < 1:
            raise UsageError(f"{name}: width (stem channels) must be >= 1, got {width}")
        norm = "batch" if batch_norm else "none"
        stage_channels = [width * 2**stage for stage in range(3)]
        self.stem = cifar_stem(channels, width, activation, norm, spatial_dims=3)
        self.blocks = cifar_stages(
            stage_channels, blocks_per_stage, activation, norm, residual, spatial_dims=3
        )
        self.head = nn.Linear(stage_channels[-1], spec.num_outputs)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        # Clips arrive as (B, T, C, H, W); Conv3d reads (B, C, T, H, W).
        x = self.blocks(self.stem(x.transpose(1, 2)))
        return self.head(x.mean(dim=(2, 3, 4)))


@MODELS.register(
    "plain3d",
    suffix_param="depth",
    tags=("cnn3d", "video"),
    description="Plain 3D CNN of depth 6n+2 (plain3d-8, plain3d-20): 3D ResNet minus shortcuts",
)
def plain3d(
    spec: InputSpec,
    *,
    depth: int = 8,
    width: int = 8,
    activation: str = "relu",
    batch_norm: bool = True,
) -> nn.Module:
    return Cifar3dNet(spec, depth, width, activation, batch_norm, residual=False)


@MODELS.register(
    "resnet3d",
    suffix_param="depth",
    tags=("cnn3d", "video"),
    description="3D ResNet of depth 6n+2 (resnet3d-8, resnet3d-20), option-A shortcuts",
)
def resnet3d(
    spec: InputSpec,
    *,
    depth: int = 8,
    width: int = 8,
    activation: str = "relu",
    batch_norm: bool = True,
) -> nn.Module:
    return Cifar3dNet(spec, depth, width, activation, batch_norm, residual=True)
