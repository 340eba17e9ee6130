"""Where the cells of a sweep run: here, in ``--jobs N`` worker processes, or as Ray tasks.

A sweep is its cells, one per (model configuration, seed) (``gradbench.cells``). The
driver, the process that runs ``gradbench run``, is the only writer of the results
directory: workers get a cell's description, load the task themselves, train, and send
back the record and its series, which the driver appends. Nothing on a worker writes
records or series, so Ray workers need no shared file system (a worker writes only its
own checkpoint, with ``--checkpoint-every``).

A cell that raises, runs out of memory, or loses its worker is logged to
``<results>/failures.jsonl`` with the reason and retried up to ``retries`` times; the
sweep goes on, and ends with an error naming how many cells never finished. Problems
with the user's input (``GradbenchError``) are not retried: they stop the sweep.
"""

from __future__ import annotations

import concurrent.futures as futures
import datetime as dt
import json
import multiprocessing
import os
import socket
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradbench import cells
from gradbench.checkpoint import Checkpointer, checkpoint_dir
from gradbench.checkpoint import read as read_checkpoint
from gradbench.config import EXECUTORS
from gradbench.errors import GradbenchError, UsageError
from gradbench.plan import apply_eval_limit
from gradbench.records import ResultsStore, RunRecord, finite_or_none
from gradbench.runner import Plan, PreparedModel, load_task, run_one
from gradbench.task import DataConfig, Task

FAILURES_FILE = "failures.jsonl"


class SweepFailed(GradbenchError):
    """Some cells failed every attempt; the others' records are written."""


@dataclass(frozen=True)
class TaskSource:
    """How a worker process loads the task itself (the driver's task object stays here)."""

    name: str
    options: dict[str, Any]
    data: DataConfig
    tasks_dir: Path | None = None


@dataclass
class Execution:
    """How a sweep is carried out; none of it changes what a cell computes."""

    executor: str = "local"
    # Cells at once. "local": that many worker processes (None: in this process, one at a
    # time, as before executors existed); "ray": a cap on tasks in flight (None: no cap).
    jobs: int | None = None
    address: str | None = None  # Ray cluster ("auto", "host:port", "ray://host:port")
    cpus_per_run: float | None = None  # also the torch threads of each worker
    gpus_per_run: float | None = None
    retries: int = 0
    resume: bool = False  # skip cells that already have a complete record
    checkpoint_every: int | None = None
    source: TaskSource | None = None  # needed by worker processes and Ray
    # Stamped on every record before it is written (a suite's name).
    record_fields: dict[str, Any] = field(default_factory=dict)
    on_sweep: Callable[[SweepStatus], None] | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor {self.executor!r} is not one of {', '.join(EXECUTORS)}")
        if self.jobs is not None and self.jobs < 1:
            raise UsageError(f"--jobs must be >= 1, got {self.jobs}")
        if self.retries < 0:
            raise UsageError(f"--retries must be >= 0, got {self.retries}")
        if self.cpus_per_run is not None and not self.cpus_per_run > 0:
            raise UsageError(f"--cpus-per-run must be > 0, got {self.cpus_per_run}")
        if self.gpus_per_run is not None and self.gpus_per_run < 0:
            raise UsageError(f"--gpus-per-run must be >= 0, got {self.gpus_per_run}")
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise UsageError(f"--checkpoint-every must be >= 1, got {self.checkpoint_every}")
        if self.executor != "ray":
            for name in ("address", "gpus_per_run"):
                if getattr(self, name) is not None:
                    flag = "--" + name.replace("_", "-")
                    raise UsageError(f"{flag} needs --executor ray")

    @property
    def in_process(self) -> bool:
        return self.executor == "local" and self.jobs is None

    def threads(self) -> int:
        """torch threads of one worker: --cpus-per-run, else the cores shared out."""
        if self.cpus_per_run is not None:
            return max(1, int(self.cpus_per_run))
        return max(1, (os.cpu_count() or 1) // (self.jobs or 1))


@dataclass
class SweepStatus:
    """Where a sweep stands, for the progress line."""

    total: int
    skipped: int = 0
    done: int = 0
    failed: int = 0  # cells that failed every attempt
    retrying: int = 0  # failed attempts that will be retried
    running: int = 0
    started: float = field(default_factory=time.perf_counter)
    kind: str = ""  # what just happened: "start", "done", "retry" or "failed"
    event: str = ""  # in words, e.g. "resnet-20 seed 1 done"

    @property
    def remaining(self) -> int:
        return self.total - self.skipped - self.done - self.failed

    def eta_seconds(self) -> float | None:
        if not self.done:
            return None
        return (time.perf_counter() - self.started) / self.done * self.remaining

    def line(self) -> str:
        eta = self.eta_seconds()
        shown = "?" if eta is None else _duration(eta)
        skipped = f" ({self.skipped} skipped)" if self.skipped else ""
        text = (
            f"sweep {self.done + self.skipped}/{self.total} done{skipped}, "
            f"{self.running} running, {self.failed} failed, ETA {shown}"
        )
        return f"{text}: {self.event}" if self.event else text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass
class Cell:
    key: str
    item: PreparedModel
    seed: int
    attempt: int = 1
    order: int = 0  # position in the plan, for returning records in plan order

    @property
    def label(self) -> str:
        return f"{self.item.spec.label} seed {self.seed}"


@dataclass(frozen=True)
class Job:
    """What a worker needs for one cell; small and picklable."""

    plan: Plan
    item: PreparedModel
    seed: int
    key: str
    source: TaskSource
    threads: int
    checkpoint: str | None
    checkpoint_every: int | None


# An outcome: ("ok", record, series), ("failed", reason, details) or ("fatal", error, None).
Outcome = tuple[str, Any, Any]


def attempt(run: Callable[[], tuple[RunRecord, dict]]) -> Outcome:
    """Run a cell, turning what it raises into an outcome the driver can act on."""
    try:
        record, series = run()
    except GradbenchError as error:  # the user's input, not this cell's luck: no retry
        return ("fatal", error, None)
    except Exception as error:  # any crash of one cell is that cell's failure
        reason = f"{type(error).__name__}: {error}".strip()
        return ("failed", reason, traceback.format_exc(limit=8))
    return ("ok", record, {k: _numpy(v) for k, v in series.items()})


def _numpy(value: Any) -> Any:
    import numpy as np

    return np.asarray(value)


_TASKS: dict[str, Task] = {}


def run_job(job: Job) -> Outcome:
    """A worker's whole part in one cell (in a --jobs process or a Ray task)."""
    import torch

    from gradbench.plugins import load_plugins

    def run() -> tuple[RunRecord, dict]:
        torch.set_num_threads(job.threads)
        load_plugins(job.source.tasks_dir)
        cache = json.dumps([job.source.name, job.source.options], sort_keys=True, default=str)
        if cache not in _TASKS:  # a worker serves many cells: load the data once
            _TASKS[cache] = load_task(job.source.name, job.source.data, job.source.options)
        apply_eval_limit(_TASKS[cache], job.plan.train.eval_limit)
        checkpoint = (
            Checkpointer(job.checkpoint, job.checkpoint_every, cell=job.key)
            if job.checkpoint and job.checkpoint_every
            else None
        )
        return run_one(
            job.plan.task, _TASKS[cache], job.item, job.seed, job.plan, checkpoint=checkpoint
        )

    return attempt(run)


# --- executors ------------------------------------------------------------------------


class InProcess:
    """Today's behaviour: one cell at a time in the driver, with per-step progress."""

    slots = 1

    def __init__(self, plan: Plan, task: Task, execution: Execution, store: ResultsStore, on_start):
        self.plan, self.task, self.execution, self.store = plan, task, execution, store
        self.on_start = on_start
        self.queued: deque[Cell] = deque()

    def submit(self, cell: Cell) -> None:
        self.queued.append(cell)

    def wait(self) -> list[tuple[Cell, Outcome]]:
        cell = self.queued.popleft()
        progress = self.on_start(cell.item, cell.seed) if self.on_start else None
        checkpoint = _checkpointer(self.execution, self.store, cell)
        outcome = attempt(
            lambda: run_one(
                self.plan.task,
                self.task,
                cell.item,
                cell.seed,
                self.plan,
                on_progress=progress,
                checkpoint=checkpoint,
            )
        )
        return [(cell, outcome)]

    def close(self, wait: bool = True) -> None:
        pass


class WorkerPool:
    """``--jobs N``: N spawned worker processes on this machine (spawn: torch and fork mix
    badly). A worker that dies (killed, out of memory) breaks the pool: every cell in
    flight is failed with that reason and retried on a fresh pool."""

    def __init__(self, execution: Execution, make_job: Callable[[Cell], Job]):
        self.execution = execution
        self.make_job = make_job
        self.slots = execution.jobs
        self.pool = self._new_pool()
        self.running: dict[futures.Future, Cell] = {}

    def _new_pool(self) -> futures.ProcessPoolExecutor:
        return futures.ProcessPoolExecutor(
            max_workers=self.execution.jobs, mp_context=multiprocessing.get_context("spawn")
        )

    def submit(self, cell: Cell) -> None:
        self.running[self.pool.submit(run_job, self.make_job(cell))] = cell

    def wait(self) -> list[tuple[Cell, Outcome]]:
        finished, _ = futures.wait(self.running, return_when=futures.FIRST_COMPLETED)
        results, broken = [], False
        for future in finished:
            cell = self.running.pop(future)
            error = future.exception()
            if error is None:
                results.append((cell, future.result()))
            else:
                broken = broken or isinstance(error, futures.process.BrokenProcessPool)
                results.append((cell, ("failed", f"worker process died: {error}", "")))
        if broken:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()
        return results

    def close(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=True)


class RayTasks:
    """Each cell a Ray task on an existing cluster (``--address``) or a local one."""

    def __init__(self, execution: Execution, make_job: Callable[[Cell], Job]):
        ray = import_ray(execution.address)
        self.ray = ray
        self.make_job = make_job
        self.started_here = False
        if not ray.is_initialized():
            connect(ray, execution)
            self.started_here = True
        cpus = execution.cpus_per_run or 1
        self.remote = ray.remote(run_job).options(
            num_cpus=cpus, num_gpus=execution.gpus_per_run or 0, max_retries=0
        )
        capacity = int(ray.cluster_resources().get("CPU", 1) // cpus) or 1
        # --jobs caps the cells in flight; by default, as many as the cluster's CPUs hold.
        self.slots = min(capacity, execution.jobs) if execution.jobs else capacity
        self.running: dict[Any, Cell] = {}

    def submit(self, cell: Cell) -> None:
        self.running[self.remote.remote(self.make_job(cell))] = cell

    def wait(self) -> list[tuple[Cell, Outcome]]:
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        results = []
        for ref in ready:
            cell = self.running.pop(ref)
            try:
                results.append((cell, self.ray.get(ref)))
            except self.ray.exceptions.RayError as error:  # a lost worker or node, OOM kill
                reason = " ".join(str(error).split())[:300]
                results.append((cell, ("failed", f"{type(error).__name__}: {reason}", "")))
        return results

    def close(self, wait: bool = True) -> None:
        for ref in self.running:
            self.ray.cancel(ref, force=True)
        if self.started_here:
            self.ray.shutdown()


def import_ray(address: str | None = None) -> Any:
    """Ray, ready to join the cluster at ``address`` (Ray reads its auth mode on import)."""
    if address:
        use_cluster_token()
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--executor ray needs Ray, which is not installed: pip install 'gradbench[ray]'"
        ) from None
    return ray


def connect(ray: Any, execution: Execution) -> None:
    """Join the cluster at --address, or start a local one; one clear line if neither works."""
    import logging

    address = execution.address
    if address and address != "auto":
        check_reachable(address)
    options: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "log_to_driver": False,
    }
    if address:
        # The nodes run this driver's gradbench, shipped with each job, whatever version
        # (if any) they have installed; torch and the other dependencies must be there.
        options["runtime_env"] = {"py_modules": shipped_modules()}
    else:
        # A local cluster for this sweep; the object store holds only small results.
        options |= {
            "num_cpus": os.cpu_count(),
            "object_store_memory": 200 * 1024**2,
            # Ray starts workers at nice 15, so any other process on the machine would
            # slow the cells (and their measured train_seconds); cells are the work.
            "_system_config": {"worker_niceness": 0},
        }
    # Ray warns on every start that token authentication is on; it is, and stays on.
    logging.getLogger("ray").setLevel(logging.ERROR)
    try:
        ray.init(address=address, **options)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as error:
        where = f"at --address {address}" if address else "locally"
        message = " ".join(str(error).split())[:200]
        hint = (
            " (a cluster with token authentication needs its token in RAY_AUTH_TOKEN or"
            " ~/.ray/auth_token)"
            if address
            else ""
        )
        raise UsageError(f"cannot start or join a Ray cluster {where}: {message}{hint}") from None


# Where Ray looks for a cluster's authentication token (ray-security/token-auth).
TOKEN_SOURCES = ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def use_cluster_token() -> None:
    """Present the cluster's token when there is one to present.

    `ray start` (Ray >= 2.5x) starts clusters with token authentication, but `ray.init`
    joining one resolves RAY_AUTH_MODE to "disabled" and never sends the token it could
    find, so every RPC is refused (tested against `ray start --head`). With a token in
    RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, token mode is turned on;
    a cluster without authentication accepts such a client too. A RAY_AUTH_MODE the
    user set is left alone.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    if (
        any(os.environ.get(name) for name in TOKEN_SOURCES)
        or (Path.home() / ".ray" / "auth_token").is_file()
    ):
        os.environ["RAY_AUTH_MODE"] = "token"


def shipped_modules() -> list[str]:
    """gradbench's packages as Ray py_modules (directories; a zipped install ships none)."""
    import gradbench_tasks

    import gradbench

    return [
        str(Path(module.__file__).parent)
        for module in (gradbench, gradbench_tasks)
        if Path(module.__file__).parent.is_dir()
    ]


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at (Ray itself waits far longer)."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"--address {address!r} must be host:port, ray://host:port or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except OSError as error:
        raise UsageError(
            f"--address {address}: no Ray cluster answers there ({error.strerror or error})"
        ) from None


def _checkpoint_path(store: ResultsStore, cell: Cell) -> Path:
    return checkpoint_dir(store.root) / f"{cell.key}.pt"


def _checkpointer(execution: Execution, store: ResultsStore, cell: Cell) -> Checkpointer | None:
    if not execution.checkpoint_every:
        return None
    return Checkpointer(_checkpoint_path(store, cell), execution.checkpoint_every, cell=cell.key)


# --- the driver -----------------------------------------------------------------------


def plan_cells(
    plan: Plan, task: Task, prepared: list[PreparedModel], store: ResultsStore, execution: Execution
) -> tuple[list[Cell], int]:
    """(cells to run, cells skipped because a complete record exists)."""
    dataset = task.dataset_id("train").as_dict()
    every = [
        Cell(cells.cell_key(plan, item, seed, dataset), item, seed)
        for item in prepared
        for seed in plan.seeds
    ]
    for order, cell in enumerate(every):
        cell.order = order
    done = cells.complete_cells(store) if execution.resume else set()
    first: dict[str, Cell] = {}
    for cell in every:  # a model given twice is one cell, run once
        first.setdefault(cell.key, cell)
    unique = list(first.values())
    todo = [cell for cell in unique if cell.key not in done]
    return todo, len(unique) - len(todo)


def check_checkpoints(todo: list[Cell], store: ResultsStore, execution: Execution) -> None:
    """A damaged checkpoint stops the sweep before anything runs (nothing is written)."""
    if not execution.resume or not execution.checkpoint_every:
        return  # not resuming from checkpoints: every run starts over
    for cell in todo:
        path = _checkpoint_path(store, cell)
        if path.exists():
            read_checkpoint(path, cell=cell.key)


def log_failure(store: ResultsStore, cell: Cell, reason: str, details: str, final: bool) -> None:
    entry = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cell": cell.key,
        "model_label": cell.item.spec.label,
        "seed": cell.seed,
        "attempt": cell.attempt,
        "final": final,
        "reason": reason,
        "details": details,
    }
    store.append_line(store.root / FAILURES_FILE, json.dumps(finite_or_none(entry)))


def run_cells(
    plan: Plan,
    task: Task,
    prepared: list[PreparedModel],
    store: ResultsStore,
    execution: Execution,
    *,
    on_start: Callable | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """Run every cell still to run, appending each record as it arrives; records in plan order."""
    todo, skipped = plan_cells(plan, task, prepared, store, execution)
    status = SweepStatus(total=len(todo) + skipped, skipped=skipped)

    def tell(kind: str, event: str) -> None:
        status.kind, status.event = kind, event
        if execution.on_sweep:
            execution.on_sweep(status)

    if skipped:
        tell("start", resume_note(skipped, status.total))
    if not todo:
        return []
    check_checkpoints(todo, store, execution)
    if not execution.resume or not execution.checkpoint_every:
        for cell in todo:  # a forced or checkpoint-less run starts every cell afresh
            _checkpoint_path(store, cell).unlink(missing_ok=True)

    def make_job(cell: Cell) -> Job:
        if execution.source is None:
            raise UsageError("worker processes need the task's name and data (a TaskSource)")
        checkpoint = _checkpointer(execution, store, cell)
        return Job(
            plan,
            cell.item,
            cell.seed,
            cell.key,
            execution.source,
            execution.threads(),
            str(checkpoint.path) if checkpoint else None,
            execution.checkpoint_every,
        )

    if execution.in_process:
        executor: Any = InProcess(plan, task, execution, store, on_start)
    elif execution.executor == "local":
        executor = WorkerPool(execution, make_job)
    else:
        executor = RayTasks(execution, make_job)

    queue = deque(todo)
    records: list[tuple[int, RunRecord]] = []
    failed: list[Cell] = []
    try:
        while queue or status.running:
            while queue and status.running < executor.slots:
                executor.submit(queue.popleft())
                status.running += 1
            for cell, (kind, first, second) in executor.wait():
                status.running -= 1
                if kind == "fatal":
                    raise first
                if kind == "failed":
                    final = cell.attempt > execution.retries
                    log_failure(store, cell, first, second, final)
                    if final:
                        status.failed += 1
                        failed.append(cell)
                        tell("failed", f"{cell.label} FAILED ({first})")
                    else:
                        queue.append(
                            Cell(cell.key, cell.item, cell.seed, cell.attempt + 1, cell.order)
                        )
                        tell("retry", f"{cell.label} failed ({first}); retry {cell.attempt}")
                    continue
                record, series = first, second
                record["cell"] = cell.key
                record.update(execution.record_fields)
                store.append(record, series)
                _checkpoint_path(store, cell).unlink(missing_ok=True)
                records.append((cell.order, record))
                status.done += 1
                tell("done", f"{cell.label} done")
                if on_record:
                    on_record(record)
    except BaseException:
        executor.close(wait=False)  # Ctrl-C or a fatal cell: do not wait for the others
        raise
    executor.close(wait=True)
    if failed:
        names = ", ".join(cell.label for cell in failed[:3]) + (" ..." if len(failed) > 3 else "")
        raise SweepFailed(
            f"{len(failed)} of {status.total} cells failed after {execution.retries + 1} "
            f"attempt(s) ({names}); reasons in {store.root / FAILURES_FILE}"
        )
    return [record for _, record in sorted(records, key=lambda pair: pair[0])]


def resume_note(skipped: int, total: int) -> str:
    if skipped == total:
        return f"all {total} cells already have a complete record (--force re-runs them)"
    return f"resuming: {skipped} of {total} cells already have a complete record"
