"""What every command module shares: option aliases, choice enums, consoles, one-line errors.

Command modules (``cli.py``, ``budget_cli.py``, ``inspect_cli.py`` and the ones added
beside them) import from here and never from each other, so there is no import cycle.
Nothing here imports torch: ``gradbench --help`` must start fast.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from gradbench.atomic import write_text_atomic  # noqa: F401 (the commands' writer)
from gradbench.config import (
    DEVICES,
    EXECUTORS,
    NORMS,
    OPTIMIZERS,
    PRECISIONS,
    PROBE_LEVELS,
    SCHEDULES,
)
from gradbench.errors import GradbenchError, UsageError

# Environment variables the options read. gradbench.data, gradbench.records and
# gradbench.plugins hold the same names (importing them here would slow `--help`);
# tests/test_cli.py checks that the copies agree.
DATA_ENV = "GRADBENCH_DATA"
CACHE_ENV = "GRADBENCH_CACHE"
RESULTS_ENV = "GRADBENCH_RESULTS"
TASKS_DIR_ENV = "GRADBENCH_TASKS_DIR"
DEVICE_ENV = "GRADBENCH_DEVICE"
THREADS_ENV = "GRADBENCH_THREADS"

# Seeds are handed to numpy and torch, which take 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1
# A run per seed per model: more than this many seeds is a typo, not a benchmark.
MAX_SEEDS = 10_000


# --- consoles ---------------------------------------------------------------------------

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


def print_error(message: str) -> None:
    """``gradbench: error: ...`` on one line; the message is text, never rich markup."""
    # Messages quote user input ("foo[bar]") that rich would otherwise take for tags; a
    # newline inside one (an exception's text) would make it two lines.
    one_line = " ".join(str(message).split())
    err.print(f"[bold red]gradbench: error:[/] {escape(one_line)}", highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    one_line = " ".join(str(message).split())
    err.print(f"gradbench: warning: {escape(one_line)}", highlight=False, soft_wrap=True)


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warnings.showwarning`` replacement: a skipped record is one line, not two."""
    print_warning(str(message))


@contextmanager
def friendly_errors():
    """One line on stderr and a non-zero exit for problems the user can fix."""
    try:
        yield
    except GradbenchError as error:
        print_error(str(error))
        raise typer.Exit(error.exit_code) from None


# --- parsing ----------------------------------------------------------------------------

SI_SCALE = {"k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_number(text: str, what: str) -> float:
    """'250k', '1.5M', '2e6', '3G' -> a finite float; anything else is a UsageError."""
    text = str(text).strip()
    factor = SI_SCALE.get(text[-1:].lower(), 1.0)
    body = text[:-1] if factor != 1.0 else text
    try:
        value = float(body) * factor
    except ValueError:
        raise UsageError(f"{what} {text!r} is not a number (e.g. 250k, 1.5M, 2e6)") from None
    if not math.isfinite(value):
        raise UsageError(f"{what} must be a finite number, got {text!r}")
    return value


def parse_key_values(items: list[str], what: str) -> dict[str, Any]:
    """``key=value`` items -> {key: value}; values are kept as text for the factory to type.

    The task's or model's own signature says what type a key is (see
    ``gradbench.options.coerce_options``); guessing here would turn ``pixels=maybe`` into a
    string that a truthiness test later reads as True.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{what} {item!r} must be written key=value")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def parse_seeds(text: str) -> list[int]:
    """'0', '0,1,2', '0-4', '0-2,7' -> seeds in 0 .. 2**32-1, in the order given."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise UsageError(
                f"--seeds {text!r}: {part!r} is not a seed or a range (write 0,1,2 or 0-4)"
            ) from None
        if not (0 <= first <= MAX_SEED and 0 <= last <= MAX_SEED):
            raise UsageError(f"--seeds {text!r}: seeds must be between 0 and {MAX_SEED}")
        if last < first:
            raise UsageError(f"--seeds {text!r}: the range {part!r} is empty (write low-high)")
        # Count before building the range: "0-1000000000" must not allocate a billion ints.
        if last - first + 1 + len(seeds) > MAX_SEEDS:
            raise UsageError(f"--seeds {text!r} asks for more than {MAX_SEEDS} seeds")
        seeds.extend(range(first, last + 1))
    if not seeds:
        raise UsageError(f"--seeds {text!r} names no seed")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r} repeats a seed")
    return seeds


# --- choices ----------------------------------------------------------------------------


class MatchKind(StrEnum):
    """What ``--match`` sizes models to make equal."""

    params = "params"
    flops = "flops"


def choice_enum(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A StrEnum of ``values`` (from gradbench.config), so ``--help`` lists the choices and
    the list has one home: a choice added to the config appears here."""
    return StrEnum(name, [(v.replace("-", "_"), v) for v in values])  # type: ignore[return-value]


Optimizer = choice_enum("Optimizer", OPTIMIZERS)
Schedule = choice_enum("Schedule", SCHEDULES)
Precision = choice_enum("Precision", PRECISIONS)
Device = choice_enum("Device", DEVICES)
ProbeLevel = choice_enum("ProbeLevel", PROBE_LEVELS)


NormName = choice_enum("NormName", NORMS)


class OutputFormat(StrEnum):
    table = "table"
    markdown = "markdown"
    md = "md"
    csv = "csv"
    json = "json"


class ListWhat(StrEnum):
    tasks = "tasks"
    models = "models"
    task = "task"
    model = "model"


def plain(value: Any) -> Any:
    """An enum member as its plain value (records and configs hold strings)."""
    return value.value if isinstance(value, StrEnum) else value


def pick(values: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """The entries of ``values`` named in ``names``, in that order; a missing name is skipped
    (a command passes its parsed parameters, and not every command takes every option)."""
    return {name: values[name] for name in names if name in values}


def format_renderer(fmt: str, *, markdown: Any, csv: Any, json: Any) -> Any:
    """The writer of ``--format FMT`` for a file or a pipe: a table is written as Markdown."""
    return {"table": markdown, "markdown": markdown, "md": markdown, "csv": csv, "json": json}[fmt]


# --- option aliases (Annotated types every command may use) -----------------------------

TaskArg = Annotated[str, typer.Argument(help="Task name or alias (see `gradbench list tasks`).")]
Models = Annotated[
    list[str],
    typer.Option(
        "--model",
        "-m",
        help="Model; repeat to compare. NAME or NAME:key=value,... (e.g. rnn:init=orthogonal).",
    ),
]
Seeds = Annotated[str, typer.Option("--seeds", help="Seeds: 0,1,2 or 0-4 (each in 0..2^32-1).")]
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
        "--tasks-dir", envvar=TASKS_DIR_ENV, help="Extra folder of task/model plugin .py files."
    ),
]
Download = Annotated[
    bool, typer.Option("--download/--no-download", help="Allow downloads from upstream.")
]
TaskOptions = Annotated[
    list[str] | None,
    typer.Option(
        "--task-option", "-O", help="Task option key=value (repeatable; `list tasks -v`)."
    ),
]
# Free text, checked by gradbench.mitigations (it takes parameters: leaky_relu:0.2).
Activation = Annotated[
    str | None,
    typer.Option(help="Activation of every model that has one: relu, tanh, leaky_relu:0.2, ..."),
]
BatchNorm = Annotated[
    bool | None,
    typer.Option(
        "--batch-norm/--no-batch-norm", help="Batch norm on or off, where the model has it."
    ),
]
Norm = Annotated[
    NormName | None,
    typer.Option(
        help="Normalisation where the model has one (CNNs, MLP); --batch-norm is --norm batch."
    ),
]
Threads = Annotated[
    int | None, typer.Option(envvar=THREADS_ENV, min=1, help="CPU threads for torch.")
]
DeviceOption = Annotated[
    Device, typer.Option("--device", envvar=DEVICE_ENV, help="Where to train or time steps.")
]
Width = Annotated[
    int | None,
    typer.Option(min=1, help="Width knob of every model (channels, hidden size, d_model)."),
]
Match = Annotated[
    MatchKind | None,
    typer.Option(help="Size models to equal parameters or FLOPs per training step."),
]
MatchTarget = Annotated[
    str | None,
    typer.Option(
        "--match-target",
        help="Target for --match, e.g. 250k or 2G (default: the first model's count).",
    ),
]
DEFAULT_TOLERANCE = 0.02  # of --match; the same value as gradbench.budget.DEFAULT_TOLERANCE
Tolerance = Annotated[
    float, typer.Option(min=0.0, max=1.0, help="Relative tolerance of --match (0.02 is ±2%).")
]
FlopsBudget = Annotated[
    str | None,
    typer.Option(
        help="Equal total training FLOPs: each model trains TOTAL / its FLOPs per step "
        "steps (e.g. 2e12, 500G, 3T); replaces --steps/--epochs."
    ),
]
BatchSize = Annotated[int | None, typer.Option(min=1, help="Training batch size.")]
# Training options that `run` and `ablate` both take; --steps, --epochs, --seconds and
# --eval-every stay in each command, whose help says what they mean there.
OptimizerOption = Annotated[Optimizer | None, typer.Option(help="Optimizer.")]
LearningRate = Annotated[float | None, typer.Option(help="Base learning rate.")]
Momentum = Annotated[float | None, typer.Option(help="Momentum for sgd-momentum.")]
WeightDecay = Annotated[float | None, typer.Option(help="L2 weight decay.")]
ScheduleOption = Annotated[Schedule | None, typer.Option(help="Learning-rate schedule.")]
WarmupSteps = Annotated[int | None, typer.Option(help="Linear learning-rate warm-up steps.")]
ClipNorm = Annotated[float | None, typer.Option(help="Clip the global gradient norm to this.")]
ClipValue = Annotated[float | None, typer.Option(help="Clip each gradient element to ±this.")]
PrecisionOption = Annotated[Precision | None, typer.Option(help="Autocast precision.")]
EvalLimit = Annotated[
    int | None,
    typer.Option(help="Evaluate on the first N examples of each evaluation split (recorded)."),
]
Probes = Annotated[ProbeLevel, typer.Option(help="Gradient probes.")]
Init = Annotated[str | None, typer.Option(help="default, xavier, he, orthogonal or normal:STD.")]
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


# --- sweeps: where cells run, resuming, checkpoints, fast mode (gradbench.executors) ----


ExecutorName = choice_enum("ExecutorName", EXECUTORS)

ExecutorOption = Annotated[
    ExecutorName,
    typer.Option(
        "--executor",
        help="Where cells run: local (this machine; --jobs N worker processes) or ray "
        "(one Ray task per cell; pip install 'gradbench\\[ray]').",
    ),
]
Jobs = Annotated[
    int | None,
    typer.Option(
        "--jobs",
        "-j",
        min=1,
        help="Cells at once: N worker processes (local; default: one at a time in this "
        "process) or a cap on Ray tasks in flight.",
        show_default=False,
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--address",
        help="Ray cluster to join: host:port, ray://host:port or auto (default: start one).",
    ),
]
CpusPerRun = Annotated[
    float | None,
    typer.Option("--cpus-per-run", help="CPUs each cell holds; also its torch threads."),
]
GpusPerRun = Annotated[
    float | None, typer.Option("--gpus-per-run", help="GPUs each Ray cell holds (e.g. 0.5).")
]
Retries = Annotated[
    int,
    typer.Option("--retries", min=0, help="Retries of a failed cell (logged to failures.jsonl)."),
]
Resume = Annotated[
    bool,
    typer.Option(
        "--resume/--force",
        help="Skip cells that already have a complete record (the default); --force re-runs.",
    ),
]
CheckpointEvery = Annotated[
    int | None,
    typer.Option(
        "--checkpoint-every",
        min=1,
        help="Save each run's full state every N steps; a re-run resumes from it.",
    ),
]
Fast = Annotated[
    bool,
    typer.Option("--fast", help="bf16 autocast, channels-last, torch.compile where it pays off."),
]
Deterministic = Annotated[
    bool,
    typer.Option(
        "--deterministic", help="torch.use_deterministic_algorithms; cuDNN without autotuning."
    ),
]
