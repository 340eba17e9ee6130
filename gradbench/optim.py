"""Optimisers and learning-rate schedules: the "adaptive optimiser" and "scheduler" mitigations.

Every optimiser is ``torch.optim``'s own. A schedule is an object the training loop tells
two things: a step was taken (``after_step``), and an evaluation gave these metrics
(``after_eval``). Pre-planned schedules (step, cosine, one-cycle) listen to the first,
the adaptive one (``plateau``: ``ReduceLROnPlateau``) to the second.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

from gradbench.config import TrainConfig
from gradbench.errors import UsageError

# Evaluations without improvement before ``plateau`` divides the learning rate by ten
# (torch's factor). Counted in evaluations (--eval-every), not steps; small because a
# benchmark run evaluates a few dozen times at most, where torch's default of 10 would
# rarely fire.
PLATEAU_PATIENCE = 2
PLATEAU_FACTOR = 0.1
# Without --eval-every, ``plateau`` evaluates this many times over a --steps/--epochs run.
PLATEAU_EVALUATIONS = 10
# One-cycle's warm-up share when --warmup-steps is not given (torch's default).
ONECYCLE_PCT_START = 0.3


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser named by ``config.optimizer``; ``momentum`` is for sgd-momentum only,
    every other optimiser keeps torch's defaults beyond the learning rate and weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    common = {"lr": config.lr, "weight_decay": config.weight_decay}
    if config.optimizer == "sgd-momentum":
        return torch.optim.SGD(params, momentum=config.momentum, **common)
    classes = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
        "radam": torch.optim.RAdam,
        "nadam": torch.optim.NAdam,
    }
    return classes[config.optimizer](params, **common)


def lr_factor(config: TrainConfig, total_steps: int | None) -> Callable[[int], float]:
    """Multiplier of the base learning rate at a step: linear warm-up, then the schedule.

    For ``plateau`` this is the warm-up alone; the reductions come from evaluations.
    """
    if config.schedule not in ("constant", "plateau") and total_steps is None:
        raise UsageError(f"--schedule {config.schedule} needs a --steps or --epochs budget")

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule in ("constant", "plateau"):
            return 1.0
        assert total_steps is not None
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        # "step": divide by 10 at 50% and 75% of training, as He et al. (2016) did.
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))

    return factor


def evaluation_interval(config: TrainConfig, total_steps: int | None) -> int | None:
    """Steps between evaluations during training: --eval-every, else for ``plateau`` (which
    needs evaluations to watch) a tenth of the step budget; None: evaluate at the end only."""
    if config.eval_every:
        return config.eval_every
    if config.schedule == "plateau" and total_steps is not None:
        return max(1, total_steps // PLATEAU_EVALUATIONS)
    return None


class Schedule:
    """The learning rate over a run. ``metric`` and ``higher_is_better``: what ``plateau``
    watches (the task's primary metric, or the --target metric)."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        total_steps: int | None,
        metric: str,
        higher_is_better: bool,
    ):
        self.config = config
        self.metric = metric
        self.steps_taken = 0
        self.plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None = None
        self.planned: torch.optim.lr_scheduler.LRScheduler
        if config.schedule == "onecycle":
            if total_steps is None:
                raise UsageError("--schedule onecycle needs a --steps or --epochs budget")
            # Smith & Topin (2018): up to --lr and down again; --warmup-steps sets the climb.
            pct_start = (
                min(config.warmup_steps / total_steps, 0.99)
                if config.warmup_steps
                else ONECYCLE_PCT_START
            )
            defaults = optimizer.defaults
            # Momentum is cycled against the rate where the optimiser has one to cycle.
            cycle_momentum = defaults.get("momentum", 0) > 0 or "betas" in defaults
            self.planned = torch.optim.lr_scheduler.OneCycleLR(
                optimizer,
                max_lr=config.lr,
                total_steps=total_steps,
                pct_start=pct_start,
                cycle_momentum=cycle_momentum,
            )
            return
        self.planned = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
        if config.schedule == "plateau":
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max" if higher_is_better else "min",
                factor=PLATEAU_FACTOR,
                patience=PLATEAU_PATIENCE,
            )

    @property
    def warming_up(self) -> bool:
        return self.steps_taken < self.config.warmup_steps

    def after_step(self) -> None:
        self.steps_taken += 1
        # After warm-up the plateau scheduler owns the rate: LambdaLR would reset it.
        if self.plateau is None or self.steps_taken <= self.config.warmup_steps:
            self.planned.step()

    def after_eval(self, metrics: Mapping[str, float]) -> None:
        """An evaluation during training: ``plateau`` may lower the rate (never in warm-up)."""
        if self.plateau is None or self.warming_up:
            return
        value = metrics.get(self.metric, float("nan"))
        if math.isfinite(value):
            self.plateau.step(value)

    def current_lr(self) -> float:
        return float(self.planned.optimizer.param_groups[0]["lr"])
