"""When to probe: a schedule is just a callable ``step -> bool`` (as in Cockpit).

The default schedule (first step, every 10th step, and the last step) keeps the
per-layer probes at well under 5% of training time while still giving a curve over
training. The last step of a run is known in advance only for step and epoch budgets;
``planned_last_step`` works it out the way the training loop does, and a run stopped
earlier (seconds, target, divergence) simply has its last scheduled step as its last
capture, plus the step where it diverged (captured by the non-finite probe).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from gradbench.config import TrainConfig
from gradbench.task import Task

Schedule = Callable[[int], bool]

# Every this many steps on the default level (per-layer quantities).
DEFAULT_EVERY = 10
# The per-timestep probe costs an extra forward and backward pass on a few samples
# (for an LSTM at T=100, 6 samples cost ~0.3 of a batch-64 training step), so it runs on
# fewer steps: about TIMESTEP_CAPTURES spread over a run whose length is known (so each
# 20% window of the verdict holds about 4), never closer than MIN_TIMESTEP_EVERY steps
# (which keeps it near 3% of training) nor further apart than DEFAULT_TIMESTEP_EVERY
# (the interval when the length is not known).
DEFAULT_TIMESTEP_EVERY = 100
MIN_TIMESTEP_EVERY = 10
TIMESTEP_CAPTURES = 20


def never(step: int) -> bool:
    return False


def always(step: int) -> bool:
    return True


def every(n: int, *, last: int | None = None) -> Schedule:
    """Step 0, every ``n``-th step after it, and ``last`` (when known)."""
    if n < 1:
        raise ValueError(f"a schedule interval must be >= 1, got {n}")

    def schedule(step: int) -> bool:
        return step % n == 0 or step == last

    return schedule


def timestep_interval(last: int | None) -> int:
    """Steps between ∂L/∂h_t captures: about TIMESTEP_CAPTURES per run, 10 to 100 apart."""
    if last is None:
        return DEFAULT_TIMESTEP_EVERY
    return max(MIN_TIMESTEP_EVERY, min(DEFAULT_TIMESTEP_EVERY, (last + 1) // TIMESTEP_CAPTURES))


def planned_last_step(task: Task, config: TrainConfig) -> int | None:
    """The last step index a step or epoch budget allows (None for a seconds-only budget)."""
    caps = []
    if config.steps is not None:
        caps.append(config.steps)
    if config.epochs is not None:
        per_epoch = task.dataset_id("train").num_examples // config.batch_size
        caps.append(max(1, math.ceil(config.epochs * per_epoch)))
    return min(caps) - 1 if caps else None
