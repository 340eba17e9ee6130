"""Cost of gradbench's training loop against a minimal hand-written PyTorch loop.

Same model, data tensors, batch size, steps, optimizer and threads, so the ratio is
the loop's own cost: the per-step gradient norm and divergence check, the budget
bookkeeping. The two loops alternate in one process (the machines are noisy, so
only a side-by-side ratio means anything) and the median of the per-pair ratios is
printed. Probes are off here: their cost is measured by bench/probe_overhead.py.
Target: ratio <= 1.02.

    python bench/loop_overhead.py [--model resnet-20] [--steps 30] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import cnn_case, hand_loop  # noqa: E402

from gradbench.config import TrainConfig  # noqa: E402
from gradbench.train import train  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet-20")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    case = cnn_case(args.model, args.batch_size)
    config = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=case.lr, probes="off", device="cpu"
    )
    # Warm both paths once (allocator, oneDNN primitive caches).
    hand_loop(case, case.fresh_model(), 3, 0)
    warm = TrainConfig(steps=3, batch_size=args.batch_size, probes="off", device="cpu")
    train(case.task, case.fresh_model(), warm, seed=0)
    ratios, ours, theirs = [], [], []
    for repeat in range(args.repeats):
        # Alternate which loop goes first, so drift in machine load cancels out.
        order = ("ours", "hand") if repeat % 2 == 0 else ("hand", "ours")
        times = {}
        for which in order:
            model = case.fresh_model()
            if which == "ours":
                times[which] = train(case.task, model, config, seed=repeat).train_seconds
            else:
                times[which] = hand_loop(case, model, args.steps, repeat)
        ours.append(times["ours"])
        theirs.append(times["hand"])
        ratios.append(times["ours"] / times["hand"])
    ratio = statistics.median(ratios)
    print(
        f"loop overhead {case.name}, batch {args.batch_size}, {args.steps} steps, "
        f"{args.threads} threads: gradbench/hand = {ratio:.3f} (target <= 1.02); "
        f"median step {statistics.median(ours) / args.steps * 1e3:.1f} ms vs "
        f"{statistics.median(theirs) / args.steps * 1e3:.1f} ms; pairs: "
        + ", ".join(f"{r:.3f}" for r in ratios)
    )


if __name__ == "__main__":
    main()
