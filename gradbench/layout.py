"""Memory layout of convolution weights: channels-last on the CPU, by default.

oneDNN, which computes PyTorch's CPU convolutions, works in channels-last (NHWC, and
NDHWC for 3-D). A model left in PyTorch's default contiguous layout pays a reorder of
its weights and activations on every convolution, forward and backward. With the
weights in channels-last, every activation after the first convolution stays
channels-last too, so no reorder is left. Measured on this 2-core Xeon (fp32, 1 thread,
one training step; ``python bench/layout_speed.py``): resnet-20 1.13x, plain-20 1.16x,
resnet-56 1.15x, frame-CNN + GRU on video 1.71x, plain3d-8 2.19x, resnet3d-8 1.93x.

The arithmetic stays fp32: only the order of the sums inside oneDNN's kernels changes,
so figures move at the rounding level (tests/test_layout.py bounds it). The layout is
not part of a cell's identity (``gradbench.cells``), as the thread count is not; each
record names it (``environment.memory_format``).

On CUDA the default stays contiguous: cuDNN's fp32 kernels gain from channels-last only
with tensor cores, which fast mode's bf16 brings (``gradbench.fast`` converts there).
"""

from __future__ import annotations

import torch
from torch import nn

CHANNELS_LAST = "channels_last"
CONTIGUOUS = "contiguous"


def to_channels_last(model: nn.Module) -> bool:
    """Put every 2-D and 3-D convolution's weight in channels-last; whether any was."""
    converted = False
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.to(memory_format=torch.channels_last)
            converted = True
        elif isinstance(module, nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
            converted = True
    return converted


def apply_default(model: nn.Module, device: torch.device) -> str:
    """The default layout for ``model`` on ``device``, applied; its name for the record."""
    if device.type == "cpu" and to_channels_last(model):
        return CHANNELS_LAST
    return CONTIGUOUS
