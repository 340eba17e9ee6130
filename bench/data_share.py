"""Share of wall time spent preparing data, on a second run of each task (caches warm).

A run's wall time is: loading the task (reading, decoding, tokenising, or the cache
of a previous run), training (within it, the time spent drawing batches from the task)
and evaluation. This runs each task twice with a small model, as a user's second
`gradbench run` would, and reports for the second: task load seconds, seconds inside
``task.batches`` during training, and their share of the whole. Goal: <= 5%.

    python bench/data_share.py [--steps 100] [--tasks image,text,...]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator

import torch

from gradbench.config import TrainConfig
from gradbench.data import data_config
from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.plugins import load_plugins
from gradbench.probes import make_probes
from gradbench.runner import load_task
from gradbench.task import Batch
from gradbench.train import train

# Task -> (model, options, train options): small models, so a step costs what a
# benchmark's smallest comparison does, which is where data would weigh most.
TASKS = {
    "image": ("plain-8", {"width": 16}, {}),
    "seq-fashion": ("lstm", {"width": 64}, {}),
    "text": ("lstm", {"width": 64}, {}),
    "text-char": ("lstm", {"width": 64}, {}),
    "adding-100": ("lstm", {"width": 64}, {}),
    "copy-50": ("lstm", {"width": 64}, {}),
}


class TimedBatches:
    """The task, with the seconds spent inside its ``batches`` iterator counted."""

    def __init__(self, task):
        self._task = task
        self.seconds = 0.0

    def __getattr__(self, name):
        return getattr(self._task, name)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        iterator = iter(self._task.batches(split, batch_size, seed))
        while True:
            started = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                self.seconds += time.perf_counter() - started
                return
            self.seconds += time.perf_counter() - started
            yield batch


def one_run(name: str, steps: int) -> dict[str, float]:
    model_name, options, extra = TASKS[name]
    started = time.perf_counter()
    task = load_task(name, data_config(None, None, False), {})
    loaded = time.perf_counter() - started
    defaults = dict(getattr(task, "train_defaults", {}))
    config = TrainConfig(**(defaults | {"steps": steps, "device": "cpu"} | extra))
    torch.manual_seed(0)
    spec = ModelSpec(model_name, options)
    kind = task.input_spec().kind
    model = build_model(model_name, task.input_spec(), resolve_options(spec, {}, kind))
    timed = TimedBatches(task)
    probes = make_probes(config.probes, model, timed, config)
    result = train(timed, model, config, seed=0, hooks=probes)
    wall = time.perf_counter() - started
    # Evaluation also draws batches; only training's draws are data preparation here.
    return {
        "load": loaded,
        "batches": timed.seconds,
        "train": result.train_seconds,
        "eval": result.eval_seconds,
        "wall": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    torch.set_num_threads(1)  # recurrent models: one thread is fastest on 2 busy cores
    torch.set_flush_denormal(True)
    load_plugins()
    if not os.environ.get("GRADBENCH_DATA"):
        print("GRADBENCH_DATA is not set: only the synthetic tasks run")
    for name in args.tasks.split(","):
        try:
            one_run(name, 5)  # first run: fills caches (decompressed images, token ids)
            figures = one_run(name, args.steps)
        except Exception as error:  # noqa: BLE001 - a missing data set skips its task
            print(f"{name}: skipped ({type(error).__name__}: {error})")
            continue
        data = figures["load"] + figures["batches"]
        print(
            f"{name} ({TASKS[name][0]}, {args.steps} steps): load {figures['load']:.2f} s, "
            f"batches {figures['batches']:.2f} s, train {figures['train']:.2f} s, "
            f"eval {figures['eval']:.2f} s, wall {figures['wall']:.2f} s; "
            f"data {100 * data / figures['wall']:.1f}% of wall (goal <= 5%)"
        )


if __name__ == "__main__":
    main()
