"""Channels-last against PyTorch's contiguous layout, per model, on the CPU: speed and
gradient precision.

gradbench trains in the contiguous layout by default, though oneDNN computes CPU
convolutions faster in channels-last (gradbench.layout says why). This prints both
sides of that trade for each model: the step time of a plain eager fp32 training step
in each layout (same model and batches, alternating over rounds; the ratio is
contiguous / channels-last, above 1: channels-last is faster), and how far each
layout's first-step gradients are from a float64 computation of the same step (the
worst parameter tensor's relative error). Cases: the image CNNs on Fashion-MNIST, and
the video models on clips built from it (when the data directory is set; synthetic
images otherwise, and no video).

    python bench/layout_speed.py [--steps 8] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import Case, cnn_case  # noqa: E402

from gradbench.data import data_config  # noqa: E402
from gradbench.layout import to_channels_last  # noqa: E402
from gradbench.runner import load_task  # noqa: E402

IMAGE_MODELS = ("resnet-20", "plain-20", "resnet-56", "plain-8:norm=none")
VIDEO_MODELS = ("gru", "transformer", "plain3d-8", "resnet3d-8")


def step_ms(case: Case, channels_last: bool, steps: int) -> float:
    """Median milliseconds of one training step (after 2 warm-up steps)."""
    model = case.fresh_model()
    if channels_last:
        to_channels_last(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=case.lr, momentum=0.9)
    times = []
    for index, batch in enumerate(case.task.batches("train", case.batch_size, seed=0)):
        if index == steps + 2:
            break
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        output = model(batch.x) if batch.lengths is None else model(batch.x, batch.lengths)
        case.task.loss(output, batch).backward()
        optimizer.step()
        if index >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def gradient_error(case: Case, channels_last: bool) -> float:
    """Worst relative error, over parameter tensors, of one batch's gradients (float64 ref)."""
    model = case.fresh_model()
    exact = copy.deepcopy(model).double()
    if channels_last:
        to_channels_last(model)
    batch = next(iter(case.task.batches("train", case.batch_size, seed=0)))
    wide = type(batch)(batch.x.double(), batch.y, batch.lengths)
    for net, data in ((model, batch), (exact, wide)):
        net.train()
        output = net(data.x) if data.lengths is None else net(data.x, data.lengths)
        case.task.loss(output, data).backward()
    return max(
        ((p.grad.double() - q.grad).norm() / q.grad.norm()).item()
        for p, q in zip(model.parameters(), exact.parameters(), strict=True)
        if q.grad is not None and q.grad.norm() > 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = [cnn_case(model) for model in IMAGE_MODELS]
    if os.environ.get("GRADBENCH_DATA"):
        video = load_task("video", data_config(), {})
        cases += [Case(f"{m} (video)", video, m, 32, 0.05) for m in VIDEO_MODELS]
    for case in cases:
        times: dict[bool, list[float]] = {False: [], True: []}
        for round_ in range(args.rounds):
            for channels_last in (False, True) if round_ % 2 == 0 else (True, False):
                times[channels_last].append(step_ms(case, channels_last, args.steps))
        contiguous, last = statistics.median(times[False]), statistics.median(times[True])
        error = {layout: gradient_error(case, layout) for layout in (False, True)}
        print(
            f"layout {case.name}, batch {case.batch_size}, "
            f"{torch.get_num_threads()} thread(s): step contiguous {contiguous:.1f} ms, "
            f"channels-last {last:.1f} ms: {contiguous / last:.2f}x; gradient error vs "
            f"float64 contiguous {error[False]:.1e}, channels-last {error[True]:.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
