"""Cost of the gradient probes: default vs off and full vs off, measured side by side.

Two workloads: ResNet-20 on Fashion-MNIST (synthetic 28x28 images when GRADBENCH_DATA
is unset) and an LSTM over sequences of length 100 (gradbench's ``lstm`` on the adding
problem when they are registered, otherwise a minimal LSTM with ``hidden_sequence``
built here). Each round trains a fresh model once per level (off, default, full), in
an order that rotates between rounds so drift in machine load cancels; the seconds
of the loop (evaluation excluded, the hooks' time included) are compared, and the
median of the per-round ratios is printed, beside the time spent inside the probe
hooks as a fraction of each run's own training time (immune to load from other
processes).
Targets: default/off <= 1.05, full/off <= 1.5.

    python bench/probe_overhead.py [--steps 40] [--sequence-steps 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.config import TrainConfig
from gradbench.data import data_config
from gradbench.models.build import build_model, model_options
from gradbench.plugins import load_plugins
from gradbench.probes import make_probes
from gradbench.registry import MODELS, TASKS
from gradbench.runner import load_task
from gradbench.task import Batch, DatasetId, InputSpec, MetricSpec
from gradbench.train import train

LEVELS = ("off", "default", "full")
TARGETS = {"default": 1.05, "full": 1.5}


class TrainingOnly:
    """A task whose evaluation is skipped: the benchmark times training steps only."""

    def __init__(self, task):
        self._task = task
        self.name = task.name
        self.metrics = task.metrics

    def __getattr__(self, name):
        return getattr(self._task, name)

    def evaluate(self, model, device, batch_size):
        return {}


class SyntheticTask:
    """Random inputs of a given per-sample shape with random labels (for either workload)."""

    name = "synthetic"
    metrics = (MetricSpec("test_accuracy", True),)

    def __init__(self, shape: tuple[int, ...], classes: int = 10, size: int = 4096):
        generator = torch.Generator().manual_seed(0)
        self.shape, self.classes = shape, classes
        self.x = torch.randn((size, *shape), generator=generator)
        self.y = torch.randint(0, classes, (size,), generator=generator)

    def input_spec(self) -> InputSpec:
        kind = "image" if len(self.shape) == 3 else "sequence"
        return InputSpec(kind=kind, shape=self.shape, num_outputs=self.classes)

    def batches(self, split, batch_size, seed):
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield Batch(self.x[index], self.y[index])

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model, device, batch_size):
        return {}

    def fake_batch(self, batch_size=4, seed=0):
        return Batch(self.x[:batch_size], self.y[:batch_size])

    def dataset_id(self, split):
        return DatasetId("synthetic", split, "0", "synthetic", len(self.y))


class MinimalLSTM(nn.Module):
    """Fused nn.LSTM for training; a step-by-step pass with the same weights for the probe."""

    def __init__(self, features: int, hidden: int, classes: int):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.head(self.lstm(x)[0][:, -1])

    def hidden_sequence(self, x: Tensor, lengths: Tensor | None = None):
        cell = nn.LSTMCell(self.lstm.input_size, self.lstm.hidden_size)
        cell.weight_ih, cell.weight_hh = self.lstm.weight_ih_l0, self.lstm.weight_hh_l0
        cell.bias_ih, cell.bias_hh = self.lstm.bias_ih_l0, self.lstm.bias_hh_l0
        h = c = x.new_zeros(x.shape[0], self.lstm.hidden_size)
        states = []
        for t in range(x.shape[1]):
            h, c = cell(x[:, t], (h, c))
            states.append(h)
        return self.head(h), states


def image_workload():
    if os.environ.get("GRADBENCH_DATA"):
        task = load_task("image", data_config(), {})
        source = "fashion-mnist"
    else:
        task, source = SyntheticTask((1, 28, 28)), "synthetic 28x28 images"

    def model():
        kind = task.input_spec().kind
        return build_model("resnet-20", task.input_spec(), model_options("resnet-20", kind))

    return "resnet-20", source, TrainingOnly(task), model, 64


def sequence_workload(length: int):
    """gradbench's LSTM at its default width on the adding problem, at the task's batch size."""
    if "lstm" in MODELS and "adding" in TASKS:
        task = load_task("adding", data_config(), {"length": length})
        batch_size = dict(getattr(task, "train_defaults", {})).get("batch_size", 64)

        def model():
            kind = task.input_spec().kind
            return build_model("lstm", task.input_spec(), model_options("lstm", kind))

        return "lstm", f"adding-{length}", TrainingOnly(task), model, batch_size
    task = SyntheticTask((length, 8))
    return "lstm (minimal)", f"synthetic T={length}", task, lambda: MinimalLSTM(8, 128, 10), 64


def measure(name, source, task, make_model, batch_size, steps, rounds) -> dict[str, float]:
    in_hooks: dict[str, list[float]] = {level: [] for level in LEVELS}

    def once(level: str, seed: int, n_steps: int) -> float:
        torch.manual_seed(seed)
        model = make_model()
        config = TrainConfig(
            steps=n_steps, batch_size=batch_size, lr=0.01, probes=level, device="cpu"
        )
        probes = make_probes(level, model, task, config)
        result = train(task, model, config, seed=seed, hooks=probes)
        # The loop keeps the hooks' time out of train_seconds (a --seconds budget buys
        # training, not probing): what the probes cost is the two together.
        seconds = result.train_seconds + result.probe_seconds
        # Time spent inside the hooks, as a fraction of the run's own training time:
        # immune to load from other processes (it misses only indirect costs).
        in_hooks[level].append(probes.seconds / seconds if seconds else 0.0)
        return seconds

    for level in LEVELS:  # warm-up: allocator, oneDNN caches, lazy imports
        once(level, 0, 3)
    seconds: dict[str, list[float]] = {level: [] for level in LEVELS}
    ratios: dict[str, list[float]] = {"default": [], "full": []}
    for round_ in range(rounds):
        order = LEVELS[round_ % 3 :] + LEVELS[: round_ % 3]
        times = {level: once(level, round_, steps) for level in order}
        for level in LEVELS:
            seconds[level].append(times[level])
        for level in ratios:
            ratios[level].append(times[level] / times["off"])
    step_ms = statistics.median(seconds["off"]) / steps * 1e3
    results = {}
    for level, values in ratios.items():
        # Each round times the three levels back to back, so a per-round ratio cancels
        # slow drift in machine load; the median drops a round hit by a burst.
        ratio = statistics.median(values)
        results[level] = ratio
        verdict = "ok" if ratio <= TARGETS[level] else "OVER TARGET"
        print(
            f"probe overhead {name} {level}/off: {ratio:.3f} (target <= {TARGETS[level]}) "
            f"{verdict}; {source}, batch {batch_size}, {steps} steps, off step {step_ms:.1f} ms; "
            f"per-round ratios {', '.join(f'{r:.3f}' for r in values)}; "
            f"time inside the probe hooks "
            f"{100 * statistics.median(in_hooks[level][1:]):.1f}% of training, i.e. "
            f"{1 / (1 - statistics.median(in_hooks[level][1:])):.3f} against none",
            flush=True,
        )
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="ResNet-20 steps per run.")
    # The default level probes dL/dh_t on step 0, every 100th and the last step: on a
    # run much shorter than 100 steps those two probes weigh more than in real use.
    parser.add_argument("--sequence-steps", type=int, default=100, help="LSTM steps per run.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_plugins()
    started = time.perf_counter()
    measure(*image_workload(), args.steps, args.rounds)
    measure(*sequence_workload(args.length), args.sequence_steps, args.rounds)
    print(f"probe overhead: done in {time.perf_counter() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
