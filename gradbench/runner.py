"""Run a comparison: each model configuration x each seed, one record per run.

Everything that can be checked is checked before the first run starts (task, model
names, options, budget), so bad input never leaves a partial set of records.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from gradbench import budget as budgets
from gradbench import device as device_settings
from gradbench.cli_options import parse_seeds  # noqa: F401  (its home; imported from here too)
from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.plugins import load_plugins
from gradbench.probes import make_probes
from gradbench.records import SCHEMA_VERSION, ResultsStore, RunRecord, environment, new_run_id
from gradbench.registry import TASKS
from gradbench.task import DataConfig, Task
from gradbench.train import (  # check_training: its home is train; imported from here too
    TrainResult,
    check_training,
    pick_device,
    train,
)

if TYPE_CHECKING:
    from gradbench.checkpoint import Checkpointer
    from gradbench.executors import Execution


@dataclass
class Plan:
    task: str
    models: list[ModelSpec]
    seeds: list[int]
    train: TrainConfig
    task_options: dict[str, Any] = field(default_factory=dict)
    # Options given for every model (--width, --activation, ...); None means "not given".
    shared_model_options: dict[str, Any] = field(default_factory=dict)
    # Model sizing: "params" or "flops" (per step), a target (None: match the first model).
    match: str | None = None
    match_target: float | None = None
    match_tolerance: float = 0.02
    # Equal total training FLOPs: each model trains round(total / its FLOPs per step) steps.
    flops_budget: float | None = None


@dataclass
class PreparedModel:
    spec: ModelSpec
    options: dict[str, Any]
    match: dict[str, Any] | None = None


def load_task(name: str, data: DataConfig, options: dict[str, Any]) -> Task:
    """Create task ``name``: options typed against the factory's signature before any
    data is read (gradbench.options), the object checked against the Task protocol."""
    from gradbench.options import coerce_options
    from gradbench.task import check_task

    load_plugins()
    entry, implied = TASKS.resolve(name)
    typed = coerce_options(f"task {name}", entry.factory, options)
    try:
        task = entry.factory(data, **{**implied, **typed})
    except TypeError as error:
        raise UsageError(f"task {name}: {error}") from None
    check_task(task, name)
    return task


def prepare_models(plan: Plan, task: Task) -> list[PreparedModel]:
    """Resolve every model's options and solve widths for a matched budget; build nothing yet."""
    kind = task.input_spec().kind
    prepared = [
        PreparedModel(spec, resolve_options(spec, plan.shared_model_options, kind))
        for spec in plan.models
    ]
    unused = [
        key
        for key, value in plan.shared_model_options.items()
        if value is not None and not any(key in p.options for p in prepared)
    ]
    if unused:
        raise UsageError(f"no chosen model takes the option(s) {', '.join(unused)}")
    if plan.match:
        matched = budgets.match_models(
            [(p.spec.name, p.options) for p in prepared],
            task,
            kind=plan.match,
            target=plan.match_target,
            tolerance=plan.match_tolerance,
            batch_size=plan.train.batch_size,
        )
        for item, (options, info) in zip(prepared, matched, strict=True):
            item.options = options
            item.match = info
    # Construct each model once on the task's fake batch so impossible combinations fail now.
    for item in prepared:
        model = build_model(item.spec.name, task.input_spec(), item.options)
        if plan.flops_budget is not None and not budgets.flops_per_step(
            model, task, plan.train.batch_size
        ):
            raise UsageError(
                f"--flops-budget: the FLOPs of {item.spec.label} cannot be counted on this task"
            )
        del model
    return prepared


def run_one(
    task_name: str,
    task: Task,
    item: PreparedModel,
    seed: int,
    plan: Plan,
    *,
    on_progress: Callable[[int, int | None], None] | None = None,
    checkpoint: Checkpointer | None = None,
) -> tuple[RunRecord, dict]:
    config = plan.train
    if config.threads:
        torch.set_num_threads(config.threads)
    device = pick_device(config.device)
    device_settings.configure(device, config)  # determinism, cuDNN; recorded below
    if device.type == "cpu":
        # Vanishing gradients reach the denormal range (< 1.2e-38), where x86 arithmetic
        # is 5-7x slower (seen on RNN/GRU at T >= 100); flushing them to zero changes no
        # figure above that range. Recorded in the environment.
        torch.set_flush_denormal(True)
    torch.manual_seed(seed)  # initialisation seed; the loop seeds data order separately
    model = build_model(item.spec.name, task.input_spec(), item.options)
    total, trainable = budgets.count_parameters(model)
    flops = budgets.flops_per_step(model, task, config.batch_size)
    _, flops_basis = budgets.representative_batches(task, config.batch_size)
    if plan.flops_budget is not None:
        config = budgets.apply_flops_budget(config, flops, plan.flops_budget)
    probes = make_probes(config.probes, model, task, config)
    result: TrainResult = train(
        task,
        model,
        config,
        seed=seed,
        device=device,
        hooks=probes,
        on_progress=on_progress,
        checkpoint=checkpoint,
    )
    summary = probes.summary()
    verdict, verdict_figures = probes.verdict(result, summary)
    if verdict_figures:
        summary = {**summary, "verdict_figures": verdict_figures}
    train_options = plan.train.as_dict()
    if plan.flops_budget is not None:
        # Each model's steps come from the total (record "steps", "budget"); the plan's
        # step count is only a stand-in and is not recorded as if it were asked for.
        train_options.update(steps=None, epochs=None)
    record: RunRecord = {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(),
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": task_name,
        "task_options": plan.task_options,
        "dataset": {
            **task.dataset_id("train").as_dict(),
            "eval": [task.dataset_id(s).as_dict() for s in getattr(task, "eval_splits", ("test",))],
        },
        "model": item.spec.name,
        "model_label": item.spec.label,
        "model_options": item.options,
        # As asked for: under a total-FLOPs budget the per-model step count is in "steps".
        "train_options": train_options,
        "seed": seed,
        "init_seed": seed,
        "data_seed": seed,
        "budget": stopping_budget(config, result, item.match)
        | (
            budgets.flops_budget_record(plan.flops_budget, flops, result.steps)
            if plan.flops_budget is not None
            else {}
        )
        | {"flops_budget": plan.flops_budget},
        "parameters": total,
        "trainable_parameters": trainable,
        "flops_per_step": flops,
        "flops_per_sample": flops / config.batch_size if flops else None,
        "flops_basis": flops_basis,
        "steps": result.steps,
        "epochs": result.epochs,
        "train_seconds": result.train_seconds,
        "eval_seconds": result.eval_seconds,
        "probe_seconds": result.probe_seconds,
        "stop_reason": result.stop_reason,
        "metrics": result.metrics,
        "metric_directions": {m.name: m.higher_is_better for m in task.metrics},
        "primary_metric": task.metrics[0].name,
        "final_train_loss": result.final_train_loss,
        "diverged": result.diverged,
        "diverged_step": result.diverged_step,
        "divergence": result.divergence,
        "target": None
        if config.target_metric is None
        else {
            "metric": config.target_metric,
            "value": config.target_value,
            "reached": result.target_reached,
            "step": result.target_step,
            "seconds": result.target_seconds,
        },
        "clip_hit_rate": result.clip_hits / max(1, result.steps)
        if (config.clip_norm or config.clip_value)
        else None,
        "baselines": dict(getattr(task, "baselines", {}) or {}),
        "probes": summary,
        "verdict": verdict,
        "verdict_start": (verdict_figures.get("start") or {}).get("verdict"),
        "verdict_end": (verdict_figures.get("end") or {}).get("verdict"),
        "verdict_evidence": verdict_figures,
        "environment": environment(str(device), torch.get_num_threads())
        | {"flush_denormal": device.type == "cpu", "memory_format": result.memory_format},
        "fast": result.fast or None,
    }
    series = {
        "loss": result.losses,
        "grad_norm": result.grad_norms,
        **probes.series(),
    }
    return record, series


def stopping_budget(
    config: TrainConfig, result: TrainResult, match: dict[str, Any] | None
) -> dict[str, Any]:
    if config.target_metric is not None:
        kind, target, achieved = (
            "target",
            f"{config.target_metric}={config.target_value}",
            (result.target_seconds if result.target_reached else None),
        )
    elif config.seconds is not None and result.stop_reason == "seconds":
        kind, target, achieved = "seconds", config.seconds, result.train_seconds
    elif config.epochs is not None and (config.steps is None or result.stop_reason == "epochs"):
        kind, target, achieved = "epochs", config.epochs, result.epochs
    elif config.steps is not None:
        kind, target, achieved = "steps", config.steps, result.steps
    else:
        kind, target, achieved = "seconds", config.seconds, result.train_seconds
    rel_error = None
    if isinstance(target, (int, float)) and achieved is not None and target:
        rel_error = (achieved - target) / target
    budget = {"kind": kind, "target": target, "achieved": achieved, "rel_error": rel_error}
    budget.update(match or {"match": None})
    return budget


def run_plan(
    plan: Plan,
    task: Task,
    store: ResultsStore,
    *,
    on_start: Callable[[PreparedModel, int], Callable[[int, int | None], None] | None]
    | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
    execution: Execution | None = None,
) -> list[RunRecord]:
    """Run every cell of ``plan``; the executor (gradbench.executors) decides where.

    This process stays the only writer of ``store``. By default every cell runs here,
    one after the other; ``execution`` can skip complete cells (resume), use worker
    processes or Ray, retry failures and checkpoint long runs.
    """
    from gradbench.executors import Execution, run_cells

    check_training(plan.train, task)
    prepared = prepare_models(plan, task)
    return run_cells(
        plan,
        task,
        prepared,
        store,
        execution or Execution(),
        on_start=on_start,
        on_record=on_record,
    )


def diverged_runs(records: list[RunRecord]) -> list[RunRecord]:
    """The records of runs that diverged (a NaN/Inf loss, gradient or weight).

    A diverged run is a result, so ``gradbench run`` exits 0 when every run finished,
    diverged or not; ``--fail-on-diverged`` (for CI) exits non-zero when this is not
    empty. See docs/probes.md, "Exit status".
    """
    return [r for r in records if r.get("diverged") or r.get("verdict") == "diverged"]
