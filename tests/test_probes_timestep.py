"""∂L/∂h_t per time step: against retain_grad, the decay fit, tanh RNN vs LSTM, no side effects."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_probes_toys import ToyRNN, ToyTask

from gradbench.probes.timestep import decay_rate, log10_start_to_end, timestep_grad_norms
from gradbench.task import Batch


def test_norms_match_retain_grad_reference():
    torch.manual_seed(0)
    task = ToyTask((12, 3))
    model = ToyRNN(3, 6, 4, cell="lstm")
    batch = next(task.batches("train", 8, seed=0))
    got = timestep_grad_norms(model, task, batch, samples=5)
    assert all(p.grad is None for p in model.parameters())  # autograd.grad, not .backward
    output, states = model.hidden_sequence(batch.x[:5])
    for h in states:
        h.retain_grad()
    task.loss(output, Batch(batch.x[:5], batch.y[:5])).backward()
    naive = np.array([h.grad.norm().item() for h in states])
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


def test_tanh_rnn_gradient_decays_faster_than_lstm_on_the_same_input():
    task = ToyTask((60, 4))
    batch = next(task.batches("train", 16, seed=0))
    rates, spans = {}, {}
    for cell in ("rnn", "lstm"):
        torch.manual_seed(0)
        model = ToyRNN(4, 32, 4, cell=cell)
        norms = timestep_grad_norms(model, task, batch, samples=16)
        rates[cell], spans[cell] = decay_rate(norms), log10_start_to_end(norms)
    assert rates["rnn"] < 0 and rates["rnn"] < rates["lstm"]
    assert spans["rnn"] < spans["lstm"]
