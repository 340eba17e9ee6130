"""Schedules (callables step -> bool), the planned last step, and the levels' schedules."""

from __future__ import annotations

import pytest
from test_probes_toys import ToyTask, config
from torch import nn

from gradbench.probes import make_probes
from gradbench.probes.schedule import always, every, never, planned_last_step


def test_every_takes_the_first_every_nth_and_the_last_step():
    schedule = every(10, last=29)
    assert [s for s in range(35) if schedule(s)] == [0, 10, 20, 29, 30]
    assert [s for s in range(5) if always(s)] == [0, 1, 2, 3, 4]
    assert not any(never(s) for s in range(5))
    with pytest.raises(ValueError):
        every(0)


def test_planned_last_step_follows_the_loop_budget():
    task = ToyTask(size=256)  # 16 steps per epoch at batch 16
    assert planned_last_step(task, config(steps=30)) == 29
    assert planned_last_step(task, config(steps=None, epochs=0.5)) == 7
    assert planned_last_step(task, config(steps=100, epochs=1.0)) == 15
    assert planned_last_step(task, config(steps=None, seconds=5.0)) is None


def test_levels():
    task, model = ToyTask(), nn.Linear(2, 2)
    off = make_probes("off", model, task, config(steps=30))
    default = make_probes("default", model, task, config(steps=30))
    full = make_probes("full", model, task, config(steps=30))
    assert not off.active
    assert [s for s in range(30) if default.layer_schedule(s)] == [0, 10, 20, 29]
    # About 20 sampled steps for dL/dh_t, 10 to 100 steps apart.
    assert [s for s in range(30) if default.timestep_schedule(s)] == [0, 10, 20, 29]
    medium = make_probes("default", model, task, config(steps=300))
    assert [s for s in range(300) if medium.timestep_schedule(s)] == [*range(0, 300, 15), 299]
    long = make_probes("default", model, task, config(steps=2000))
    assert [s for s in range(2000) if long.timestep_schedule(s)] == [*range(0, 2000, 100), 1999]
    longer = make_probes("default", model, task, config(steps=5000))
    assert sum(longer.timestep_schedule(s) for s in range(5000)) == 51  # every 100th
    timed = make_probes("default", model, task, config(steps=None, seconds=5.0))
    assert [s for s in range(250) if timed.timestep_schedule(s)] == [0, 100, 200]
    assert all(full.layer_schedule(s) and full.timestep_schedule(s) for s in range(30))
    with pytest.raises(ValueError):
        make_probes("most", model, task, config())
