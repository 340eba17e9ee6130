"""`gradbench ablate`: run a grid of mitigation switches and show what each one changed.

The command checks everything it can before reading data (task, models, seeds, every
switch and value, the grid's size), then builds every cell's model once on the task, and
only then trains. Each cell is an ordinary run, recorded in runs.jsonl like `run`'s.
Heavy modules are imported inside the command so `gradbench --help` stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gradbench.cli_options import (
    Activation,
    BatchNorm,
    BatchSize,
    CacheDir,
    ClipNorm,
    ClipValue,
    DataDir,
    DeviceOption,
    Download,
    EvalLimit,
    Init,
    LearningRate,
    Models,
    Momentum,
    Norm,
    OptimizerOption,
    OutputFormat,
    PrecisionOption,
    ProbeLevel,
    Probes,
    ResultsDir,
    ScheduleOption,
    Seeds,
    TaskArg,
    TaskOptions,
    TasksDir,
    Threads,
    WarmupSteps,
    WeightDecay,
    Width,
    err,
    format_renderer,
    friendly_errors,
    out,
    write_text_atomic,
)
from gradbench.cli_options import Device as DeviceName

if TYPE_CHECKING:
    from gradbench.ablate import Cell
    from gradbench.records import ResultsStore, RunRecord
    from gradbench.runner import Plan, PreparedModel
    from gradbench.task import Task

Over = Annotated[
    list[str],
    typer.Option(
        "--over",
        help="A switch and its values, SWITCH=V1,V2 (repeat for a grid): a model option "
        "(activation, init, residual, norm, batch_norm, width, ...) or a training option "
        "(clip_norm=none,1, optimizer, schedule, lr, ...). The first value is the reference "
        "of the main effects.",
        show_default=False,
    ),
]


def ablate_command(
    task: TaskArg,
    model: Models,
    over: Over,
    seeds: Seeds = "0",
    steps: Annotated[int | None, typer.Option(help="Training steps of every cell.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Epochs of every cell.")] = None,
    seconds: Annotated[
        float | None, typer.Option(help="Training seconds of every cell (evaluation excluded).")
    ] = None,
    batch_size: BatchSize = None,
    optimizer: OptimizerOption = None,
    lr: LearningRate = None,
    momentum: Momentum = None,
    weight_decay: WeightDecay = None,
    schedule: ScheduleOption = None,
    warmup_steps: WarmupSteps = None,
    clip_norm: ClipNorm = None,
    clip_value: ClipValue = None,
    precision: PrecisionOption = None,
    device: DeviceOption = DeviceName.auto,
    threads: Threads = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (needed by --schedule plateau).")
    ] = None,
    eval_limit: EvalLimit = None,
    probes: Probes = ProbeLevel.default,
    width: Width = None,
    activation: Activation = None,
    init: Init = None,
    batch_norm: BatchNorm = None,
    norm: Norm = None,
    task_option: TaskOptions = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = True,
    results: ResultsDir = Path("results"),
    tasks_dir: TasksDir = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the cells and their parameters; train none.")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Run a grid of more than 16 cells."),
    ] = False,
    metric: Annotated[
        str | None,
        typer.Option(help="Metric of the tables (default: the task's primary; or train_loss)."),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format of the tables.")
    ] = OutputFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the tables to this file.")
    ] = None,
) -> None:
    """Train the cross product of the --over switches on TASK and show which ones matter."""
    params = dict(locals())  # the parsed options, by name: prepare_command picks its own
    from gradbench import ablate
    from gradbench.plan import check_output_file, prepare_command
    from gradbench.records import ResultsStore

    with friendly_errors():
        prepared = prepare_command(params, results=None if dry_run else results)
        switches = ablate.classify(
            ablate.parse_over(over),
            prepared.models,
            shared_model_options=prepared.shared_model_options,
            train_options=prepared.train_options,
        )
        cells = ablate.expand(prepared.models, switches)
        if not dry_run:
            ablate.check_size(cells, yes)
        base = prepared.train_config()
        for cell in cells:  # a bad training value (optimizer=foo) fails before the data loads
            dataclasses.replace(base, **cell.train)
        if output is not None:
            check_output_file(output, "--output")
        plan, task_obj = prepared.load()
        jobs = prepare_cells(plan, task_obj, cells)
        if dry_run:
            show_cells(jobs, task_obj, switches, plan)
            return
        store = ResultsStore(results)
        records = run_cells(jobs, task_obj, store)
        flat = [r for runs in records.values() for r in runs]
        chosen = metric or flat[0]["primary_metric"]
        ablate.check_metric(flat, chosen)
        cells_frame = ablate.cell_table(cells, switches, records, chosen)
        effects = ablate.main_effects(cells, switches, records, chosen)
        meta = {
            "task": plan.task,
            "metric": chosen,
            "budget": budget_text(flat),
            "seeds": ",".join(str(s) for s in plan.seeds),
            "switches": {s.name: list(s.values) for s in switches},
        }
        write_tables(cells_frame, effects, meta, fmt.value, output)
        err.print(f"records: {store.runs_file}", highlight=False, markup=False)


def prepare_cells(
    plan: Plan, task: Task, cells: list[Cell]
) -> list[tuple[Cell, Plan, PreparedModel]]:
    """Each cell's plan (its training switches applied) and model, built once to check it."""
    from gradbench.runner import check_training, prepare_models

    jobs = []
    for cell in cells:
        config = dataclasses.replace(plan.train, **cell.train)
        cell_plan = dataclasses.replace(plan, models=[cell.spec], train=config)
        check_training(config, task)
        jobs.append((cell, cell_plan, prepare_models(cell_plan, task)[0]))
    return jobs


def show_cells(jobs, task: Task, switches, plan: Plan) -> None:
    """--dry-run: the cells, their options and parameter counts."""
    from rich.markup import escape
    from rich.table import Table

    from gradbench.budget import count_parameters
    from gradbench.models.build import build_model

    table = Table(
        title=escape(
            f"{len(jobs)} cells x {len(plan.seeds)} seeds = {len(jobs) * len(plan.seeds)} runs "
            f"on {plan.task} (nothing trained)"
        )
    )
    for column in ("cell", "model", *(s.name for s in switches), "parameters"):
        table.add_column(escape(column), justify="left" if column == "model" else "right")
    for cell, _, item in jobs:
        total, _ = count_parameters(build_model(item.spec.name, task.input_spec(), item.options))
        values = [cell.setting.get(s.name, "—") for s in switches]
        table.add_row(*(escape(str(v)) for v in (cell.index, cell.label, *values, f"{total:,}")))
    out.print(table)


def run_cells(jobs, task: Task, store: ResultsStore) -> dict[int, list[RunRecord]]:
    """Each cell through the runner, as `run` would train it, so its records are ordinary."""
    from gradbench.runner import run_plan

    records: dict[int, list[RunRecord]] = {}
    for cell, cell_plan, _ in jobs:

        def on_start(item, seed, cell=cell):
            err.print(
                f"cell {cell.index}/{len(jobs)} {cell.label} seed {seed} ...",
                highlight=False,
                markup=False,
            )

        def on_record(record: RunRecord) -> None:
            value = record["metrics"].get(record["primary_metric"])
            shown = "nan" if value is None else f"{value:.4f}"
            status = f", DIVERGED at step {record['diverged_step']}" if record["diverged"] else ""
            err.print(
                f"  {record['primary_metric']} {shown}, verdict {record.get('verdict')}, "
                f"{record['train_seconds']:.1f}s{status} [run {record['run_id']}]",
                highlight=False,
                markup=False,
            )

        done = run_plan(cell_plan, task, store, on_start=on_start, on_record=on_record)
        records[cell.index] = sorted(done, key=lambda r: r["seed"])
    return records


def budget_text(records: list[RunRecord]) -> str:
    kinds = sorted({f"{r['budget']['kind']}={r['budget']['target']}" for r in records})
    return ", ".join(kinds)


def write_tables(cells, effects, meta: dict[str, Any], fmt: str, output: Path | None) -> None:
    from gradbench import ablate

    if fmt == "table" and output is None:
        ablate.render_rich(cells, effects, meta, out)
        return
    render = format_renderer(
        fmt, markdown=ablate.to_markdown, csv=ablate.to_csv, json=ablate.to_json
    )
    text = render(cells, effects, meta)
    if output is None:
        typer.echo(text, nl=False)
        return
    write_text_atomic(output, text)
    err.print(f"wrote {output}", highlight=False, markup=False)
