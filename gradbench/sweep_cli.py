"""The `run` command's sweep options: the executor checked up front, and the progress line.

Everything here that can fail does so before any data is read or anything is written:
``--executor ray`` without Ray, an address nothing answers at, ``--jobs 0``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradbench.cli_options import err, plain

if TYPE_CHECKING:
    from gradbench.executors import Execution, SweepStatus

# make_execution's keywords: the `run` options that say where and how its cells run.
EXECUTION_OPTIONS = (
    "executor",
    "jobs",
    "address",
    "cpus_per_run",
    "gpus_per_run",
    "retries",
    "resume",
    "checkpoint_every",
)


def make_execution(
    *,
    executor: Any = "local",
    jobs: int | None = None,
    address: str | None = None,
    cpus_per_run: float | None = None,
    gpus_per_run: float | None = None,
    retries: int = 0,
    resume: bool = True,
    checkpoint_every: int | None = None,
) -> Execution:
    """A checked Execution; with Ray, Ray is importable and the address answers."""
    from gradbench.executors import Execution, check_reachable, import_ray

    execution = Execution(
        executor=plain(executor),
        jobs=jobs,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        retries=retries,
        resume=resume,
        checkpoint_every=checkpoint_every,
    )
    if execution.executor == "ray":
        import_ray(address)
        if address and address != "auto":
            check_reachable(address)
    return execution


def attach_source(
    execution: Execution, task: str, options: dict, data: Any, tasks_dir: Path | None
):
    """Tell worker processes how to load the task (its name, options and data)."""
    from gradbench.executors import TaskSource

    execution.source = TaskSource(task, options, data, tasks_dir)


def sweep_reporter(
    execution: Execution, progress_bar: Any, *, quiet: bool
) -> Callable[[SweepStatus], None]:
    """Progress of the whole sweep: a live row on a terminal, one line per cell in logs.

    In this process (the default) each run already prints its own lines, so only a
    resumed start, failures and retries get a sweep line there.
    """
    row = None

    def report(status: SweepStatus) -> None:
        nonlocal row
        if progress_bar is not None:
            if row is None:
                row = progress_bar.add_task("sweep", total=status.total)
            progress_bar.update(
                row,
                completed=status.done + status.skipped + status.failed,
                description=status.line(),
            )
            if status.kind in ("start", "retry", "failed"):
                progress_bar.console.print(status.line(), highlight=False, markup=False)
            return
        if quiet:
            return
        if not execution.in_process or status.kind in ("start", "retry", "failed"):
            err.print(status.line(), highlight=False, markup=False)

    return report
