"""Convolutional front end that subsamples time before a sequence encoder, as speech models do.

Speech encoders rarely run their recurrence at 100 frames per second: DeepSpeech 2 and
most CTC systems put strided convolutions first, so the encoder sees 2x or 4x fewer
steps (and the gradient crosses 2x or 4x fewer recurrent Jacobians). ``conv2`` is one
1-D convolution over time (kernel 3, stride 2, padding 1, ReLU), ``conv4`` two; each
keeps the feature count, so the encoder's own parameters do not change with it. Off by
default (``frontend=none``), so a plain RNN sees every frame.

A sample of length L comes out ceil(L / 2) long per convolution (ceil(L / k) in all),
and the frames past that are zeroed after every convolution, so a padded batch gives
each sample exactly what it would get alone.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.errors import UsageError

FRONTENDS = {"none": 1, "conv2": 2, "conv4": 4}


class ConvFrontEnd(nn.Module):
    """``log2(factor)`` strided Conv1d+ReLU over time on (B, T, F); also returns new lengths."""

    def __init__(self, features: int, factor: int):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(features, features, kernel_size=3, stride=2, padding=1)
            for _ in range(int(math.log2(factor)))
        )

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        h = x.transpose(1, 2)
        for conv in self.convs:
            h = F.relu(conv(h))
            if lengths is not None:
                lengths = torch.div(lengths + 1, 2, rounding_mode="floor")  # ceil(L / 2)
                steps = torch.arange(h.shape[-1], device=h.device)
                keep = steps[None, :] < lengths.to(h.device)[:, None]
                h = h * keep.unsqueeze(1).to(h.dtype)
        return h.transpose(1, 2), lengths


def make_frontend(name: str, features: int, model: str) -> ConvFrontEnd | None:
    """The front end named by a model's ``frontend`` option (None for ``none``)."""
    if name not in FRONTENDS:
        raise UsageError(f"{model}: frontend={name!r} is not one of {', '.join(FRONTENDS)}")
    factor = FRONTENDS[name]
    return ConvFrontEnd(features, factor) if factor > 1 else None


def subsampled_steps(steps: int, name: str) -> int:
    """Frames out of a front end for ``steps`` frames in: ceil(T / 2) per convolution."""
    for _ in range(int(math.log2(FRONTENDS.get(name, 1)))):
        steps = (steps + 1) // 2
    return steps
