"""The gradbench command line: list, run, leaderboard, and the commands registered at the end.

Importing this module must stay cheap (``gradbench --help`` under half a second): torch,
pandas and the task modules are imported inside the commands that need them. Options
that several commands share live in ``gradbench.cli_options``; the checks a run makes
before reading any data live in ``gradbench.plan``.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import click
import typer

from gradbench.cli_options import (
    DEFAULT_TOLERANCE,
    Activation,
    AsJson,
    BatchNorm,
    BatchSize,
    CacheDir,
    CheckpointEvery,
    ClipNorm,
    ClipValue,
    CpusPerRun,
    DataDir,
    Deterministic,
    DeviceOption,
    Download,
    EvalLimit,
    ExecutorName,
    ExecutorOption,
    Fast,
    FlopsBudget,
    GpusPerRun,
    Init,
    Jobs,
    LearningRate,
    ListWhat,
    Match,
    MatchTarget,
    Models,
    Momentum,
    Norm,
    OptimizerOption,
    OutputFormat,
    PrecisionOption,
    ProbeLevel,
    Probes,
    RayAddress,
    ResultsDir,
    Resume,
    Retries,
    ScheduleOption,
    Seeds,
    TaskArg,
    TaskOptions,
    TasksDir,
    Threads,
    Tolerance,
    WarmupSteps,
    WeightDecay,
    Width,
    err,
    friendly_errors,
    interactive,
    one_line_warning,
    out,
    pick,
    print_error,
)
from gradbench.cli_options import Device as DeviceName
from gradbench.errors import GradbenchError

if TYPE_CHECKING:
    from gradbench.executors import Execution
    from gradbench.records import ResultsStore, RunRecord
    from gradbench.runner import Plan, PreparedModel
    from gradbench.task import Task

# Exit code of `run --fail-on-diverged` when a run diverged (1: error, 2: usage error).
EXIT_DIVERGED = 3

app = typer.Typer(
    name="gradbench",
    help="Measure vanishing and exploding gradients on real tasks, at matched budgets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command("list")
def list_command(
    what: Annotated[ListWhat, typer.Argument(help="tasks or models", show_default=False)],
    pattern: Annotated[str, typer.Option("--pattern", "-p", help="Glob over names.")] = "*",
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Also each entry's options and defaults.")
    ] = False,
    as_json: AsJson = False,
    tasks_dir: TasksDir = None,
) -> None:
    """List registered tasks or models (with --verbose, their options and defaults)."""
    from gradbench.list_cli import list_entries

    with friendly_errors():
        list_entries(what.value.rstrip("s") + "s", pattern, verbose, as_json, tasks_dir, out)


@app.command("run")
def run_command(
    task: TaskArg,
    model: Models,
    seeds: Seeds = "0",
    steps: Annotated[int | None, typer.Option(help="Stop after this many training steps.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Stop after this many epochs.")] = None,
    seconds: Annotated[
        float | None,
        typer.Option(help="Stop after this many training seconds (evaluation excluded)."),
    ] = None,
    target: Annotated[
        str | None,
        typer.Option(
            help="Time-to-target: stop when METRIC=VALUE is reached (needs --eval-every)."
        ),
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
        int | None, typer.Option(help="Evaluate every N steps (default: at the end).")
    ] = None,
    eval_limit: EvalLimit = None,
    probes: Probes = ProbeLevel.default,
    width: Width = None,
    activation: Activation = None,
    init: Init = None,
    batch_norm: BatchNorm = None,
    norm: Norm = None,
    match: Match = None,
    match_target: MatchTarget = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    flops_budget: FlopsBudget = None,
    task_option: TaskOptions = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = True,
    results: ResultsDir = Path("results"),
    tasks_dir: TasksDir = None,
    fail_on_diverged: Annotated[
        bool,
        typer.Option(
            "--fail-on-diverged",
            help=f"Exit with code {EXIT_DIVERGED} when any run diverged "
            "(default: 0 once every run finished, diverged or not).",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each run record as a JSON line.")
    ] = False,
    executor: ExecutorOption = ExecutorName.local,
    jobs: Jobs = None,
    address: RayAddress = None,
    cpus_per_run: CpusPerRun = None,
    gpus_per_run: GpusPerRun = None,
    retries: Retries = 0,
    resume: Resume = True,
    checkpoint_every: CheckpointEvery = None,
    fast: Fast = False,
    deterministic: Deterministic = False,
) -> None:
    """Train each model on TASK for each seed under one budget, and record every run.

    Re-running the same command runs only the cells without a complete record (see
    docs/scale.md for what "the same cell" means); --force re-runs them all.
    """
    params = dict(locals())  # the parsed options, by name: the steps below pick theirs
    from gradbench.plan import prepare_command
    from gradbench.records import ResultsStore
    from gradbench.sweep_cli import EXECUTION_OPTIONS, attach_source, make_execution

    with friendly_errors():
        prepared = prepare_command(
            params,
            target=target,
            match=match,
            match_target=match_target,
            tolerance=tolerance,
            flops_budget=flops_budget,
            results=results,
        )
        # Where cells run is checked before any data is read (Ray present, address live).
        execution = make_execution(**pick(params, EXECUTION_OPTIONS))
        plan, task_obj = prepared.load()
        attach_source(execution, plan.task, plan.task_options, prepared.data, tasks_dir)
        store = ResultsStore(results)
        store.remove_stale_parts()  # partial series files of runs that were killed
        records = execute_plan(plan, task_obj, store, as_json=as_json, execution=execution)
        if not as_json:
            show_task_leaderboard(store, plan.task)
    finish_run(records, fail_on_diverged)


def execute_plan(
    plan: Plan,
    task: Task,
    store: ResultsStore,
    *,
    as_json: bool,
    execution: Execution | None = None,
) -> list[RunRecord]:
    """Run every model and seed of ``plan``, with a progress bar on a terminal."""
    from gradbench.runner import run_plan
    from gradbench.sweep_cli import sweep_reporter

    progress_bar = make_progress_bar() if interactive() and not as_json else None
    if execution is not None:
        execution.on_sweep = sweep_reporter(execution, progress_bar, quiet=as_json)
    on_record = print_json_record if as_json else print_record_line
    try:
        return run_plan(
            plan,
            task,
            store,
            on_start=progress_callback(progress_bar, plan.train.steps, quiet=as_json),
            on_record=on_record,
            execution=execution,
        )
    finally:
        if progress_bar is not None:
            progress_bar.stop()


def make_progress_bar():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress_bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    progress_bar.start()
    return progress_bar


def progress_callback(
    progress_bar, total_steps: int | None, *, quiet: bool
) -> Callable[[PreparedModel, int], Callable[[int, int | None], None] | None]:
    """``on_start`` for run_plan: a bar per run, or one line per run in logs."""

    def on_start(item: PreparedModel, seed: int):
        if progress_bar is None:
            if not quiet:
                err.print(
                    f"training {item.spec.label} seed {seed} ...", highlight=False, markup=False
                )
            return None
        bar = progress_bar.add_task(f"{item.spec.label} seed {seed}", total=total_steps)

        def update(step: int, total: int | None) -> None:
            if step % 5 == 0 or step == total:
                progress_bar.update(bar, completed=step, total=total)

        return update

    return on_start


def print_json_record(record: RunRecord) -> None:
    from gradbench.records import finite_or_none

    # As in runs.jsonl: NaN and Inf are null, so every line is valid JSON.
    typer.echo(json.dumps(finite_or_none(dict(record)), default=str, allow_nan=False))


def print_record_line(record: RunRecord) -> None:
    metric = record["primary_metric"]
    value = record["metrics"].get(metric)
    status = (
        f"DIVERGED at step {record['diverged_step']} ({record['divergence']})"
        if record["diverged"]
        else ""
    )
    verdict = f" verdict {record['verdict']}" if record.get("verdict") else ""
    loss = record["final_train_loss"]
    shown_value = "nan" if value is None else f"{value:.4f}"
    shown_loss = "nan" if loss is None else f"{loss:.4f}"
    # markup=False: "[run ...]" and labels with brackets are text, not rich tags.
    err.print(
        f"  {record['model_label']} seed {record['seed']}: {metric} {shown_value}, "
        f"train loss {shown_loss}, {record['steps']} steps, "
        f"{record['train_seconds']:.1f}s{verdict} {status} [run {record['run_id']}]",
        highlight=False,
        markup=False,
    )


def show_task_leaderboard(store: ResultsStore, task: str) -> None:
    from gradbench.leaderboard import build_tables, render_rich

    render_rich(build_tables(store.load(), task=task), out)
    err.print(f"records: {store.runs_file}", highlight=False, markup=False)


def finish_run(records: list[RunRecord], fail_on_diverged: bool) -> None:
    """Exit 0 once every run finished; with --fail-on-diverged, 3 if any run diverged."""
    if not fail_on_diverged:
        return
    from gradbench.runner import diverged_runs

    diverged = diverged_runs(records)
    if diverged:
        print_error(
            f"{len(diverged)} of {len(records)} runs diverged "
            f"({', '.join(sorted({r['model_label'] for r in diverged}))}); --fail-on-diverged"
        )
        raise typer.Exit(EXIT_DIVERGED)


@app.command("leaderboard")
def leaderboard_command(
    task: Annotated[str | None, typer.Option(help="Only this task (name or alias).")] = None,
    model: Annotated[
        list[str] | None,
        typer.Option("--model", "-m", help="Only models matching this glob (repeatable)."),
    ] = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated columns to show (see --wide for all of them)."),
    ] = None,
    wide: Annotated[bool, typer.Option(help="Every column, not the compact default.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    results: ResultsDir = Path("results"),
    tasks_dir: TasksDir = None,
    vs: Annotated[
        str | None,
        typer.Option(
            "--vs",
            help="Reference row (e.g. resnet-20, 'rnn [clip_norm=None]'): add each row's paired "
            "difference from it on the primary metric, with its interval and p.",
        ),
    ] = None,
) -> None:
    """Tables from the run records: one per task, data set and budget, mean and 95% interval."""
    from gradbench.leaderboard_cli import leaderboard

    with friendly_errors():
        leaderboard(
            results,
            task=task,
            models=model or [],
            fmt=fmt.value,
            columns=columns,
            wide=wide,
            output=output,
            tasks_dir=tasks_dir,
            vs=vs,
        )


# Commands that live beside what they drive; add new ones to this block. Their modules
# import torch, pandas and the tasks inside the command function, not at the top, so
# `gradbench --help` stays fast (bench/cli_startup.py measures it).
from gradbench.ablate_cli import ablate_command  # noqa: E402
from gradbench.budget_cli import budget_command  # noqa: E402
from gradbench.inspect_cli import inspect_command  # noqa: E402
from gradbench.suite_cli import (  # noqa: E402
    check_command,
    compare_command,
    report_command,
    suite_command,
)

app.command("budget")(budget_command)
app.command("inspect")(inspect_command)
app.command("suite")(suite_command)
app.command("check")(check_command)
app.command("compare")(compare_command)
app.command("report")(report_command)
app.command("ablate")(ablate_command)


def _click_errors(name: str) -> tuple[type[BaseException], ...]:
    """Typer >= 0.25 vendors its own click; catch that one's exceptions as well as click's."""
    found: list[type[BaseException]] = [getattr(click.exceptions, name)]
    try:
        from typer._click import exceptions as vendored

        found.append(getattr(vendored, name))
    except (ImportError, AttributeError):
        pass
    return tuple(found)


USAGE_ERRORS = _click_errors("UsageError")
ABORTS = _click_errors("Abort")


@functools.cache
def click_command(registered: int) -> click.Command:
    """The click command Typer builds from ``app``, once per process (building it reads
    every command's signature: most of the cost of a call that fails on its input)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's usage errors become one line on stderr with exit code 2."""
    command = click_command(len(app.registered_commands))
    try:
        with warnings.catch_warnings():
            warnings.showwarning = one_line_warning
            code = command.main(args=argv, prog_name="gradbench", standalone_mode=False)
    except USAGE_ERRORS as error:
        if type(error).__name__ == "NoArgsIsHelpError" and error.ctx is not None:
            typer.echo(error.ctx.get_help())
            sys.exit(0)
        hint = ""
        if error.ctx is not None and error.ctx.command_path:
            hint = f" (see `{error.ctx.command_path} --help`)"
        print_error(f"{error.format_message()}{hint}")
        sys.exit(2)
    except ABORTS:
        err.print("gradbench: aborted", highlight=False)
        sys.exit(130)
    except GradbenchError as error:  # raised outside a command's friendly_errors
        print_error(str(error))
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
