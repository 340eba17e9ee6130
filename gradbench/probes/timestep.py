"""Per-timestep gradient norms ||∂L/∂h_t||, aligned to each sequence's own end.

For a model exposing ``hidden_sequence(x, lengths) -> (output, [h_0 .. h_{T-1}])``,
``torch.autograd.grad(loss, hs)`` gives the total derivative of the loss with respect
to each hidden state (through every later state), without touching ``.grad``. In a
tanh RNN it shrinks roughly geometrically with the distance from the loss, by the
product of the recurrent Jacobians (Bengio et al. 1994; Pascanu et al. 2013); the
LSTM's additive cell path keeps it flatter (Hochreiter & Schmidhuber 1997).

Norms are kept **per sample** (the norm of sample i's ∂L/∂h_t over its hidden units),
with each sample's length, because in a padded batch position t means different things
for different samples: t = 40 is the end of one sentence and padding in another.
Every figure is taken over real positions only (padding is masked out) and measured
from each sequence's own end (distance d = length - 1 - t) or start (t):

- ``aligned``: per distance, the RMS over the samples that have that position;
- ``decay_rate``: least-squares slope of log10 ||∂L/∂h_t|| against d, pooled over
  the samples' real positions: -0.1 means a factor of 10 lost every 10 steps;
- ``log10_start_to_end``: per sample, log10 of ||∂L/∂h_0|| over ||∂L/∂h_e|| (e its
  last real step that got a gradient), then the median over samples.

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

# Samples of the training batch the probe looks at: per-sample figures need a few
# sequences of each length for the median and the fit to be stable (4 to 5 sampled
# steps per verdict window make 24 to 30); the pass costs in proportion to them on the
# fused path (an LSTM at T=100: 6 samples ~0.3 of a batch-64 training step) and hardly
# at all on the step-by-step one (its Python loop over T dominates).
DEFAULT_SAMPLES = 6


def has_hidden_sequence(model: nn.Module) -> bool:
    return callable(getattr(model, "hidden_sequence", None))


def head(batch: Batch, samples: int) -> Batch:
    lengths = None if batch.lengths is None else batch.lengths[:samples]
    return Batch(batch.x[:samples], batch.y[:samples], lengths)


def timestep_grad_norms(
    model: nn.Module, task: Task, batch: Batch, samples: int = DEFAULT_SAMPLES
) -> tuple[np.ndarray, np.ndarray]:
    """(norms, lengths): per-sample ||∂L/∂h_t||, (S, T), 0 at padded steps; lengths (S,)."""
    sample = head(batch, samples)
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    devices = [sample.x.device] if sample.x.device.type == "cuda" else []
    steps = sample.x.shape[1]
    lengths = (
        np.full(len(sample), steps, dtype=np.int64)
        if sample.lengths is None
        else sample.lengths.cpu().numpy().astype(np.int64)
    )
    try:
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            # A model may offer the same norms from one fused pass (gradbench's RNN/LSTM/GRU),
            # and say whether that pass is the cheaper one here.
            fused = getattr(model, "hidden_grad_norms", None)
            pays = getattr(model, "fused_probe_pays", None)
            norms_fused = (
                fused(sample.x, sample.lengths, lambda out: task.loss(out, sample))
                if fused is not None
                and (pays is None or pays(sample.x.device, sample.lengths is not None))
                else None
            )
            if norms_fused is not None:
                return _masked(norms_fused.cpu().double().numpy(), lengths), lengths
            output, hs = model.hidden_sequence(sample.x, sample.lengths)
            loss = task.loss(output, sample)
            grads = torch.autograd.grad(loss, list(hs), allow_unused=True)
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)
    if not grads:
        return np.zeros((len(sample), 0)), lengths
    zeros = torch.zeros(len(sample), device=sample.x.device)
    norms = [
        g.detach().float().reshape(len(sample), -1).norm(dim=1) if g is not None else zeros
        for g in grads
    ]
    return _masked(torch.stack(norms, dim=1).cpu().double().numpy(), lengths), lengths


def _masked(norms: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Zero at padded positions: padding carries no gradient of its own."""
    norms = np.array(norms, dtype=np.float64)
    if norms.ndim == 2 and norms.shape[1]:
        norms[np.arange(norms.shape[1])[None, :] >= lengths[:, None]] = 0.0
    return norms


def _as_samples(norms: np.ndarray, lengths: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    norms = np.asarray(norms, dtype=np.float64)
    if norms.ndim == 1:
        norms = norms[None, :]
    if lengths is None:
        lengths = np.full(norms.shape[0], norms.shape[1], dtype=np.int64)
    return norms, np.minimum(np.asarray(lengths, dtype=np.int64), norms.shape[1])


def aligned(norms: np.ndarray, lengths: np.ndarray | None = None, *, from_end: bool = True):
    """RMS over samples of ||∂L/∂h|| per distance from each sequence's end (or start).

    Index d of the result is the distance: d = length - 1 - t from the end, d = t from
    the start. nan where no sample is that long.
    """
    norms, lengths = _as_samples(norms, lengths)
    width = int(lengths.max()) if len(lengths) else 0
    squares = np.zeros(width)
    counts = np.zeros(width)
    for row, length in zip(norms, lengths, strict=True):
        real = row[:length]
        part = real[::-1] if from_end else real
        squares[:length] += part**2
        counts[:length] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.sqrt(squares / np.maximum(counts, 1)), np.nan)


def decay_rate(norms: np.ndarray, lengths: np.ndarray | None = None) -> float:
    """Slope of log10 norm against distance from each sequence's end (per step).

    Pooled over the samples' real positions; positions whose gradient is exactly zero
    (never reached, or underflowed) are left out. nan with under 2 points or one distance.
    """
    norms, lengths = _as_samples(norms, lengths)
    distances, values = [], []
    for row, length in zip(norms, lengths, strict=True):
        real = row[:length]
        usable = np.isfinite(real) & (real > 0)
        distances.append((length - 1 - np.arange(length))[usable])
        values.append(np.log10(real[usable]))
    x = np.concatenate(distances) if distances else np.zeros(0)
    y = np.concatenate(values) if values else np.zeros(0)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan
    slope, _ = np.polyfit(x.astype(np.float64), y, 1)
    return float(slope)


def log10_start_to_end(norms: np.ndarray, lengths: np.ndarray | None = None) -> float:
    """Median over samples of log10(||∂L/∂h_0|| / ||∂L/∂h_e||), e a sample's last step reached.

    How much of the gradient arriving at a sequence's end reaches its start. A start
    that got exactly zero counts, floored at 1e-30; a sample of length 1 or one that got
    no gradient at all has no ratio.
    """
    norms, lengths = _as_samples(norms, lengths)
    ratios = []
    for row, length in zip(norms, lengths, strict=True):
        real = row[:length]
        reached = np.flatnonzero(np.isfinite(real) & (real > 0))
        if length < 2 or len(reached) == 0 or reached[-1] == 0 or not np.isfinite(real[0]):
            continue
        ratios.append(math.log10(max(float(real[0]), NORM_FLOOR)) - math.log10(real[reached[-1]]))
    return float(np.median(ratios)) if ratios else math.nan
