"""Sweep speed-up on Ray, and what Ray and --jobs cost per cell, against in-process runs.

One sweep of 8 cells (2 models x 4 seeds of the adding problem, one thread each) runs
three ways in one process, side by side:

- in process, one cell after the other (gradbench's default);
- on a local Ray cluster of 2 CPUs, one CPU per cell: 2 cells at a time. The ratio
  in-process / Ray is the speed-up (goal >= 1.8x; 2x is the limit on 2 workers);
- on Ray with 1 cell at a time, and with --jobs 1 (one worker process): both run the
  cells one after the other like the in-process sweep, so the difference per cell is
  the executor's own overhead (shipping the cell, the result and the series back).

The Ray cluster's start is timed apart (it is paid once per sweep, not per cell).
Records go to a temporary directory.

    python bench/executor_speed.py [--steps 150] [--cells 8]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import torch

from gradbench.config import TrainConfig
from gradbench.data import data_config
from gradbench.executors import Execution, TaskSource, run_cells
from gradbench.models.build import parse_model_arg
from gradbench.plugins import load_plugins
from gradbench.records import ResultsStore
from gradbench.runner import Plan, load_task, prepare_models

MODELS = ("rnn", "lstm")


def sweep(plan, task, prepared, root: Path, execution: Execution) -> float:
    """Wall seconds of one sweep into a fresh results directory."""
    started = time.perf_counter()
    records = run_cells(plan, task, prepared, ResultsStore(root), execution)
    seconds = time.perf_counter() - started
    assert len(records) == len(prepared) * len(plan.seeds), "a cell did not finish"
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--cells", type=int, default=8, help="an even number: 2 models x N/2")
    parser.add_argument("--task", default="adding-50")
    args = parser.parse_args()
    try:
        import ray
    except ImportError:
        print("executor speed: skipped, Ray is not installed (pip install -e '.[dev]')")
        return
    torch.set_num_threads(1)
    load_plugins()
    data = data_config()
    task = load_task(args.task, data, {})
    seeds = list(range(args.cells // len(MODELS)))
    config = TrainConfig(steps=args.steps, batch_size=32, probes="off", device="cpu", threads=1)
    plan = Plan(args.task, [parse_model_arg(m) for m in MODELS], seeds, config)
    prepared = prepare_models(plan, task)
    source = TaskSource(args.task, {}, data)
    cells = len(prepared) * len(seeds)

    with tempfile.TemporaryDirectory(prefix="gradbench-bench-") as scratch:
        root = Path(scratch)
        started = time.perf_counter()
        logging.getLogger("ray").setLevel(logging.ERROR)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            object_store_memory=200 * 1024**2,
            _system_config={"worker_niceness": 0},  # as gradbench's own local cluster
        )
        cluster_start = time.perf_counter() - started
        ray_two = Execution(executor="ray", cpus_per_run=1, source=source)
        ray_one = Execution(executor="ray", cpus_per_run=1, jobs=1, source=source)
        jobs_one = Execution(jobs=1, cpus_per_run=1, source=source)
        # Warm every path once (Ray's worker processes, imports, the task in each worker).
        sweep(plan, task, prepared[:1], root / "warm-ray", ray_two)
        sweep(plan, task, prepared[:1], root / "warm-here", Execution())

        here = sweep(plan, task, prepared, root / "here", Execution())
        on_ray = sweep(plan, task, prepared, root / "ray2", ray_two)
        here_again = sweep(plan, task, prepared, root / "here2", Execution())
        ray_serial = sweep(plan, task, prepared, root / "ray1", ray_one)
        jobs_serial = sweep(plan, task, prepared, root / "jobs1", jobs_one)
        ray.shutdown()

    sequential = (here + here_again) / 2
    print(
        f"executor speed ({cells} cells: {', '.join(MODELS)} x {len(seeds)} seeds on "
        f"{args.task}, {args.steps} steps, 1 thread each; {os.cpu_count()} cores): "
        f"in-process {here:.1f} s and {here_again:.1f} s, Ray with 2 workers {on_ray:.1f} s: "
        f"speed-up {sequential / on_ray:.2f}x (goal >= 1.8x, limit 2x)"
    )
    print(
        f"per-cell overhead against in-process: Ray {(ray_serial - sequential) / cells:+.2f} s "
        f"({ray_serial:.1f} s for {cells} cells one at a time), --jobs 1 "
        f"{(jobs_serial - sequential) / cells:+.2f} s ({jobs_serial:.1f} s, including its "
        f"worker's start); Ray cluster start {cluster_start:.1f} s, once per sweep"
    )


if __name__ == "__main__":
    main()
