"""The run record (one schema, versioned) and the results store.

Records are appended to ``<results>/runs.jsonl``, one JSON object a line. Each line is
written with a single ``os.write`` on a file opened with O_APPEND, under an exclusive
lock, then fsync'd: a crash mid-write can at worst leave an unterminated last line,
which ``load`` skips with a warning, and the next append starts on a fresh line.
Long series (per-step losses, per-layer gradient norms, ...) go to
``<results>/series/<run_id>.npz`` (numpy, no pickle), written atomically before the
record that references them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from filelock import FileLock

# 2: total-FLOPs budget in ``budget`` (no placeholder steps), start/end verdicts and
# their evidence, probe seconds apart from training seconds, the FLOPs' batch basis,
# per-layer ratios on RMS gradients, ∂L/∂h_t aligned per sequence.
SCHEMA_VERSION = 2
RESULTS_ENV = "GRADBENCH_RESULTS"


class Budget(TypedDict, total=False):
    kind: str  # "steps", "epochs", "seconds" or "target" (the stopping budget)
    target: float | str | None  # the budget asked for
    achieved: float  # what was spent in that unit
    rel_error: float | None
    # Model sizing (issue "Matched budgets"): "params", "flops" or None.
    match: str | None
    match_target: float | None
    match_achieved: float | None
    match_rel_error: float | None
    match_tolerance: float | None
    match_width_multiplier: float | None  # the fine knob, when the solver turned it
    # Equal total training FLOPs (--flops-budget): the total asked for, or None. Part of
    # the leaderboard's configuration key, so two totals never share a row.
    flops_budget: float | None


class RunRecord(TypedDict, total=False):
    schema_version: int
    run_id: str
    created: str  # ISO 8601 UTC
    task: str  # registered task name as given (e.g. "image", "adding-100")
    task_options: dict[str, Any]
    dataset: dict[str, Any]  # DatasetId of the training split, plus eval splits
    model: str  # registered model name as given (e.g. "resnet-20")
    model_label: str  # name plus per-model options, the leaderboard row key
    model_options: dict[str, Any]  # every option the model was built with
    train_options: dict[str, Any]  # TrainConfig as a dict
    seed: int
    init_seed: int
    data_seed: int
    budget: Budget
    parameters: int
    trainable_parameters: int
    flops_per_step: float | None  # forward + backward of one training batch
    flops_per_sample: float | None
    steps: int
    epochs: float
    train_seconds: float  # training only; evaluation and probes excluded
    eval_seconds: float
    stop_reason: str
    metrics: dict[str, float | None]
    metric_directions: dict[str, bool]  # name -> higher is better
    primary_metric: str
    final_train_loss: float | None
    diverged: bool
    diverged_step: int | None
    divergence: str | None  # "loss" or "gradient"
    target: dict[str, Any] | None  # time-to-target: metric, value, reached, step, seconds
    clip_hit_rate: float | None
    baselines: dict[str, float]  # trivial baselines of synthetic tasks
    probes: dict[str, Any]  # gradient-flow summaries (see gradbench.probes)
    verdict: str | None  # overall: healthy / vanishing / exploding / diverged (docs/probes.md)
    verdict_start: str | None  # the first 20% of the steps run
    verdict_end: str | None  # the last 20%
    # The rule that decided, and each window's verdict, rule, steps and figures.
    verdict_evidence: dict[str, Any]
    probe_seconds: float  # time in the probes, excluded from train_seconds
    # How FLOPs per step were counted: "fake" batch (fixed shapes) or the mean over
    # "count" real training batches, with their mean length (variable-length tasks).
    flops_basis: dict[str, Any] | None
    series_file: str | None  # relative to the results directory
    environment: dict[str, Any]
    fast: dict[str, Any] | None  # what --fast did (channels-last, compiled, compile seconds)
    # The cell's key (gradbench.cells for `run`, gradbench.suite.cell_key for `suite`),
    # so a re-run skips it; and the suite's name (`suite` only).
    cell: str | None
    suite: str | None


# What ``new_run_id`` generates: checked on every id read from disk before it becomes
# part of a path, so a crafted record ("../../x") cannot name a file outside its folder.
RUN_ID = re.compile(r"[0-9a-f]{12}")
# A series file is written as series/<run_id>.npz; nothing else is read.
SERIES_FILE = re.compile(r"series/([0-9a-f]{12})\.npz")
# A name ``append`` may write a series under (ids from tests and older tools included).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_STR, _INT, _NUM, _BOOL, _DICT = (str,), (int,), (int, float), (bool,), (dict,)
# Read-side schema: field -> (accepted types, may be null). Every record the runner
# writes has the required fields; the optional ones are checked when present.
REQUIRED_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema_version": (_INT, False),
    "run_id": (_STR, False),
    "created": (_STR, False),
    "task": (_STR, False),
    "dataset": (_DICT, False),
    "model": (_STR, False),
    "model_label": (_STR, False),
    "model_options": (_DICT, False),
    "train_options": (_DICT, False),
    "seed": (_INT, False),
    "budget": (_DICT, False),
    "parameters": (_INT, False),
    "steps": (_INT, False),
    "train_seconds": (_NUM, False),
    "metrics": (_DICT, False),
    "metric_directions": (_DICT, False),
    "primary_metric": (_STR, False),
    "diverged": (_BOOL, False),
}
OPTIONAL_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "task_options": (_DICT, True),
    "init_seed": (_INT, True),
    "data_seed": (_INT, True),
    "trainable_parameters": (_INT, True),
    "flops_per_step": (_NUM, True),
    "flops_per_sample": (_NUM, True),
    "epochs": (_NUM, True),
    "eval_seconds": (_NUM, True),
    "stop_reason": (_STR, True),
    "final_train_loss": (_NUM, True),
    "diverged_step": (_INT, True),
    "divergence": (_STR, True),
    "target": (_DICT, True),
    "clip_hit_rate": (_NUM, True),
    "baselines": (_DICT, True),
    "probes": (_DICT, True),
    "verdict": (_STR, True),
    "series_file": (_STR, True),
    "environment": (_DICT, True),
    "cell": (_STR, True),  # gradbench.suite
    "suite": (_STR, True),
}
DATASET_FIELDS = ("name", "split", "version", "source")


def _type_problem(name: str, value: Any, kinds: tuple[type, ...], nullable: bool) -> str | None:
    if value is None:
        return None if nullable else f"{name} is null"
    # bool is an int to Python; a record's "steps": true is still wrong.
    if isinstance(value, bool) and bool not in kinds:
        return f"{name} is not {kinds[0].__name__}"
    if not isinstance(value, kinds):
        return f"{name} is {type(value).__name__}, not {kinds[0].__name__}"
    return None


def record_problem(record: dict[str, Any]) -> str | None:
    """Why ``record`` (read from disk) cannot be used, or None: the schema, field by field."""
    for name, (kinds, nullable) in REQUIRED_FIELDS.items():
        if name not in record:
            return f"missing field {name!r}"
        problem = _type_problem(name, record[name], kinds, nullable)
        if problem:
            return problem
    for name, (kinds, nullable) in OPTIONAL_FIELDS.items():
        if name in record:
            problem = _type_problem(name, record[name], kinds, nullable)
            if problem:
                return problem
    if not RUN_ID.fullmatch(record["run_id"]):
        return f"run_id {record['run_id'][:40]!r} is not a generated id (12 hex digits)"
    series_file = record.get("series_file")
    if series_file is not None:
        found = SERIES_FILE.fullmatch(series_file)
        if not found or found.group(1) != record["run_id"]:
            return f"series_file {series_file[:60]!r} is not series/<run_id>.npz"
    dataset = record["dataset"]
    if not all(isinstance(dataset.get(k), str) for k in DATASET_FIELDS):
        return f"dataset lacks one of {', '.join(DATASET_FIELDS)}"
    if not isinstance(record["budget"].get("kind"), str):
        return "budget has no kind"
    metrics, directions = record["metrics"], record["metric_directions"]
    if any(v is not None and _type_problem("m", v, _NUM, True) for v in metrics.values()):
        return "a metric is not a number"
    if not all(isinstance(v, bool) for v in directions.values()):
        return "metric_directions holds a value that is not true or false"
    if record["primary_metric"] not in directions:
        return f"primary_metric {record['primary_metric']!r} is not in metric_directions"
    return None


def results_dir(path: str | Path | None = None) -> Path:
    return Path(path or os.environ.get(RESULTS_ENV) or "results")


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or Inf: store them as null so every reader can parse a record."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return finite_or_none(value.tolist())
    return value


@functools.cache
def git_revision() -> str | None:
    """HEAD of the checkout gradbench runs from (``-dirty`` if edited); None outside git.

    Cached: one process is one checkout state, and two git calls per run add up.
    """
    where = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=where
        )
        if out.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=where,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def environment(device: str, threads: int) -> dict[str, Any]:
    import torch
    import torchvision

    from gradbench import __version__
    from gradbench.device import accelerator_environment

    return {
        "gradbench": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "device": device,
        "device_name": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "threads": threads,
        "git_revision": git_revision(),
        # CUDA and cuDNN versions and settings, and whether algorithms were deterministic.
        **accelerator_environment(),
    }


class ResultsStore:
    def __init__(self, root: str | Path | None = None):
        self.root = results_dir(root)
        self.runs_file = self.root / "runs.jsonl"
        self.series_dir = self.root / "series"

    def append(self, record: RunRecord, series: dict[str, np.ndarray] | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if series:
            if not SAFE_NAME.fullmatch(str(record["run_id"])):
                raise ValueError(f"run_id {record['run_id']!r} cannot name a file")
            self.series_dir.mkdir(exist_ok=True)
            self.remove_stale_parts()
            name = f"{record['run_id']}.npz"
            # The writer's pid in the name: a later start removes only the partial files
            # of processes that are gone, never a concurrent writer's.
            fd, tmp = tempfile.mkstemp(
                dir=self.series_dir, prefix=f".part-{os.getpid()}-", suffix=".npz"
            )
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.savez_compressed(handle, **{k: np.asarray(v) for k, v in series.items()})
                    handle.flush()
                    os.fsync(handle.fileno())
                os.chmod(tmp, 0o644)  # as runs.jsonl; mkstemp makes files private
                os.replace(tmp, self.series_dir / name)
            except BaseException:
                # Interrupted (Ctrl-C included) or failed: leave no .part-* file behind.
                Path(tmp).unlink(missing_ok=True)
                raise
            record["series_file"] = f"series/{name}"
        else:
            record["series_file"] = None
        line = json.dumps(finite_or_none(dict(record)), sort_keys=True, allow_nan=False)
        self.append_line(self.runs_file, line)

    def lock(self) -> FileLock:
        """The store's exclusive lock, shared by every process that writes to it.

        A lock file beside runs.jsonl, through ``filelock`` (fcntl on POSIX, msvcrt on
        Windows), so the store is safe to share beyond Linux.
        """
        return FileLock(self.root / ".runs.lock")

    def append_line(self, path: Path, line: str) -> None:
        """Append ``line`` to ``path`` under the store's lock: one write, then fsync."""
        self.root.mkdir(parents=True, exist_ok=True)
        data = (line + "\n").encode()
        with self.lock():
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_BINARY", 0)
            fd = os.open(path, flags, 0o644)
            try:
                # A torn last line (a crash in a past write) must not swallow this one.
                if os.fstat(fd).st_size > 0:
                    with open(path, "rb") as reader:
                        reader.seek(-1, os.SEEK_END)
                        if reader.read(1) != b"\n":
                            data = b"\n" + data
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def remove_stale_parts(self) -> None:
        """Delete series/.part-* files left by writers that are no longer running."""
        if not self.series_dir.is_dir():
            return
        for part in self.series_dir.glob(".part-*"):
            pid_text = part.name.split("-")[1] if part.name.count("-") >= 2 else ""
            if pid_text.isdigit() and _process_alive(int(pid_text)):
                continue
            part.unlink(missing_ok=True)

    def load(self) -> list[RunRecord]:
        """Valid records in file order; each bad line is skipped with one warning."""
        from gradbench.errors import GradbenchError

        if not self.runs_file.exists():
            return []
        if not self.runs_file.is_file():
            raise GradbenchError(f"{self.runs_file} is not a file")
        records: list[RunRecord] = []
        # errors="replace": a torn multi-byte tail must be skipped, not crash the reader.
        try:
            handle = open(self.runs_file, encoding="utf-8", errors="replace")
        except OSError as error:
            raise GradbenchError(f"cannot read {self.runs_file}: {error.strerror}") from None
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                if not isinstance(record, dict):
                    warnings.warn(
                        f"{self.runs_file}:{number}: skipping a torn or corrupt record",
                        stacklevel=2,
                    )
                    continue
                if record.get("schema_version") != SCHEMA_VERSION:
                    warnings.warn(
                        f"{self.runs_file}:{number}: schema version "
                        f"{record.get('schema_version')} is not {SCHEMA_VERSION}; skipped",
                        stacklevel=2,
                    )
                    continue
                problem = record_problem(record)
                if problem:
                    warnings.warn(
                        f"{self.runs_file}:{number}: skipping a record that does not match "
                        f"the schema ({problem})",
                        stacklevel=2,
                    )
                    continue
                records.append(record)
        return records

    def find(self, run_id: str) -> RunRecord | None:
        matches = [r for r in self.load() if r["run_id"].startswith(run_id)]
        return matches[-1] if len(matches) == 1 else None

    def series_path(self, record: RunRecord) -> Path | None:
        """Where ``record``'s series is, checked to lie inside ``series/``; None if it has none."""
        name = record.get("series_file")
        if not name:
            return None
        path = (self.root / name).resolve()
        if path.parent != self.series_dir.resolve() or path.suffix != ".npz":
            raise ValueError(f"series file {name!r} is outside {self.series_dir}")
        return path

    def series(self, record: RunRecord) -> dict[str, np.ndarray]:
        path = self.series_path(record)
        if path is None:
            return {}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
