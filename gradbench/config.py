"""The training options a user sets per run, with the reason for each default."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any, Literal

from gradbench.errors import UsageError

# All from torch.optim; gradbench.optim builds them.
OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw", "rmsprop", "adagrad", "radam", "nadam")
# "plateau" (ReduceLROnPlateau) lowers the rate when evaluations stall: needs --eval-every.
SCHEDULES = ("constant", "step", "cosine", "onecycle", "plateau")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
PROBE_LEVELS = ("off", "default", "full")
# Normalisation layers the CNN family and the MLP can use (--norm; gradbench.mitigations).
NORMS = ("batch", "layer", "group", "none")
# Where a sweep's cells run (gradbench.executors).
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class TrainConfig:
    # Stopping budget: the first of these reached ends training. At least one is set.
    steps: int | None = None
    epochs: float | None = None
    # Training wall-clock seconds; evaluation time is not counted (as in AlgoPerf).
    seconds: float | None = None
    # Time-to-target: stop once evaluation metric ``target_metric`` reaches ``target_value``.
    target_metric: str | None = None
    target_value: float | None = None

    batch_size: int = 128
    # SGD with momentum 0.9 is what He et al. (2016) trained ResNets with.
    optimizer: Literal[
        "sgd", "sgd-momentum", "adam", "adamw", "rmsprop", "adagrad", "radam", "nadam"
    ] = "sgd-momentum"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["constant", "step", "cosine", "onecycle", "plateau"] = "constant"
    warmup_steps: int = 0
    # Off by default: clipping is a mitigation to switch on and compare, not a given.
    clip_norm: float | None = None
    clip_value: float | None = None
    precision: Literal["fp32", "bf16"] = "fp32"
    device: str = "auto"
    threads: int | None = None
    # Evaluate every N training steps (None: only at the end).
    eval_every: int | None = None
    eval_batch_size: int = 512
    # Evaluate on the first N examples of each evaluation split (None: all of them), so a
    # 20-step smoke comparison is not dominated by a 10,000-image evaluation. Recorded.
    eval_limit: int | None = None
    probes: Literal["off", "default", "full"] = "default"
    # Fast mode (gradbench.fast): bf16 autocast, channels-last, torch.compile where it
    # pays off. Off by default: it changes the arithmetic, so runs are separate cells.
    fast: bool = False
    # torch.use_deterministic_algorithms (and cuDNN without autotuning) for the run.
    deterministic: bool = False

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("device", self.device, DEVICES)
        check_choice("probes", self.probes, PROBE_LEVELS)
        for name in NUMERIC_OPTIONS:
            value = getattr(self, name)
            # inf and nan pass "> 0" or slip past "< 0"; a run with lr=inf would be
            # recorded as "diverged" when it is a typo.
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
            ):
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number, got {value}")
        for name in INTEGER_OPTIONS:
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, numbers.Integral)
            ):
                raise UsageError(f"--{name.replace('_', '-')} must be an integer, got {value!r}")
        if self.steps is None and self.epochs is None and self.seconds is None:
            if self.target_metric is None:
                raise UsageError("give a budget: --steps, --epochs, --seconds or --target")
            raise UsageError("a --target needs a cap too: --steps, --epochs or --seconds")
        for name in POSITIVE_OPTIONS:
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.clip_norm is not None and self.clip_value is not None:
            raise UsageError("choose one of --clip-norm and --clip-value, not both")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.momentum < 0:
            raise UsageError("--weight-decay, --warmup-steps and --momentum must be >= 0")
        if self.schedule == "plateau" and self.eval_every is None and self.steps is None:
            if self.epochs is None:  # a time budget: no step count to spread evaluations over
                raise UsageError(
                    "--schedule plateau lowers the rate when the evaluation metric stalls: "
                    "under a --seconds budget it needs --eval-every N"
                )
        if (self.target_metric is None) != (self.target_value is None):
            raise UsageError("a target is written METRIC=VALUE, e.g. test_accuracy=0.85")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


NUMERIC_OPTIONS = (
    "steps",
    "epochs",
    "seconds",
    "target_value",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "warmup_steps",
    "clip_norm",
    "clip_value",
    "threads",
    "eval_every",
    "eval_batch_size",
    "eval_limit",
)
# Options that must be > 0 when given (in the order they are checked).
POSITIVE_OPTIONS = (
    "steps",
    "epochs",
    "seconds",
    "batch_size",
    "lr",
    "clip_norm",
    "clip_value",
    "eval_every",
    "threads",
    "eval_limit",
    "eval_batch_size",
)
INTEGER_OPTIONS = (
    "steps",
    "batch_size",
    "warmup_steps",
    "threads",
    "eval_every",
    "eval_batch_size",
    "eval_limit",
)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"--{name} {value!r} is not one of {', '.join(choices)}")
