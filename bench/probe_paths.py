"""The two ways of measuring per-timestep gradients, timed side by side per model and task.

gradbench's recurrent models can give ||dL/dh_t|| from one fused pass
(``hidden_grad_norms``) or from a step-by-step recomputation (``hidden_sequence``);
both give the same numbers (tests/test_hidden_grad_norms.py), and the probe takes the
one ``fused_probe_pays`` says is cheaper on the device. This prints, for each (task,
model), the median time of one probe pass (6 samples, as the probe takes) on each path
and their ratio fused / step-by-step (below 1: the fused pass is cheaper), and which
path the probe takes on this machine's CPU.

    python bench/probe_paths.py [--tasks adding-200,speech-digits,text] [--models rnn,lstm,gru]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import Case  # noqa: E402

from gradbench.data import data_config  # noqa: E402
from gradbench.plugins import load_plugins  # noqa: E402
from gradbench.probes.timestep import timestep_grad_norms  # noqa: E402
from gradbench.runner import load_task  # noqa: E402


def median_seconds(probe, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        probe()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default="adding-200,speech-digits,text")
    parser.add_argument("--models", default="rnn,lstm,gru")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_plugins()
    for task_name in args.tasks.split(","):
        task = load_task(task_name, data_config(), {})
        batch = next(iter(task.batches("train", 32, seed=0)))
        padded = batch.lengths is not None
        for name in args.models.split(","):
            model = Case(name, task, name, 32, 0.05).fresh_model()

            def probe(model=model, task=task, batch=batch):
                return timestep_grad_norms(model, task, batch)

            fused_probe = type(model).fused_probe_pays
            type(model).fused_probe_pays = lambda self, device, padded: True
            fused = median_seconds(probe, args.repeats)
            type(model).fused_probe_pays = lambda self, device, padded: False
            stepwise = median_seconds(probe, args.repeats)
            type(model).fused_probe_pays = fused_probe
            taken = "fused" if model.fused_probe_pays(torch.device("cpu"), padded) else "stepwise"
            print(
                f"probe paths {task_name} (T={batch.x.shape[1]}, padded {padded}) {name}: "
                f"fused {fused * 1e3:.1f} ms, step-by-step {stepwise * 1e3:.1f} ms, "
                f"fused/step-by-step {fused / stepwise:.2f}; the CPU probe takes: {taken}",
                flush=True,
            )


if __name__ == "__main__":
    main()
