"""Plan preparation: everything `run` and `budget` check before any data is read.

``prepare_plan`` turns the command line's values into a ``PreparedPlan`` or raises one
``UsageError``: task and model names, seeds, every training option (types, ranges,
finiteness), every ``-O`` task option typed against the factory's signature, where the
output goes (a writable directory), and the device. Nothing is loaded and nothing is
written, so a bad input costs milliseconds and leaves the results directory as it was.
``PreparedPlan.load`` then reads the data and checks what needs it (batch size against
the training set, the target metric, every model built once).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradbench.cli_options import parse_key_values, parse_number, parse_seeds, pick, plain
from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.task import DataConfig, task_member

if TYPE_CHECKING:
    from gradbench.models.build import ModelSpec
    from gradbench.runner import Plan
    from gradbench.task import Task

# The budget placeholder that lets TrainConfig check the other options before the task's
# own defaults are known (and for `budget`, which trains nothing).
_PLACEHOLDER_STEPS = 1

# The command-line parameters that become TrainConfig fields and options of every model,
# by the name a command declares them under (see prepare_command).
TRAIN_OPTIONS = (
    "steps",
    "epochs",
    "seconds",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "warmup_steps",
    "clip_norm",
    "clip_value",
    "precision",
    "device",
    "threads",
    "eval_every",
    "eval_limit",
    "probes",
    "fast",
    "deterministic",
)
SHARED_MODEL_OPTIONS = ("width", "activation", "init", "batch_norm", "norm")


def apply_eval_limit(task: Task, limit: int | None) -> None:
    """Evaluate on at most ``limit`` examples of each evaluation split (--eval-limit).

    Wherever a task is loaded for training (here, and in every worker process), so a
    cell computes the same whichever executor runs it.
    """
    if limit is None:
        return
    if not hasattr(task, "eval_limit"):
        raise UsageError(f"task {task.name} does not support --eval-limit")
    task.eval_limit = limit


@dataclass
class PreparedPlan:
    """A validated request: what `run` (or `budget`) will do, before any data is read."""

    task: str  # canonical task name (an alias is recorded under the task's own name)
    task_options: dict[str, Any]  # typed against the task factory's signature
    models: list[ModelSpec]
    seeds: list[int]
    train_options: dict[str, Any]  # the training options given (not the task's defaults)
    shared_model_options: dict[str, Any] = field(default_factory=dict)
    match: str | None = None
    match_target: float | None = None
    match_tolerance: float = 0.02
    flops_budget: float | None = None
    data: DataConfig = field(default_factory=DataConfig)
    results: Path | None = None

    def train_config(self, defaults: dict[str, Any] | None = None) -> TrainConfig:
        """TrainConfig: the task's defaults overridden by what was given."""
        given = dict(self.train_options)
        if self.flops_budget is not None:
            # A placeholder; each model's own step count comes from its FLOPs per step.
            given["steps"] = _PLACEHOLDER_STEPS
        return TrainConfig(**((defaults or {}) | given))

    def load(self) -> tuple[Plan, Task]:
        """Read the task's data and return the runner's Plan and the task object."""
        from gradbench.runner import Plan, check_training, load_task

        task = load_task(self.task, self.data, self.task_options)  # protocol checked there
        config = self.train_config(dict(task_member(task, "train_defaults")))
        apply_eval_limit(task, config.eval_limit)
        plan = Plan(
            task=self.task,
            models=self.models,
            seeds=self.seeds,
            train=config,
            task_options=self.task_options,
            shared_model_options=self.shared_model_options,
            match=self.match,
            match_target=self.match_target,
            match_tolerance=self.match_tolerance,
            flops_budget=self.flops_budget,
        )
        check_training(config, task)
        return plan, task


def parse_target(target: str | None, eval_every: int | None) -> tuple[str | None, float | None]:
    """``--target METRIC=VALUE`` -> (metric, value); it needs ``--eval-every``."""
    if target is None:
        return None, None
    name, sep, value = target.partition("=")
    if not sep or not name.strip():
        raise UsageError(f"--target {target!r} must be METRIC=VALUE, e.g. test_accuracy=0.85")
    number = parse_number(value, "--target value")
    if eval_every is None:
        raise UsageError("--target needs --eval-every N to check the metric during training")
    return name.strip(), number


def check_training_options(given: dict[str, Any], *, budget_given: bool) -> dict[str, Any]:
    """The given training options (None dropped, enums as text), checked by TrainConfig."""
    options = {k: plain(v) for k, v in given.items() if v is not None}
    probe = dict(options)
    if budget_given:  # a --flops-budget sets steps per model; `budget` trains nothing
        probe.setdefault("steps", _PLACEHOLDER_STEPS)
    TrainConfig(**probe)
    return options


def check_device(name: str) -> None:
    """A device that is not there fails now, not after the data has loaded."""
    if name in ("auto", "cpu"):
        return
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: no MPS device is available (use --device cpu or auto)")


def check_output_dir(path: Path, what: str) -> None:
    """``path`` is, or can become, a writable directory; nothing is created yet."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{what} {str(path)!r} is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UsageError(f"{what} {str(path)!r} is not writable")
        return
    parent = _existing_parent(path)
    if not parent.is_dir():
        raise UsageError(f"{what} {str(path)!r} cannot be created: {str(parent)!r} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {str(path)!r} cannot be created in {str(parent)!r}")


def check_output_file(path: Path, what: str) -> None:
    """``path`` can be written as a file: not a directory, its folder writable."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {str(path)!r} is a directory")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{what} {str(path)!r} is not writable")
    check_output_dir(path.parent if str(path.parent) else Path("."), f"{what}'s folder")


def check_results_dir(path: Path) -> None:
    """The results directory, and the files in it a run appends to."""
    check_output_dir(path, "--results")
    for name in ("runs.jsonl",):
        target = Path(path) / name
        if target.exists() and not target.is_file():
            raise UsageError(f"{str(target)!r} is not a file")
    series = Path(path) / "series"
    if series.exists() and not series.is_dir():
        raise UsageError(f"{str(series)!r} is not a directory")


def _existing_parent(path: Path) -> Path:
    current = path.absolute()
    while not current.exists():
        current = current.parent
    return current


def check_model_options(specs: list[ModelSpec], shared: dict[str, Any]) -> None:
    """Each model's options with the shared ones (--init, --activation) applied, checked
    now; the task's input kind is checked again once it is loaded (prepare_models)."""
    from gradbench.models.build import resolve_options

    for spec in specs:
        resolve_options(spec, shared)
    if shared.get("activation") is not None:
        from gradbench.mitigations import parse_activation

        parse_activation(shared["activation"])


def canonical_task(name: str) -> str:
    """The task's registered name; an unknown one hints at a plugin folder not given."""
    from gradbench.plugins import plugin_folder_hint
    from gradbench.registry import TASKS

    try:
        return TASKS.canonical(name)
    except UsageError as error:
        raise UsageError(f"{error}{plugin_folder_hint()}") from None


def prepare_plan(
    task: str,
    models: list[str],
    *,
    seeds: str = "0",
    train_options: dict[str, Any] | None = None,
    target: str | None = None,
    task_options: dict[str, Any] | None = None,
    shared_model_options: dict[str, Any] | None = None,
    match: str | None = None,
    match_target: str | None = None,
    tolerance: float = 0.02,
    flops_budget: str | None = None,
    data: DataConfig | None = None,
    results: Path | None = None,
    needs_budget: bool = True,
) -> PreparedPlan:
    """Validate a `run` (or `budget`) request without reading data; see the module doc."""
    from gradbench.models.build import parse_model_arg
    from gradbench.options import coerce_options
    from gradbench.registry import TASKS

    canonical = canonical_task(task)
    entry, implied = TASKS.resolve(task)
    typed_task_options = coerce_options(f"task {canonical}", entry.factory, task_options or {})
    clash = [k for k in typed_task_options if k in implied and k == entry.suffix_param]
    if clash:
        raise UsageError(f"task {canonical}: {clash[0]} is set by the name; write {entry.name}-N")
    specs = [parse_model_arg(m) for m in models]
    seed_list = parse_seeds(seeds)
    given = dict(train_options or {})
    eval_every = given.get("eval_every")
    given["target_metric"], given["target_value"] = parse_target(target, eval_every)
    flops_total = None
    if flops_budget is not None:
        flops_total = parse_number(flops_budget, "--flops-budget")
        if given.get("steps") is not None or given.get("epochs") is not None:
            raise UsageError("--flops-budget sets each model's steps: drop --steps/--epochs")
        if not flops_total > 0:
            raise UsageError(f"--flops-budget must be > 0, got {flops_budget}")
    budget_given = flops_total is not None or not needs_budget
    checked = check_training_options(given, budget_given=budget_given)
    match = plain(match)
    if match_target is not None and match is None:
        raise UsageError("--match-target needs --match params or --match flops")
    target_count = parse_number(match_target, "--match-target") if match_target else None
    if target_count is not None and not target_count > 0:
        raise UsageError(f"--match-target must be > 0, got {match_target}")
    shared = {k: plain(v) for k, v in (shared_model_options or {}).items()}
    check_model_options(specs, shared)
    check_device(checked.get("device", "auto"))
    if results is not None:
        check_results_dir(results)
    return PreparedPlan(
        task=canonical,
        task_options=typed_task_options,
        models=specs,
        seeds=seed_list,
        train_options=checked,
        shared_model_options=shared,
        match=match,
        match_target=target_count,
        match_tolerance=tolerance,
        flops_budget=flops_total,
        data=data or DataConfig(),
        results=results,
    )


def prepare_command(params: Mapping[str, Any], **request: Any) -> PreparedPlan:
    """``prepare_plan`` from a command's parsed parameters, by name, after its plugins load.

    ``params`` holds what the command declares (``task``, ``model``, ``tasks_dir``, the
    data folders, ``-O`` task options, ``seeds`` where it has them, and any of
    TRAIN_OPTIONS and SHARED_MODEL_OPTIONS); an option a command does not declare is not
    given. ``request`` is the rest of ``prepare_plan``'s keywords (match, results, ...).
    """
    from gradbench.data import data_config
    from gradbench.plugins import load_plugins

    load_plugins(params["tasks_dir"])
    return prepare_plan(
        params["task"],
        params["model"],
        **pick(params, ("seeds",)),
        train_options=pick(params, TRAIN_OPTIONS),
        task_options=parse_key_values(params["task_option"] or [], "--task-option"),
        shared_model_options=pick(params, SHARED_MODEL_OPTIONS),
        data=data_config(params["data_dir"], params["cache_dir"], params["download"]),
        **request,
    )
