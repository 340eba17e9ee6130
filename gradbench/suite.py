"""Suites: a TOML file of comparisons (and the claims they check), run resumably.

A suite file::

    description = "what it is for"
    seeds = "0"                      # default for every comparison
    train = { threads = 1 }          # TrainConfig defaults for every comparison
    claim_files = ["article"]        # built-in claims files by name, or paths
    claims = ["adding-50: gru < rnn on test_mse"]

    [[comparison]]
    task = "image"
    models = ["plain-20", "resnet-20"]
    train = { steps = 60, batch_size = 64, lr = 0.05 }
    model_options = { width = 8 }    # --width/--activation/--init/--batch-norm for all
    task_options = {}                # -O key=value
    seeds = "0-2"                    # overrides the suite's
    match = "params"                 # optional, with match_target and tolerance
    flops_budget = 2e12              # optional: equal total training FLOPs

A *cell* is one run: task and task options, training data set, model with its resolved
options, training configuration (without the thread count), matched budget, and seed.
Its key is ``gradbench.cells.cell_key``, the one ``gradbench run`` uses, stored in the
record as ``cell``. Re-running a suite skips every cell whose complete
record exists (the record line is written last and atomically, so a killed run leaves
no record and is run again); ``force`` runs them all again. One suite run at a time may
write to a results directory (a lock file), so two runs never duplicate a cell.
"""

from __future__ import annotations

import contextlib
import re
import tomllib
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from gradbench import cells
from gradbench.claims import Claim, check_metric_names, claims_path, parse_claim, read_claims
from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.records import ResultsStore, RunRecord

SUITE_KEYS = {"description", "seeds", "train", "claim_files", "claims", "comparison"}
COMPARISON_KEYS = {
    "name",
    "task",
    "models",
    "seeds",
    "train",
    "model_options",
    "task_options",
    "match",
    "match_target",
    "tolerance",
    "flops_budget",
}
SHARED_MODEL_OPTIONS = ("width", "activation", "init", "batch_norm")
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


@dataclass
class Comparison:
    task: str  # canonical task name
    models: list[str]
    seeds: list[int]
    train: dict[str, Any]
    model_options: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    match: str | None = None
    match_target: float | None = None
    tolerance: float = 0.02
    flops_budget: float | None = None
    name: str = ""
    line: int = 0  # of its [[comparison]] header, for messages


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    comparisons: list[Comparison]
    claims: list[Claim]

    @property
    def cells(self) -> int:
        return sum(len(c.models) * len(c.seeds) for c in self.comparisons)


def builtin_suites() -> dict[str, Path]:
    folder = resources.files("gradbench") / "suites"
    return {p.name[:-5]: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def suite_path(name: str | Path) -> Path:
    builtin = builtin_suites()
    if str(name) in builtin:
        return builtin[str(name)]
    path = Path(name)
    if not path.is_file():
        raise UsageError(
            f"no suite {str(name)!r}: not a built-in ({', '.join(sorted(builtin))}) nor a file"
        )
    return path


def _line_of(lines: list[str], needle: str, start: int = 0) -> int:
    """1-based number of the first line at or after ``start`` holding ``needle`` (else start)."""
    for number in range(start, len(lines)):
        if needle in lines[number]:
            return number + 1
    return max(start, 1)


def load_suite(name: str | Path) -> Suite:
    """Read and check a suite against the registries; nothing is trained or loaded.

    Every problem is one UsageError naming the file and line.
    """
    from gradbench.plugins import load_plugins

    path = suite_path(name)
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib's message ends "(at line N, column M)".
        raise UsageError(f"{path}: {error}") from None
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        line = _line_of(lines, unknown[0])
        raise UsageError(
            f"{path}:{line}: unknown key {unknown[0]!r} "
            f"(a suite has {', '.join(sorted(SUITE_KEYS))})"
        )
    load_plugins()
    headers = [i for i, line in enumerate(lines) if re.match(r"\s*\[\[\s*comparison\s*\]\]", line)]
    raw = data.get("comparison", [])
    if not raw:
        raise UsageError(f"{path}:1: a suite needs at least one [[comparison]]")
    defaults_train = _table(data.get("train", {}), f"{path}:{_line_of(lines, 'train')}", "train")
    default_seeds = str(data.get("seeds", "0"))
    comparisons = []
    for index, entry in enumerate(raw):
        start = headers[index] if index < len(headers) else 0
        comparisons.append(
            _comparison(entry, path, lines, start, defaults_train, default_seeds, index)
        )
    claims = _claims(data, path, lines, comparisons)
    return Suite(path.stem, path, str(data.get("description", "")), comparisons, claims)


def _table(value: Any, where: str, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UsageError(f"{where}: {what} must be a table, e.g. {what} = {{ key = value }}")
    return dict(value)


def _comparison(
    entry: dict[str, Any],
    path: Path,
    lines: list[str],
    start: int,
    defaults_train: dict[str, Any],
    default_seeds: str,
    index: int,
) -> Comparison:
    from gradbench.cli_options import parse_number, parse_seeds
    from gradbench.models.build import model_options, parse_model_arg
    from gradbench.registry import TASKS

    def where(needle: str | None = None) -> str:
        return f"{path}:{_line_of(lines, needle, start) if needle else start + 1}"

    unknown = sorted(set(entry) - COMPARISON_KEYS)
    if unknown:
        raise UsageError(
            f"{where(unknown[0])}: unknown key {unknown[0]!r} in [[comparison]] "
            f"(it takes {', '.join(sorted(COMPARISON_KEYS))})"
        )
    if "task" not in entry or not entry.get("models"):
        raise UsageError(f"{where()}: a [[comparison]] needs task and models")
    try:
        task = TASKS.canonical(str(entry["task"]))
    except UsageError as error:
        raise UsageError(f"{where('task')}: {error}") from None
    if not isinstance(entry["models"], list):
        raise UsageError(f"{where('models')}: models must be a list of names")
    shared = _table(entry.get("model_options", {}), where("model_options"), "model_options")
    bad = sorted(set(shared) - set(SHARED_MODEL_OPTIONS))
    if bad:
        raise UsageError(
            f"{where(bad[0])}: model_options takes {', '.join(SHARED_MODEL_OPTIONS)}, "
            f"not {bad[0]!r}"
            " (give a model its own options as NAME:key=value)"
        )
    models = []
    for text in entry["models"]:
        try:
            spec = parse_model_arg(str(text))
            model_options(spec.name)
        except UsageError as error:
            raise UsageError(f"{where(str(text))}: {error}") from None
        models.append(spec.label)
    if len(set(models)) != len(models):
        raise UsageError(f"{where('models')}: a model is listed twice")
    train = defaults_train | _table(entry.get("train", {}), where("train"), "train")
    bad = sorted(set(train) - TRAIN_KEYS)
    if bad:
        raise UsageError(f"{where(bad[0])}: unknown training option {bad[0]!r}")
    flops_budget = entry.get("flops_budget")
    try:
        if flops_budget is not None:
            flops_budget = parse_number(str(flops_budget), "flops_budget")
            train.setdefault("steps", 1)  # a placeholder: each model's steps come from FLOPs
        TrainConfig(**train)
        seeds = parse_seeds(str(entry.get("seeds", default_seeds)))
        match = entry.get("match")
        if match not in (None, "params", "flops"):
            raise UsageError(f"match {match!r} is not params or flops")
        match_target = entry.get("match_target")
        if match_target is not None:
            match_target = parse_number(str(match_target), "match_target")
    except UsageError as error:
        raise UsageError(f"{where()}: {error}") from None
    return Comparison(
        task=task,
        models=models,
        seeds=seeds,
        train=train,
        model_options=shared,
        task_options=_table(entry.get("task_options", {}), where("task_options"), "task_options"),
        match=match,
        match_target=match_target,
        tolerance=float(entry.get("tolerance", 0.02)),
        flops_budget=flops_budget,
        name=str(entry.get("name", f"{task} #{index + 1}")),
        line=start + 1,
    )


def _claims(
    data: dict[str, Any], path: Path, lines: list[str], comparisons: list[Comparison]
) -> list[Claim]:
    claims: list[Claim] = []
    for name in data.get("claim_files", []):
        try:
            claims.extend(read_claims(claims_path(name, relative_to=path.parent)))
        except UsageError as error:
            message = str(error)
            if not message.startswith(str(path)) and "claims file" in message:
                message = f"{path}:{_line_of(lines, str(name))}: {message}"
            raise UsageError(message) from None
    for text in data.get("claims", []):
        claims.append(parse_claim(str(text), f"{path}:{_line_of(lines, str(text))}"))
    # A claim on a row the suite never runs could only fail later, after the training.
    labels: dict[str, set[str]] = {}
    for comparison in comparisons:
        labels.setdefault(comparison.task, set()).update(comparison.models)
    from gradbench.stats import parse_selector

    for claim in claims:
        if claim.task not in labels:
            raise UsageError(f"{claim.source}: the suite runs no comparison on {claim.task}")
        for side in (claim.a, claim.b):
            label, _filters = parse_selector(side)
            if label not in labels[claim.task]:
                raise UsageError(
                    f"{claim.source}: {side!r} is not a model of the suite's {claim.task} "
                    f"comparisons ({', '.join(sorted(labels[claim.task]))})"
                )
    check_metric_names(claims, _declared_metrics({c.task for c in comparisons}))
    return claims


def _declared_metrics(tasks: set[str]) -> dict[str, set[str]]:
    """Metric names of tasks that declare them on the class (known without loading data)."""
    from gradbench.registry import TASKS

    known = {}
    for task in tasks:
        factory = TASKS.entry(task).factory
        try:
            # A factory function names the class it returns; the class may declare metrics.
            returned = typing.get_type_hints(factory).get("return")
        except Exception:  # noqa: BLE001 (a plugin's unresolvable annotation: no check)
            returned = None
        metrics = getattr(factory, "metrics", None) or getattr(returned, "metrics", None)
        if isinstance(metrics, tuple) and all(hasattr(m, "name") for m in metrics):
            known[task] = {m.name for m in metrics}
    return known


# --- running -----------------------------------------------------------------------------


@dataclass
class Cell:
    comparison: Comparison
    item: Any  # runner.PreparedModel
    seed: int
    key: str


def cell_key(task: Any, plan: Any, item: Any, seed: int) -> str:
    """The cell's key as ``gradbench run`` computes it (``gradbench.cells``), so a suite
    and a plain run of the same configuration are one cell."""
    return cells.cell_key(plan, item, seed, task.dataset_id("train").as_dict())


@contextlib.contextmanager
def results_lock(store: ResultsStore) -> Iterator[None]:
    """One suite run per results directory at a time (``filelock``: not Linux only)."""
    from filelock import FileLock, Timeout

    store.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(store.root / ".suite.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise UsageError(
            f"another suite run is writing to {store.root}; wait for it or use --results"
        ) from None
    try:
        yield
    finally:
        lock.release()


def plan_comparisons(suite: Suite, data: Any) -> Iterator[tuple[Comparison, Any, Any, list]]:
    """(comparison, task, plan, prepared models) for every comparison; loads its data.

    Data are loaded one comparison at a time (all of ``full`` at once would not fit in
    memory): missing data for a later comparison stops the suite after the earlier ones
    ran, and the re-run resumes there.
    """
    from gradbench.models.build import parse_model_arg
    from gradbench.plan import PreparedPlan
    from gradbench.runner import prepare_models

    for comparison in suite.comparisons:
        # PreparedPlan.load is what `gradbench run` does: the task's training defaults,
        # --eval-limit set on the task, the training options checked against it.
        plan, task = PreparedPlan(
            task=comparison.task,
            task_options=comparison.task_options,
            models=[parse_model_arg(m) for m in comparison.models],
            seeds=comparison.seeds,
            train_options=comparison.train,
            shared_model_options={k: comparison.model_options.get(k) for k in SHARED_MODEL_OPTIONS},
            match=comparison.match,
            match_target=comparison.match_target,
            match_tolerance=comparison.tolerance,
            flops_budget=comparison.flops_budget,
            data=data,
        ).load()
        yield comparison, task, plan, prepare_models(plan, task)


def plan_cells(suite: Suite, data: Any) -> Iterator[tuple[Any, Any, Cell]]:
    """(task, plan, cell) for every cell, comparison by comparison (see plan_comparisons)."""
    for comparison, task, plan, prepared in plan_comparisons(suite, data):
        for item in prepared:
            for seed in comparison.seeds:
                yield (
                    task,
                    plan,
                    Cell(comparison, item, seed, cell_key(task, plan, item, seed)),
                )


def _run_with_executor(
    suite: Suite,
    store: ResultsStore,
    data: Any,
    execution: Any,
    force: bool,
    tasks_dir: Path | None,
    on_record: Callable[[RunRecord], None] | None,
) -> dict[str, int]:
    """Each comparison's cells through the executors; the driver stays the only writer."""
    from gradbench.executors import TaskSource, run_cells

    counts = {"ran": 0, "skipped": 0, "planned": 0}
    execution.resume = not force
    execution.record_fields = {"suite": suite.name}
    for comparison, task, plan, prepared in plan_comparisons(suite, data):
        keys = {cell_key(task, plan, item, seed) for item in prepared for seed in comparison.seeds}
        execution.source = TaskSource(comparison.task, comparison.task_options, data, tasks_dir)
        ran = len(run_cells(plan, task, prepared, store, execution, on_record=on_record))
        # run_cells skips the complete cells and raises unless every other cell ran.
        counts["ran"] += ran
        counts["skipped"] += len(keys) - ran
    return counts


def run_suite(
    suite: Suite,
    store: ResultsStore,
    data: Any,
    *,
    force: bool = False,
    dry_run: bool = False,
    on_cell: Callable[[Cell, str], None] | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
    execution: Any = None,
    tasks_dir: Path | None = None,
) -> dict[str, int]:
    """Run every missing cell (all with ``force``); counts of ran / skipped cells.

    ``on_cell(cell, status)`` is told "skip", "run" (before training) or "plan" (dry run).
    ``execution`` (a ``gradbench.executors.Execution``): run each comparison's cells with
    worker processes or on Ray, as ``gradbench run`` does; None: here, one at a time.
    """
    from gradbench.runner import run_one

    counts = {"ran": 0, "skipped": 0, "planned": 0}
    if execution is not None and not dry_run:
        with results_lock(store):
            return _run_with_executor(suite, store, data, execution, force, tasks_dir, on_record)
    with results_lock(store):
        done = set() if force else cells.complete_cells(store)
        for task, plan, cell in plan_cells(suite, data):
            if cell.key in done:
                counts["skipped"] += 1
                if on_cell:
                    on_cell(cell, "skip")
                continue
            if dry_run:
                counts["planned"] += 1
                if on_cell:
                    on_cell(cell, "plan")
                continue
            if on_cell:
                on_cell(cell, "run")
            record, series = run_one(plan.task, task, cell.item, cell.seed, plan)
            record["cell"] = cell.key
            record["suite"] = suite.name
            store.append(record, series)
            done.add(cell.key)
            counts["ran"] += 1
            if on_record:
                on_record(record)
    return counts
