"""`gradbench budget`: solve widths for a matched budget and show what each model would cost.

Nothing is trained. For each model: the solved width, parameters, the error against the
target, FLOPs per training step and per sample (counted, see gradbench/flops.py), and
the seconds of a real training step on this machine (measured on a fake batch).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from gradbench.cli_options import (
    DEFAULT_TOLERANCE,
    Activation,
    BatchNorm,
    BatchSize,
    CacheDir,
    DataDir,
    DeviceOption,
    Download,
    Match,
    Models,
    TaskArg,
    TaskOptions,
    TasksDir,
    Threads,
    Tolerance,
    Width,
    err,
    friendly_errors,
    out,
    parse_number,
)
from gradbench.cli_options import Device as DeviceName
from gradbench.errors import UsageError

# gradbench.budget imports torch; this module is imported by `gradbench --help`, so the
# budget functions are imported inside the command.

# `budget` has no metric target, so its older spelling `--target` (a size) stays an alias.
BudgetMatchTarget = Annotated[
    str | None,
    typer.Option(
        "--match-target",
        "--target",
        help="Target for --match, e.g. 250k or 2G (default: the first model's count).",
    ),
]


def budget_command(
    task: TaskArg,
    model: Models,
    match: Match = None,
    match_target: BudgetMatchTarget = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    batch_size: BatchSize = None,
    flops_budget: Annotated[
        str | None,
        typer.Option(
            help="Equal total training FLOPs: show the steps each model gets for this total "
            "(e.g. 5e13)."
        ),
    ] = None,
    time_steps: Annotated[
        int,
        typer.Option(
            min=0, help="Timed training steps per model, after one warm-up (0: skip timing)."
        ),
    ] = 3,
    width: Width = None,
    activation: Activation = None,
    batch_norm: BatchNorm = None,
    device: DeviceOption = DeviceName.auto,
    threads: Threads = None,
    task_option: TaskOptions = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = True,
    tasks_dir: TasksDir = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per model.")
    ] = False,
) -> None:
    """Solve widths for a matched budget and print parameters, FLOPs and step time; no training."""
    params = dict(locals())  # the parsed options, by name: prepare_command picks its own
    import torch

    from gradbench import budget as budgets
    from gradbench.models.build import build_model
    from gradbench.plan import prepare_command
    from gradbench.runner import prepare_models
    from gradbench.train import pick_device

    with friendly_errors():
        prepared = prepare_command(
            params,
            match=match,
            match_target=match_target,
            tolerance=tolerance,
            needs_budget=False,  # `budget` trains nothing
        )
        total_flops = None
        if flops_budget is not None:
            total_flops = parse_number(flops_budget, "--flops-budget")
            if not total_flops > 0:
                raise UsageError(f"--flops-budget must be > 0, got {flops_budget}")
        # A one-step budget only satisfies TrainConfig.
        prepared.train_options.setdefault("steps", 1)
        plan, task_obj = prepared.load()
        config = plan.train
        if config.threads:
            torch.set_num_threads(config.threads)
        prepared_models = prepare_models(plan, task_obj)  # solves widths; UsageError if unreachable
        torch_device = pick_device(config.device)
        rows = []
        for item in prepared_models:
            torch.manual_seed(0)
            net = build_model(item.spec.name, task_obj.input_spec(), item.options)
            total, trainable = budgets.count_parameters(net)
            flops = budgets.flops_per_step(net, task_obj, config.batch_size)
            seconds = (
                budgets.measure_step_seconds(net, task_obj, config, torch_device, steps=time_steps)
                if time_steps
                else None
            )
            row: dict[str, Any] = {
                "model": item.spec.label,
                "name": item.spec.name,
                "options": item.options,
                "width": item.options.get("width"),
                "parameters": total,
                "trainable_parameters": trainable,
                "flops_per_step": flops,
                "flops_per_sample": flops / config.batch_size if flops else None,
                "batch_size": config.batch_size,
                "step_seconds": seconds,
                "step_seconds_device": str(torch_device) if seconds is not None else None,
                **(item.match or {}),
            }
            if total_flops is not None:
                row["flops_budget"] = total_flops
                row["flops_budget_steps"] = budgets.steps_for_flops(flops or 0.0, total_flops)
            rows.append(row)
        if as_json:
            for row in rows:
                typer.echo(json.dumps(row, default=str))
        else:
            out.print(render_table(rows, plan.match, tolerance, time_steps))
        for note in tolerance_notes(prepared_models, task_obj, rows, config.batch_size):
            err.print(note, highlight=False, markup=False)


def render_table(rows: list[dict[str, Any]], match: str | None, tolerance: float, time_steps: int):
    """A rich table, one row per model; the caption says what was matched and how."""
    from rich.table import Table

    from gradbench import budget as budgets

    if match:
        target = rows[0]["match_target"] if rows else None
        reference = rows[0].get("match_reference") if rows else None
        what = budgets.UNITS[match]
        caption = f"matched on {what}: target {budgets.si_number(target)}"
        caption += f" (the first model, {reference}, as given)" if reference else ""
        caption += f", tolerance ±{tolerance:.3g}"
        if match == "flops":
            caption += f", batch size {rows[0]['batch_size']}" if rows else ""
    else:
        caption = "not matched: models as given (use --match params|flops to size them)"
    if time_steps:
        caption += f"; step time measured: median of {time_steps} real training steps"
    table = Table(title="budget", caption=caption)
    columns = ["model", "width", "parameters"]
    if match:
        columns.append("error vs target")
    columns += ["FLOPs/step", "FLOPs/sample"]
    if time_steps:
        columns.append("step s (measured)")
    if rows and "flops_budget_steps" in rows[0]:
        columns.append(f"steps for {budgets.si_number(rows[0]['flops_budget'])} FLOPs")
    if match:
        columns.append("within tolerance")
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        # A matched CIFAR net's width is its base channels times a per-stage multiplier.
        multiplier = row["options"].get("width_multiplier")
        width = str(row["width"])
        if multiplier not in (None, 1.0):
            width += f" x{multiplier:.4g}"
        cells = [row["model"], width, f"{row['parameters']:,}"]
        if match:
            cells.append(f"{row['match_rel_error']:+.2%}")
        cells += [
            budgets.si_number(row["flops_per_step"]),
            budgets.si_number(row["flops_per_sample"]),
        ]
        if time_steps:
            cells.append(f"{row['step_seconds']:.3g}")
        if "flops_budget_steps" in row:
            cells.append(f"{row['flops_budget_steps']:,}")
        if match:
            cells.append("yes" if row["match_within_tolerance"] else "NO")
        table.add_row(*cells)
    return table


def tolerance_notes(prepared: list[Any], task: Any, rows: list[dict[str, Any]], batch_size: int):
    """For a model no width puts within tolerance: the counts either side of the target."""
    from gradbench import budget as budgets

    for item, row in zip(prepared, rows, strict=True):
        if not row.get("match") or row["match_within_tolerance"]:
            continue
        kind, target = row["match"], row["match_target"]
        counter = budgets.ModelCounter(item.spec.name, item.options, task, batch_size)
        step = budgets.width_multiple(item.options)
        width = row["width"]
        sides = []
        for other in sorted({max(step, width - step), width, width + step}):
            count = counter.measure(kind)(other)
            sides.append(
                f"width {other}: {budgets.si_number(count)} ({(count - target) / target:+.1%})"
            )
        yield (
            f"note: {row['model']}: no width lands within ±{row['match_tolerance']:.3g} of "
            f"{budgets.si_number(target)} {budgets.UNITS[kind]} ({'; '.join(sides)}); "
            "the row is flagged. Pick a target near one of these, or loosen --tolerance."
        )
