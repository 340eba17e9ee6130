"""Checkpoints: a run killed after a checkpoint and resumed from it is the uninterrupted run.

On the CPU the comparison is exact: every loss, gradient norm, evaluation, probe figure
and final weight. Checkpoints are read with weights_only=True, and a damaged or foreign
file is one clear error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradbench.checkpoint import Checkpointer, CheckpointError, read
from gradbench.config import TrainConfig
from gradbench.models.build import build_model, parse_model_arg, resolve_options
from gradbench.plugins import load_plugins
from gradbench.probes import make_probes
from gradbench.train import train

STEPS = 12


class Killed(Exception):
    """Stands in for SIGKILL: the loop stops dead, nothing after it runs."""


def run(task, tmp_path, *, every=None, kill_at=None, config=None):
    load_plugins()
    spec = parse_model_arg("mlp-3")
    config = config or TrainConfig(
        steps=STEPS,
        batch_size=16,
        lr=0.05,
        schedule="cosine",
        warmup_steps=2,
        eval_every=5,
        probes="full",
        device="cpu",
    )
    torch.manual_seed(0)
    model = build_model(spec.name, task.input_spec(), resolve_options(spec, {}, "image"))
    probes = make_probes(config.probes, model, task, config)
    checkpoint = Checkpointer(tmp_path / "run.pt", every, cell="c1") if every else None

    def on_progress(step, total):
        if step == kill_at:
            raise Killed

    result = train(
        task,
        model,
        config,
        seed=3,
        device=torch.device("cpu"),
        hooks=probes,
        on_progress=on_progress,
        checkpoint=checkpoint,
    )
    return result, model, probes, checkpoint


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


# 64 examples in batches of 16: four steps an epoch. Every 4 resumes at an epoch's end
# (the resumed epoch has nothing left), every 3 in the middle of one.
@pytest.mark.parametrize(("every", "kill_at"), [(3, 8), (4, 6)])
def test_resumed_run_equals_the_uninterrupted_one(make_fake_task, tmp_path, every, kill_at):
    whole, whole_model, whole_probes, _ = run(make_fake_task(), tmp_path / "a")

    with pytest.raises(Killed):
        run(make_fake_task(), tmp_path / "b", every=every, kill_at=kill_at)
    saved = read(tmp_path / "b" / "run.pt", cell="c1")
    assert saved["step"] == (kill_at // every) * every
    resumed, model, probes, checkpoint = run(make_fake_task(), tmp_path / "b", every=every)
    assert checkpoint.resumed_step == saved["step"]

    assert resumed.steps == whole.steps == STEPS
    np.testing.assert_array_equal(resumed.losses, whole.losses)
    np.testing.assert_array_equal(resumed.grad_norms, whole.grad_norms)
    assert resumed.metrics == whole.metrics
    assert without_timings(resumed.evals) == without_timings(whole.evals)
    for key, value in whole_model.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    assert without_timings(probes.summary()) == without_timings(whole_probes.summary())
    whole_series, series = whole_probes.series(), probes.series()
    assert series.keys() == whole_series.keys()
    for key in series:
        np.testing.assert_array_equal(series[key], whole_series[key])


def test_a_checkpoint_is_written_atomically_and_only_when_due(make_fake_task, tmp_path):
    with pytest.raises(Killed):
        run(make_fake_task(), tmp_path, every=5, kill_at=7)
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]  # no .part file left
    state = read(tmp_path / "run.pt", cell="c1")
    assert state["step"] == 5
    assert len(state["loop"]["losses"]) == 5
    assert all(math.isfinite(x) for x in state["loop"]["losses"])


def test_damaged_foreign_and_unsafe_checkpoints_are_refused(tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        read(damaged)

    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a gradbench checkpoint"):
        read(foreign)

    other = tmp_path / "other.pt"
    torch.save({"format": "gradbench-checkpoint", "version": 1, "cell": "c2"}, other)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        read(other, cell="c1")

    # An arbitrary pickled object is never unpickled (weights_only=True).
    unsafe = tmp_path / "unsafe.pt"
    torch.save({"format": "gradbench-checkpoint", "payload": Killed()}, unsafe)
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        read(unsafe)
