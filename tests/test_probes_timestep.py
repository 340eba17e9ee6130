"""∂L/∂h_t per sample and time step: against retain_grad, aligned per sequence, the fits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_probes_toys import ToyRNN, ToyTask

from gradbench.probes.timestep import (
    aligned,
    decay_rate,
    log10_start_to_end,
    timestep_grad_norms,
)
from gradbench.task import Batch


def test_norms_match_retain_grad_reference():
    torch.manual_seed(0)
    task = ToyTask((12, 3))
    model = ToyRNN(3, 6, 4, cell="lstm")
    batch = next(task.batches("train", 8, seed=0))
    got, lengths = timestep_grad_norms(model, task, batch, samples=5)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, not .backward
    assert got.shape == (5, 12) and lengths.tolist() == [12] * 5
    output, states = model.hidden_sequence(batch.x[:5])
    for h in states:
        h.retain_grad()
    task.loss(output, Batch(batch.x[:5], batch.y[:5])).backward()
    naive = np.stack([h.grad.norm(dim=1).numpy() for h in states], axis=1)
    np.testing.assert_allclose(got, naive, rtol=1e-5)


def test_probe_leaves_grads_buffers_and_rng_alone():
    torch.manual_seed(0)
    task = ToyTask((10, 3))
    model = ToyRNN(3, 6, 4, cell="rnn", dropout=0.5, batch_norm=True).train()
    batch = next(task.batches("train", 8, seed=0))
    model.norm.running_mean.fill_(0.25)
    buffers = [b.clone() for b in model.buffers()]
    state = torch.get_rng_state()
    timestep_grad_norms(model, task, batch)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers(), strict=True))
    assert all(p.grad is None for p in model.parameters())


def test_decay_rate_recovers_an_exponential_and_skips_zeros():
    distance = np.arange(20)[::-1]
    norms = 10.0 ** (-0.1 * distance)
    assert decay_rate(norms) == pytest.approx(-0.1)
    norms[:3] = 0.0  # underflowed far end: left out of the fit
    assert decay_rate(norms) == pytest.approx(-0.1)
    assert log10_start_to_end(10.0 ** (-0.1 * distance)) == pytest.approx(-1.9)
    assert math.isnan(decay_rate(np.array([1.0])))


def test_start_to_end_uses_the_last_reached_step():
    assert log10_start_to_end(np.array([1e-3, 1e-1, 1.0, 0.0])) == pytest.approx(-3)


def test_padded_sequences_are_aligned_at_their_own_ends_and_padding_is_masked():
    # Two sequences decaying by 10x a step from their own ends, lengths 4 and 2; the
    # second's padded tail holds junk that must not enter any figure.
    norms = np.array([[1e-3, 1e-2, 1e-1, 1.0], [1e-1, 1.0, 7.0, 7.0]])
    lengths = np.array([4, 2])
    from_end = aligned(norms, lengths, from_end=True)
    np.testing.assert_allclose(from_end[:2], [1.0, 1e-1])  # both sequences agree there
    np.testing.assert_allclose(from_end[2:], [1e-2, 1e-3])  # only the long one
    from_start = aligned(norms, lengths, from_end=False)
    rms = [np.sqrt((1e-6 + 1e-2) / 2), np.sqrt((1e-4 + 1) / 2), 1e-1, 1]
    np.testing.assert_allclose(from_start, rms)
    assert decay_rate(norms, lengths) == pytest.approx(-1.0)
    # Per sequence: -3 decades and -1 decade; the median of the two.
    assert log10_start_to_end(norms, lengths) == pytest.approx(-2.0)
    # Absolute positions (the old way) would have read the junk as the end: not -2.
    assert log10_start_to_end(norms) != pytest.approx(-2.0)


def test_tanh_rnn_gradient_decays_faster_than_lstm_on_the_same_input():
    task = ToyTask((60, 4))
    batch = next(task.batches("train", 16, seed=0))
    rates, spans = {}, {}
    for cell in ("rnn", "lstm"):
        torch.manual_seed(0)
        model = ToyRNN(4, 32, 4, cell=cell)
        norms, lengths = timestep_grad_norms(model, task, batch, samples=16)
        rates[cell] = decay_rate(norms, lengths)
        spans[cell] = log10_start_to_end(norms, lengths)
    assert rates["rnn"] < 0 and rates["rnn"] < rates["lstm"]
    assert spans["rnn"] < spans["lstm"]
