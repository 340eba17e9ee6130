"""The one training loop every task and model shares.

It owns the budget (steps, epochs, training seconds with evaluation and the probes'
own work excluded, or a target metric), the optimiser and schedule, clipping,
precision, evaluation on a schedule, and divergence: a non-finite loss or gradient
stops the run and is recorded with its step; it is a result, not a crash. What the
gradients looked like along the way is the business of the hooks
(``gradbench.probes``), not of this loop.
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

from gradbench import fast, layout
from gradbench.checkpoint import Checkpointer
from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.optim import (  # noqa: F401 (lr_factor, make_optimizer: re-exported)
    Schedule,
    evaluation_interval,
    lr_factor,
    make_optimizer,
)
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
    # Seconds spent inside the hooks (the gradient probes), kept out of train_seconds so
    # a --seconds budget buys every model the same training, whatever its probes cost.
    probe_seconds: float = 0.0
    # What fast mode did (gradbench.fast): channels-last, compiled, compile seconds.
    fast: dict = field(default_factory=dict)
    # The convolution weights' layout: "channels_last" or "contiguous" (gradbench.layout).
    memory_format: str = "contiguous"
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


# The loop's own state that a checkpoint carries over a kill (gradbench.checkpoint).
RESUMED = (
    "step",
    "epoch",
    "losses",
    "grad_norms",
    "evals",
    "train_seconds",
    "eval_seconds",
    "probe_seconds",
    "clip_hits",
    "target_step",
    "target_seconds",
)


def check_training(config: TrainConfig, task: Task) -> None:
    """What the loop refuses for this task. ``train`` calls it; a sweep calls it before
    the first run starts, so the error is the only line on stderr, not one after progress.
    """
    train_size = task.dataset_id("train").num_examples
    if config.batch_size > train_size:
        raise UsageError(
            f"--batch-size {config.batch_size} is larger than the training set ({train_size})"
        )
    # "plateau" follows evaluations, not the step count: it needs no step budget.
    no_steps = config.steps is None and config.epochs is None
    if config.schedule not in ("constant", "plateau") and no_steps:
        raise UsageError(f"--schedule {config.schedule} needs a --steps or --epochs budget")
    metrics = [m.name for m in task.metrics]
    if config.target_metric is not None and config.target_metric not in metrics:
        raise UsageError(
            f"--target metric {config.target_metric!r} is not one of {', '.join(metrics)}"
        )


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
    checkpoint: Checkpointer | None = None,
) -> TrainResult:
    """Train ``model`` on ``task`` until the budget in ``config`` is spent or it diverges.

    ``seed`` fixes the data order (the caller seeds initialisation before building the
    model). ``clock`` is injectable so tests of time budgets need no sleeping.
    """
    check_training(config, task)
    device = device or pick_device(config.device)
    hooks = hooks or NoHooks()
    model.to(device).train()
    # The module a training step calls: the model itself, or its compiled form (--fast).
    # PyTorch's contiguous layout otherwise: why not channels-last, in gradbench.layout.
    step_model, fast_info = fast.prepare(model, task, config, device)
    memory_format = layout.CHANNELS_LAST if fast_info.get("channels_last") else layout.CONTIGUOUS
    optimizer = make_optimizer(model, config)
    steps_per_epoch = task.dataset_id("train").num_examples // config.batch_size
    caps = []
    if config.steps is not None:
        caps.append((config.steps, "steps"))
    if config.epochs is not None:
        caps.append((max(1, math.ceil(config.epochs * steps_per_epoch)), "epochs"))
    total_steps, step_cap_reason = min(caps) if caps else (None, None)
    higher = {m.name: m.higher_is_better for m in task.metrics}
    # An adaptive schedule watches the metric a target names, else the task's primary one.
    watched = config.target_metric or task.metrics[0].name
    scheduler = Schedule(optimizer, config, total_steps, watched, higher[watched])
    eval_every = evaluation_interval(config, total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if config.precision == "bf16" or fast_info.get("bf16_autocast")
        else contextlib.nullcontext()
    )

    losses: list[float] = []
    grad_norms: list[float] = []
    evals: list[dict[str, float]] = []
    train_seconds = eval_seconds = probe_seconds = 0.0
    segment_probe = 0.0  # hook seconds inside the current timed segment
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

    def observe(hook: Callable[..., None], *args) -> None:
        """Call a hook, and book its time as probing rather than training."""
        nonlocal probe_seconds, segment_probe
        started = clock()
        hook(*args)
        spent = clock() - started
        probe_seconds += spent
        segment_probe += spent

    def segment_seconds() -> float:
        """Training seconds of the current segment: wall time less the hooks' share."""
        return clock() - segment_start - segment_probe

    observe(hooks.start, model, task, config)
    epoch = 0
    if checkpoint is not None and (saved := checkpoint.restore(model, optimizer, scheduler, hooks)):
        (
            step,
            epoch,
            losses,
            grad_norms,
            evals,
            train_seconds,
            eval_seconds,
            probe_seconds,
            clip_hits,
            target_step,
            target_seconds,
        ) = (saved[k] for k in RESUMED)
    while stop_reason is None:
        segment_start = clock()
        segment_probe = 0.0
        got_batch = False
        batches = task.batches("train", config.batch_size, seed=seed * 1_000_003 + epoch)
        if checkpoint is not None:  # a resumed epoch skips what was trained before the kill
            batches, got_batch = checkpoint.batches(batches)
        for batch in batches:
            got_batch = True
            batch = batch.to(device)
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                output = (
                    step_model(batch.x, batch.lengths)
                    if batch.lengths is not None
                    else step_model(batch.x)
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
            observe(hooks.after_backward, step, model, batch, loss_value, norm_value)
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
            scheduler.after_step()
            observe(hooks.after_step, step, model)
            step += 1
            if on_progress is not None:
                on_progress(step, total_steps)
            if total_steps is not None and step >= total_steps:
                stop_reason = step_cap_reason
            elif config.seconds is not None and train_seconds + segment_seconds() >= config.seconds:
                stop_reason = "seconds"
            if stop_reason is None and eval_every and step % eval_every == 0:
                train_seconds += segment_seconds()
                metrics = evaluate()
                scheduler.after_eval(metrics)
                if config.target_metric is not None and target_met(
                    metrics[config.target_metric],
                    config.target_value,
                    higher[config.target_metric],
                ):
                    target_step, target_seconds = step, train_seconds
                    stop_reason = "target"
                segment_start = clock()
                segment_probe = 0.0
            if stop_reason is None and checkpoint is not None and checkpoint.due(step):
                train_seconds += segment_seconds()  # writing it is not training
                loop = {
                    "losses": losses,
                    "grad_norms": grad_norms,
                    "evals": evals,
                    "train_seconds": train_seconds,
                    "eval_seconds": eval_seconds,
                    "probe_seconds": probe_seconds,
                    "clip_hits": clip_hits,
                    "target_step": target_step,
                    "target_seconds": target_seconds,
                }
                checkpoint.save(
                    step=step,
                    epoch=epoch,
                    model=model,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    hooks=hooks,
                    loop=loop,
                )
                segment_start = clock()
                segment_probe = 0.0
            if stop_reason is not None:
                break
        else:
            if not got_batch:  # an empty epoch would spin forever
                raise UsageError(
                    f"task {task.name}: the training split gave no batch of {config.batch_size}"
                )
            epoch += 1
            train_seconds += segment_seconds()
            continue
        train_seconds += segment_seconds()
    observe(hooks.finish, model, step)

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
        probe_seconds=probe_seconds,
        fast=fast_info,
        memory_format=memory_format,
        evals=evals,
        losses=np.asarray(losses, np.float32),
        grad_norms=np.asarray(grad_norms, np.float32),
    )
