"""The gradbench command line: list, run, leaderboard (and budget, inspect as they land)."""

from __future__ import annotations

import json
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from rich.markup import escape

from gradbench.config import TrainConfig
from gradbench.data import CACHE_ENV, DATA_ENV, data_config
from gradbench.errors import GradbenchError, UsageError
from gradbench.plugins import TASKS_DIR_ENV, load_plugins
from gradbench.records import RESULTS_ENV, ResultsStore, finite_or_none

app = typer.Typer(
    name="gradbench",
    help="Measure vanishing and exploding gradients on real tasks, at matched budgets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
# A console not attached to a terminal (CI logs, pipes, files) would be 80 columns and
# truncate the leaderboard's model names; there, tables get their natural width instead.
PIPED_WIDTH = 400


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty() or os.environ.get("COLUMNS"):
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPED_WIDTH)


err = _console(stderr=True)
out = _console(stderr=False)


def interactive() -> bool:
    return sys.stderr.isatty() and not os.environ.get("CI")


def parse_number(text: str, what: str) -> float:
    """'250k', '1.5M', '2e6', '3G' -> float."""
    scale = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
    text = text.strip()
    factor = scale.get(text[-1:].lower(), 1.0)
    body = text[:-1] if factor != 1.0 else text
    try:
        return float(body) * factor
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number (e.g. 250k, 1.5M, 2e6)") from None


def parse_key_values(items: list[str], what: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{what} {item!r} must be written key=value")
        options[key.strip().replace("-", "_")] = _literal(value.strip())
    return options


def _literal(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


@contextmanager
def friendly_errors():
    """One line on stderr and a non-zero exit for problems the user can fix."""
    try:
        yield
    except GradbenchError as error:
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None


def print_error(message: str) -> None:
    """``gradbench: error: ...`` on one line; the message is text, never rich markup."""
    # Messages quote user input ("foo[bar]") that rich would otherwise take for tags.
    err.print(f"[bold red]gradbench: error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # A skipped torn record is worth a line on stderr, not Python's two-line warning.
    err.print(f"gradbench: warning: {escape(str(message))}", highlight=False, soft_wrap=True)


DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_ENV,
        help="Folder holding the data sets in their upstream layouts (e.g. ../shared/data).",
        show_default=False,
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        envvar=CACHE_ENV,
        help="Downloads and preprocessed data.",
        show_default="~/.cache/gradbench",
    ),
]
ResultsDir = Annotated[
    Path,
    typer.Option("--results", envvar=RESULTS_ENV, help="Results directory (runs.jsonl, series/)."),
]
TasksDir = Annotated[
    Path | None,
    typer.Option(
        "--tasks-dir", envvar=TASKS_DIR_ENV, help="Extra folder of task plugin .py files."
    ),
]

# Options that `run` and `budget` share, declared once.
Download = Annotated[
    bool, typer.Option("--download/--no-download", help="Allow downloads from upstream.")
]
TaskOptions = Annotated[
    list[str] | None,
    typer.Option("--task-option", "-O", help="Task option key=value (repeatable)."),
]
Activation = Annotated[
    str | None, typer.Option(help="sigmoid, tanh, relu or leaky_relu, where the model has one.")
]
BatchNorm = Annotated[
    bool | None,
    typer.Option(
        "--batch-norm/--no-batch-norm", help="Batch norm on or off, where the model has it."
    ),
]
Threads = Annotated[
    int | None, typer.Option(envvar="GRADBENCH_THREADS", help="CPU threads for torch.")
]


@app.command("list")
def list_command(
    what: Annotated[str, typer.Argument(help="tasks or models")],
    pattern: Annotated[str, typer.Option("--pattern", "-p", help="Glob over names.")] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    tasks_dir: TasksDir = None,
) -> None:
    """List registered tasks or models."""
    from gradbench.registry import MODELS, TASKS

    with friendly_errors():
        load_plugins(tasks_dir)
        registries = {"tasks": TASKS, "task": TASKS, "models": MODELS, "model": MODELS}
        if what not in registries:
            raise UsageError(f"list what? {what!r} is not 'tasks' or 'models'")
        registry = registries[what]
        entries = registry.entries(pattern)
        if as_json:
            payload = [
                {
                    "name": e.name,
                    "aliases": list(e.aliases),
                    "family": f"{e.name}-{{{e.suffix_param}}}" if e.suffix_param else None,
                    "description": e.description,
                    "tags": list(e.tags),
                }
                for e in entries
            ]
            typer.echo(json.dumps(payload, indent=2))
            return
        from rich.table import Table

        table = Table("name", "aliases", "description")
        for e in entries:
            name = f"{e.name}[-{e.suffix_param}]" if e.suffix_param else e.name
            table.add_row(escape(name), escape(", ".join(e.aliases)), escape(e.description))
        out.print(table)


@app.command("run")
def run_command(
    task: Annotated[str, typer.Argument(help="Task name (see `gradbench list tasks`).")],
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="Model to run; repeat to compare. NAME or NAME:key=value,... "
            "(e.g. rnn:init=orthogonal).",
        ),
    ],
    seeds: Annotated[str, typer.Option(help="Seeds: 0,1,2 or 0-4.")] = "0",
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
    batch_size: Annotated[int | None, typer.Option(help="Training batch size.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="sgd, sgd-momentum, adam or adamw.")] = None,
    lr: Annotated[float | None, typer.Option(help="Base learning rate.")] = None,
    momentum: Annotated[float | None, typer.Option(help="Momentum for sgd-momentum.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="L2 weight decay.")] = None,
    schedule: Annotated[str | None, typer.Option(help="constant, step or cosine.")] = None,
    warmup_steps: Annotated[
        int | None, typer.Option(help="Linear learning-rate warm-up steps.")
    ] = None,
    clip_norm: Annotated[
        float | None, typer.Option(help="Clip the global gradient norm to this.")
    ] = None,
    clip_value: Annotated[
        float | None, typer.Option(help="Clip each gradient element to ±this.")
    ] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 or bf16 (autocast).")] = None,
    device: Annotated[
        str, typer.Option(envvar="GRADBENCH_DEVICE", help="auto, cpu, cuda or mps.")
    ] = "auto",
    threads: Threads = None,
    eval_every: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (default: at the end).")
    ] = None,
    probes: Annotated[str, typer.Option(help="Gradient probes: off, default or full.")] = "default",
    width: Annotated[
        int | None, typer.Option(help="Width knob of every model (channels, hidden size, d_model).")
    ] = None,
    activation: Activation = None,
    init: Annotated[
        str | None, typer.Option(help="default, xavier, he, orthogonal or normal:STD.")
    ] = None,
    batch_norm: BatchNorm = None,
    match: Annotated[
        str | None, typer.Option(help="Size models to equal 'params' or 'flops' (per step).")
    ] = None,
    match_target: Annotated[
        str | None, typer.Option(help="Target for --match, e.g. 250k (default: the first model's).")
    ] = None,
    tolerance: Annotated[float, typer.Option(help="Relative tolerance of --match.")] = 0.02,
    flops_budget: Annotated[
        str | None,
        typer.Option(
            help="Equal total training FLOPs: each model trains TOTAL / its FLOPs per step "
            "steps (e.g. 2e12, 500G, 3T); replaces --steps/--epochs."
        ),
    ] = None,
    task_option: TaskOptions = None,
    data_dir: DataDir = None,
    cache_dir: CacheDir = None,
    download: Download = True,
    results: ResultsDir = Path("results"),
    tasks_dir: TasksDir = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each run record as a JSON line.")
    ] = False,
) -> None:
    """Train each model on TASK for each seed under one budget, and record every run."""
    from gradbench.leaderboard import build_tables, render_rich
    from gradbench.models.build import parse_model_arg
    from gradbench.runner import Plan, load_task, parse_seeds, run_plan

    with friendly_errors():
        load_plugins(tasks_dir)
        from gradbench.registry import TASKS

        # Unknown tasks fail here, before any data is read; an alias is recorded under
        # the task's own name so its runs share the leaderboard with the others.
        task = TASKS.canonical(task)
        specs = [parse_model_arg(m) for m in model]
        seed_list = parse_seeds(seeds)
        task_options = parse_key_values(task_option or [], "--task-option")
        target_metric = target_value = None
        if target is not None:
            name, sep, value = target.partition("=")
            if not sep:
                raise UsageError(
                    f"--target {target!r} must be METRIC=VALUE, e.g. test_accuracy=0.85"
                )
            target_metric, target_value = name.strip(), parse_number(value, "--target value")
            if eval_every is None:
                raise UsageError(
                    "--target needs --eval-every N to check the metric during training"
                )
        if match is not None and match not in ("params", "flops"):
            raise UsageError(f"--match {match!r} is not 'params' or 'flops'")
        if match_target is not None and match is None:
            raise UsageError("--match-target needs --match params or --match flops")
        data = data_config(data_dir, cache_dir, download)
        chosen = {
            "steps": steps,
            "epochs": epochs,
            "seconds": seconds,
            "target_metric": target_metric,
            "target_value": target_value,
            "batch_size": batch_size,
            "optimizer": optimizer,
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "schedule": schedule,
            "warmup_steps": warmup_steps,
            "clip_norm": clip_norm,
            "clip_value": clip_value,
            "precision": precision,
            "device": device,
            "threads": threads,
            "eval_every": eval_every,
            "probes": probes,
        }
        flops_total = parse_number(flops_budget, "--flops-budget") if flops_budget else None
        if flops_total is not None:
            if steps is not None or epochs is not None:
                raise UsageError("--flops-budget sets each model's steps: drop --steps/--epochs")
            if not flops_total > 0:
                raise UsageError(f"--flops-budget must be > 0, got {flops_budget}")
            # A placeholder step count; each model's own is set from its FLOPs per step.
            chosen["steps"] = 1
        # Cheap validation of the training options before loading data.
        TrainConfig(**{k: v for k, v in chosen.items() if v is not None})
        task_obj = load_task(task, data, task_options)
        defaults = dict(getattr(task_obj, "train_defaults", {}))
        config = TrainConfig(**(defaults | {k: v for k, v in chosen.items() if v is not None}))
        plan = Plan(
            task=task,
            models=specs,
            seeds=seed_list,
            train=config,
            task_options=task_options,
            shared_model_options={
                "width": width,
                "activation": activation,
                "init": init,
                "batch_norm": batch_norm,
            },
            match=match,
            match_target=parse_number(match_target, "--match-target") if match_target else None,
            match_tolerance=tolerance,
            flops_budget=flops_total,
        )
        store = ResultsStore(results)
        progress_bar = None
        if interactive() and not as_json:
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

        def on_start(item, seed):
            if progress_bar is None:
                if not as_json:
                    err.print(
                        f"training {item.spec.label} seed {seed} ...", highlight=False, markup=False
                    )
                return None
            bar = progress_bar.add_task(f"{item.spec.label} seed {seed}", total=config.steps)

            def update(step, total):
                if step % 5 == 0 or step == total:
                    progress_bar.update(bar, completed=step, total=total)

            return update

        def on_record(record):
            if as_json:
                # As in runs.jsonl: NaN and Inf are null, so every line is valid JSON.
                line = json.dumps(finite_or_none(dict(record)), default=str, allow_nan=False)
                typer.echo(line)
                return
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

        try:
            run_plan(plan, task_obj, store, on_start=on_start, on_record=on_record)
        finally:
            if progress_bar is not None:
                progress_bar.stop()
        if not as_json:
            tables = build_tables(store.load(), task=task)
            render_rich(tables, out)
            err.print(f"records: {store.runs_file}", highlight=False, markup=False)


@app.command("leaderboard")
def leaderboard_command(
    task: Annotated[str | None, typer.Option(help="Only this task.")] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, markdown, csv or json.")
    ] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file instead of stdout.")
    ] = None,
    results: ResultsDir = Path("results"),
) -> None:
    """Tables from the run records: one per task and data set, mean and 95% interval over seeds."""
    from gradbench import leaderboard as lb

    with friendly_errors():
        if fmt not in ("table", "markdown", "md", "csv", "json"):
            raise UsageError(f"--format {fmt!r} is not table, markdown, csv or json")
        store = ResultsStore(results)
        records = store.load()
        if not records:
            raise GradbenchError(f"no run records in {store.runs_file}; run `gradbench run` first")
        tables = lb.build_tables(records, task=task)
        if not tables:
            raise UsageError(f"no records for task {task!r}")
        if fmt == "table" and output is None:
            lb.render_rich(tables, out)
            return
        text = {
            "table": lb.to_markdown,
            "markdown": lb.to_markdown,
            "md": lb.to_markdown,
            "csv": lb.to_csv,
            "json": lb.to_json,
        }[fmt](tables)
        if output is None:
            typer.echo(text, nl=False)
        else:
            tmp = output.with_name(f".{output.name}.part")
            output.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(output)
            err.print(f"wrote {output}", highlight=False, markup=False)


# Commands that live beside the module they drive.
from gradbench.budget_cli import budget_command  # noqa: E402
from gradbench.inspect_cli import inspect_command  # noqa: E402

app.command("budget")(budget_command)
app.command("inspect")(inspect_command)


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


def main(argv: list[str] | None = None) -> None:
    """Entry point: click's usage errors become one line on stderr with exit code 2."""
    command = typer.main.get_command(app)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
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
