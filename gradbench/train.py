"""The one training loop every task and model shares.

It owns the budget (steps, epochs, training seconds with evaluation excluded, or a
target metric), the optimiser and schedule, clipping, precision, evaluation on a
schedule, and divergence: a non-finite loss or gradient stops the run and is
recorded with its step; it is a result, not a crash. What the gradients looked like
along the way is the business of the hooks (``gradbench.probes``), not of this loop.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import nn

from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.task import Batch, Task

Clock = Callable[[], float]


class TrainHooks(Protocol):
    """What the loop tells an observer (the gradient probes). All methods are optional work."""

    def start(self, model: nn.Module, task: Task, config: TrainConfig) -> None: ...

    def after_backward(
        self, step: int, model: nn.Module, batch: Batch, loss: float, grad_norm: float
    ) -> None:
        """Gradients of ``step`` are in ``.grad``, not yet clipped; the optimiser has not run."""

    def after_step(self, step: int, model: nn.Module) -> None:
        """The optimiser has updated the weights with the gradients of ``step``."""

    def finish(self, model: nn.Module, last_step: int) -> None: ...


class NoHooks:
    def start(self, model, task, config):
        pass

    def after_backward(self, step, model, batch, loss, grad_norm):
        pass

    def after_step(self, step, model):
        pass

    def finish(self, model, last_step):
        pass


@dataclass
class TrainResult:
    steps: int
    epochs: float
    train_seconds: float
    eval_seconds: float
    metrics: dict[str, float]
    final_train_loss: float | None
    stop_reason: str  # "steps", "epochs", "seconds", "target" or "diverged"
    diverged: bool = False
    diverged_step: int | None = None
    divergence: str | None = None
    target_reached: bool | None = None
    target_step: int | None = None
    target_seconds: float | None = None
    clip_hits: int = 0
    evals: list[dict[str, float]] = field(default_factory=list)
    # Per training step: loss and global gradient norm before clipping.
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    grad_norms: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: no MPS device is available")
    return torch.device(name)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd-momentum":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, total_steps: int | None) -> Callable[[int], float]:
    """Multiplier of the base learning rate at a step: linear warm-up, then the schedule."""
    if config.schedule != "constant" and total_steps is None:
        raise UsageError(f"--schedule {config.schedule} needs a --steps or --epochs budget")

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        assert total_steps is not None
        progress = (step - config.warmup_steps) / max(1, total_steps - config.warmup_steps)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        # "step": divide by 10 at 50% and 75% of training, as He et al. (2016) did.
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))

    return factor


def target_met(value: float, target: float, higher_is_better: bool) -> bool:
    return value >= target if higher_is_better else value <= target


def train(
    task: Task,
    model: nn.Module,
    config: TrainConfig,
    *,
    seed: int,
    device: torch.device | None = None,
    hooks: TrainHooks | None = None,
    clock: Clock = time.perf_counter,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` until the budget in ``config`` is spent or it diverges.

    ``seed`` fixes the data order (the caller seeds initialisation before building the
    model). ``clock`` is injectable so tests of time budgets need no sleeping.
    """
    device = device or pick_device(config.device)
    hooks = hooks or NoHooks()
    model.to(device).train()
    optimizer = make_optimizer(model, config)
    train_size = task.dataset_id("train").num_examples
    steps_per_epoch = train_size // config.batch_size
    if steps_per_epoch < 1:
        raise UsageError(
            f"--batch-size {config.batch_size} is larger than the training set ({train_size})"
        )
    caps = []
    if config.steps is not None:
        caps.append((config.steps, "steps"))
    if config.epochs is not None:
        caps.append((max(1, math.ceil(config.epochs * steps_per_epoch)), "epochs"))
    total_steps, step_cap_reason = min(caps) if caps else (None, None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, total_steps))
    higher = {m.name: m.higher_is_better for m in task.metrics}
    if config.target_metric is not None and config.target_metric not in higher:
        raise UsageError(
            f"--target metric {config.target_metric!r} is not one of {', '.join(higher)}"
        )
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if config.precision == "bf16"
        else contextlib.nullcontext()
    )

    losses: list[float] = []
    grad_norms: list[float] = []
    evals: list[dict[str, float]] = []
    train_seconds = eval_seconds = 0.0
    clip_hits = 0
    step = 0
    stop_reason: str | None = None
    divergence: str | None = None
    target_step: int | None = None
    target_seconds: float | None = None

    def evaluate() -> dict[str, float]:
        nonlocal eval_seconds
        started = clock()
        model.eval()
        with torch.no_grad(), autocast:
            metrics = task.evaluate(model, device, config.eval_batch_size)
        model.train()
        eval_seconds += clock() - started
        evals.append({"step": step, "train_seconds": train_seconds, **metrics})
        return metrics

    hooks.start(model, task, config)
    epoch = 0
    while stop_reason is None:
        segment_start = clock()
        got_batch = False
        for batch in task.batches("train", config.batch_size, seed=seed * 1_000_003 + epoch):
            got_batch = True
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                output = (
                    model(batch.x, batch.lengths) if batch.lengths is not None else model(batch.x)
                )
                loss = task.loss(output, batch)
            loss.backward()
            grads = [p.grad for p in params if p.grad is not None]
            total_norm = torch.nn.utils.get_total_norm(grads)
            figures = [loss.detach().float(), total_norm.float()]
            if config.clip_value is not None:  # largest |g|, read in the same device sync
                figures.append(torch.nn.utils.get_total_norm(grads, norm_type=math.inf).float())
            loss_value, norm_value, *largest = torch.stack(figures).tolist()
            losses.append(loss_value)
            grad_norms.append(norm_value)
            hooks.after_backward(step, model, batch, loss_value, norm_value)
            if not math.isfinite(loss_value) or not math.isfinite(norm_value):
                divergence = "loss" if not math.isfinite(loss_value) else "gradient"
                stop_reason = "diverged"
                break
            if config.clip_norm is not None:
                clip_hits += norm_value > config.clip_norm
                torch.nn.utils.clip_grads_with_norm_(params, config.clip_norm, total_norm)
            elif config.clip_value is not None:
                clip_hits += largest[0] > config.clip_value
                torch.nn.utils.clip_grad_value_(params, config.clip_value)
            optimizer.step()
            scheduler.step()
            hooks.after_step(step, model)
            step += 1
            if on_progress is not None:
                on_progress(step, total_steps)
            if total_steps is not None and step >= total_steps:
                stop_reason = step_cap_reason
            elif (
                config.seconds is not None
                and train_seconds + clock() - segment_start >= config.seconds
            ):
                stop_reason = "seconds"
            if stop_reason is None and config.eval_every and step % config.eval_every == 0:
                train_seconds += clock() - segment_start
                metrics = evaluate()
                if config.target_metric is not None and target_met(
                    metrics[config.target_metric],
                    config.target_value,
                    higher[config.target_metric],
                ):
                    target_step, target_seconds = step, train_seconds
                    stop_reason = "target"
                segment_start = clock()
            if stop_reason is not None:
                break
        else:
            if not got_batch:  # an empty epoch would spin forever
                raise UsageError(
                    f"task {task.name}: the training split gave no batch of {config.batch_size}"
                )
            epoch += 1
            train_seconds += clock() - segment_start
            continue
        train_seconds += clock() - segment_start
    hooks.finish(model, step)

    final_metrics = (
        evaluate()
        if not evals or evals[-1]["step"] != step
        else {k: v for k, v in evals[-1].items() if k not in ("step", "train_seconds")}
    )
    target_reached = None
    if config.target_metric is not None:
        if target_step is None and target_met(
            final_metrics.get(config.target_metric, float("nan")),
            config.target_value,
            higher[config.target_metric],
        ):
            target_step, target_seconds = step, train_seconds
        target_reached = target_step is not None
    tail = [x for x in losses[-20:] if math.isfinite(x)]
    return TrainResult(
        steps=step,
        epochs=step / steps_per_epoch,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        metrics=final_metrics,
        final_train_loss=float(np.mean(tail))
        if tail and divergence is None
        else (losses[-1] if losses else None),
        stop_reason=stop_reason,
        diverged=divergence is not None,
        diverged_step=step if divergence is not None else None,
        divergence=divergence,
        target_reached=target_reached,
        target_step=target_step,
        target_seconds=target_seconds,
        clip_hits=int(clip_hits),
        evals=evals,
        losses=np.asarray(losses, np.float32),
        grad_norms=np.asarray(grad_norms, np.float32),
    )
