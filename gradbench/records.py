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

import fcntl
import functools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any, TypedDict

import numpy as np

SCHEMA_VERSION = 1
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
    train_seconds: float  # training only; evaluation excluded
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
    verdict: str | None  # healthy / vanishing / exploding / diverged
    series_file: str | None  # relative to the results directory
    environment: dict[str, Any]


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
    }


class ResultsStore:
    def __init__(self, root: str | Path | None = None):
        self.root = results_dir(root)
        self.runs_file = self.root / "runs.jsonl"
        self.series_dir = self.root / "series"

    def append(self, record: RunRecord, series: dict[str, np.ndarray] | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if series:
            self.series_dir.mkdir(exist_ok=True)
            name = f"{record['run_id']}.npz"
            fd, tmp = tempfile.mkstemp(dir=self.series_dir, prefix=".part-", suffix=".npz")
            with os.fdopen(fd, "wb") as handle:
                np.savez_compressed(handle, **{k: np.asarray(v) for k, v in series.items()})
            os.replace(tmp, self.series_dir / name)
            record["series_file"] = f"series/{name}"
        else:
            record["series_file"] = None
        line = json.dumps(finite_or_none(dict(record)), sort_keys=True, allow_nan=False)
        data = (line + "\n").encode()
        fd = os.open(self.runs_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # A torn last line (a crash in a past write) must not swallow this record.
            if os.fstat(fd).st_size > 0:
                with open(self.runs_file, "rb") as reader:
                    reader.seek(-1, os.SEEK_END)
                    if reader.read(1) != b"\n":
                        data = b"\n" + data
            os.write(fd, data)
            os.fsync(fd)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self) -> list[RunRecord]:
        if not self.runs_file.exists():
            return []
        records: list[RunRecord] = []
        # errors="replace": a torn multi-byte tail must be skipped, not crash the reader.
        with open(self.runs_file, encoding="utf-8", errors="replace") as handle:
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
                records.append(record)
        return records

    def find(self, run_id: str) -> RunRecord | None:
        matches = [r for r in self.load() if r["run_id"].startswith(run_id)]
        return matches[-1] if len(matches) == 1 else None

    def series(self, record: RunRecord) -> dict[str, np.ndarray]:
        if not record.get("series_file"):
            return {}
        with np.load(self.root / record["series_file"], allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
