"""The training options a user sets per run, with the reason for each default."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from gradbench.errors import UsageError

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
PROBE_LEVELS = ("off", "default", "full")


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
    optimizer: Literal["sgd", "sgd-momentum", "adam", "adamw"] = "sgd-momentum"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: Literal["constant", "step", "cosine"] = "constant"
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
    probes: Literal["off", "default", "full"] = "default"

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("precision", self.precision, PRECISIONS)
        check_choice("device", self.device, DEVICES)
        check_choice("probes", self.probes, PROBE_LEVELS)
        if self.steps is None and self.epochs is None and self.seconds is None:
            if self.target_metric is None:
                raise UsageError("give a budget: --steps, --epochs, --seconds or --target")
            raise UsageError("a --target needs a cap too: --steps, --epochs or --seconds")
        for name in ("steps", "epochs", "seconds", "batch_size", "lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        for name in ("clip_norm", "clip_value", "eval_every", "threads"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be > 0, got {value}")
        if self.clip_norm is not None and self.clip_value is not None:
            raise UsageError("choose one of --clip-norm and --clip-value, not both")
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.momentum < 0:
            raise UsageError("--weight-decay, --warmup-steps and --momentum must be >= 0")
        if (self.target_metric is None) != (self.target_value is None):
            raise UsageError("a target is written METRIC=VALUE, e.g. test_accuracy=0.85")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"--{name} {value!r} is not one of {', '.join(choices)}")
