"""Memory layout of convolution weights, and why the default stays PyTorch's contiguous one.

oneDNN, which computes PyTorch's CPU convolutions, works in channels-last (NHWC, and
NDHWC for 3-D). With the weights in channels-last every activation after the first
convolution stays channels-last, and one eager fp32 training step gets faster
(``python bench/layout_speed.py``, this 2-core Xeon, one thread): resnet-20 1.14x,
plain-20 1.17x, resnet-56 1.15x, frame-CNN + GRU on video 1.32x, plain3d-8 2.22x.

It is not the default, because it makes the gradients less exact, and gradients are
what gradbench measures. PyTorch's eager channels-last batch-norm backward on the CPU
accumulates in fp32 less precisely than the contiguous kernel (about 100x the error of
the input and weight gradients against float64: tests/test_layout.py), and through a
batch-normalised stack the error grows with depth. Worst parameter tensor's relative
error of one Fashion-MNIST batch's gradients against float64, contiguous / channels-
last (same bench run): plain-20 6.7e-4 / 6.4e-2, resnet-56 1.5e-2 / 7.6e-2, plain3d-8
1.9e-3 / 1.3e-1; without batch norm (plain-8) 8.6e-6 for both. Two runs that differ only
in layout part visibly within a few steps. ``--fast`` uses channels-last only where it
compiles the step: inductor's own kernels are as precise as contiguous eager (resnet-20:
2.9e-3, against 3.5e-3 contiguous eager and 2.1e-2 channels-last eager).
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
