"""Per-timestep gradient norms ||∂L/∂h_t|| and their decay rate.

For a model exposing ``hidden_sequence(x, lengths) -> (output, [h_0 .. h_{T-1}])``,
``torch.autograd.grad(loss, hs)`` gives the total derivative of the loss with respect
to each hidden state (through every later state), without touching ``.grad``. In a
tanh RNN it shrinks roughly geometrically with the distance from the loss, by the
product of the recurrent Jacobians (Bengio et al. 1994; Pascanu et al. 2013); the
LSTM's additive cell path keeps it flatter (Hochreiter & Schmidhuber 1997). The decay
rate is the least-squares slope of log10 ||∂L/∂h_t|| against the distance T-1-t from
the end of the sequence: -0.1 means a factor of 10 lost every 10 steps.

The extra forward pass must not change training: it runs in the model's current mode
(so the gradient is the one training sees) under a forked RNG (dropout masks drawn
here do not shift the training stream), and every buffer (BatchNorm running
statistics) is restored afterwards.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gradbench.probes.layer_norms import NORM_FLOOR
from gradbench.task import Batch, Task

# Samples of the training batch the probe looks at: the decay rate is a property of the
# network, visible on a few samples, and the pass costs in proportion to them.
DEFAULT_SAMPLES = 4


def has_hidden_sequence(model: nn.Module) -> bool:
    return callable(getattr(model, "hidden_sequence", None))


def head(batch: Batch, samples: int) -> Batch:
    lengths = None if batch.lengths is None else batch.lengths[:samples]
    return Batch(batch.x[:samples], batch.y[:samples], lengths)


def timestep_grad_norms(
    model: nn.Module, task: Task, batch: Batch, samples: int = DEFAULT_SAMPLES
) -> np.ndarray:
    """||∂L/∂h_t|| (Frobenius norm over the sampled batch) for t = 0 .. T-1; 0 where unused."""
    sample = head(batch, samples)
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [sample.x.device] if sample.x.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            # A model may offer the same norms from one fused pass (gradbench's RNN/LSTM).
            fused = getattr(model, "hidden_grad_norms", None)
            norms_fused = (
                fused(sample.x, sample.lengths, lambda out: task.loss(out, sample))
                if fused is not None
                else None
            )
            if norms_fused is not None:
                return norms_fused.cpu().double().numpy()
            output, hs = model.hidden_sequence(sample.x, sample.lengths)
            loss = task.loss(output, sample)
            grads = torch.autograd.grad(loss, list(hs), allow_unused=True)
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
    norms = [
        g.detach().float().norm() if g is not None else torch.zeros((), device=sample.x.device)
        for g in grads
    ]
    if not norms:
        return np.zeros(0)
    return torch.stack(norms).cpu().double().numpy()


def decay_rate(norms: np.ndarray) -> float:
    """Slope of log10 norm against distance from the end (per step); nan if under 2 points.

    Steps whose gradient is exactly zero (never reached, or underflowed) are left out of
    the fit; ``log10_start_to_end`` below still counts a zero at the start, floored.
    """
    norms = np.asarray(norms, dtype=np.float64)
    distance = np.arange(len(norms))[::-1].astype(np.float64)
    usable = np.isfinite(norms) & (norms > 0)
    if usable.sum() < 2:
        return math.nan
    slope, _ = np.polyfit(distance[usable], np.log10(norms[usable]), 1)
    return float(slope)


def log10_start_to_end(norms: np.ndarray) -> float:
    """log10(||∂L/∂h_0|| / ||∂L/∂h_e||), e the last step with a non-zero gradient.

    How much of the gradient arriving at the end of the sequence reaches its start.
    """
    norms = np.asarray(norms, dtype=np.float64)
    reached = np.flatnonzero(np.isfinite(norms) & (norms > 0))
    if len(norms) < 2 or len(reached) == 0 or not np.isfinite(norms[0]):
        return math.nan
    end = float(norms[reached[-1]])
    return math.log10(max(float(norms[0]), NORM_FLOOR)) - math.log10(end)
