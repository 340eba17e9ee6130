"""Cost of gradbench's training loop against a minimal hand-written PyTorch loop.

Same model, same data tensors, batch size, steps, optimizer and threads; the two loops
alternate in one process (the machines are noisy, so only a side-by-side ratio means
anything) and the median of the per-pair ratios is printed. Probes are off here: their
cost is measured by bench/probe_overhead.py. Target: ratio <= 1.02.

    python bench/loop_overhead.py [--model resnet-20] [--steps 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from gradbench.config import TrainConfig
from gradbench.data import data_config
from gradbench.models.build import build_model, parse_model_arg, resolve_options
from gradbench.plugins import load_plugins
from gradbench.runner import load_task
from gradbench.train import train


def synthetic_image_task():
    """A Fashion-MNIST-shaped task in memory, for machines without the data."""
    from gradbench_tasks.image import ImageClassification

    g = torch.Generator().manual_seed(0)
    train_set = (
        torch.randn(8192, 1, 28, 28, generator=g),
        torch.randint(0, 10, (8192,), generator=g),
    )
    test_set = (torch.randn(512, 1, 28, 28, generator=g), torch.randint(0, 10, (512,), generator=g))
    return ImageClassification("image", "synthetic", train_set, test_set, "synthetic", "0", 10)


def hand_loop(model, images, labels, steps, batch_size, lr, seed) -> float:
    """What a user would write: shuffle, slice, forward, loss, backward, step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        index = order[step * batch_size : (step + 1) * batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(images[index]), labels[index])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet-20")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_plugins()
    if os.environ.get("GRADBENCH_DATA"):
        task = load_task("image", data_config(), {})
        source = "fashion-mnist"
    else:
        task = synthetic_image_task()
        source = "synthetic images"
    images, labels = task.splits["train"]
    spec = parse_model_arg(args.model)
    options = resolve_options(spec, {})
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=0.05, probes="off", device="cpu"
    )

    def fresh_model():
        torch.manual_seed(0)
        return build_model(spec.name, task.input_spec(), options)

    # Warm both paths once (allocator, oneDNN primitive caches).
    hand_loop(fresh_model(), images, labels, 3, args.batch_size, 0.05, 0)
    train(
        task,
        fresh_model(),
        TrainConfig(steps=3, batch_size=args.batch_size, probes="off", device="cpu"),
        seed=0,
    )
    ratios, ours, theirs = [], [], []
    for repeat in range(args.repeats):
        # Alternate which loop goes first, so drift in machine load cancels out.
        order = ("ours", "hand") if repeat % 2 == 0 else ("hand", "ours")
        times = {}
        for which in order:
            model = fresh_model()
            if which == "ours":
                times[which] = train(task, model, config, seed=repeat).train_seconds
            else:
                times[which] = hand_loop(
                    model, images, labels, args.steps, args.batch_size, 0.05, repeat
                )
        ours.append(times["ours"])
        theirs.append(times["hand"])
        ratios.append(times["ours"] / times["hand"])
    ratio = statistics.median(ratios)
    print(
        f"loop overhead {args.model} ({source}, batch {args.batch_size}, {args.steps} steps, "
        f"{args.threads} threads): gradbench/hand = {ratio:.3f} (target <= 1.02); "
        f"median step {statistics.median(ours) / args.steps * 1e3:.1f} ms vs "
        f"{statistics.median(theirs) / args.steps * 1e3:.1f} ms; pairs: "
        + ", ".join(f"{r:.3f}" for r in ratios)
    )


if __name__ == "__main__":
    main()
