"""gradbench --fast against an eager fp32 hand-written loop, on a CNN and an LSTM.

Fast mode (gradbench.fast) is bf16 autocast, channels-last for CNNs and torch.compile
(inductor) for image models with probes off. The hand-written loop is plain eager fp32,
what a user writes (bench/_cases.py). Both train the same fresh model for the same
steps in alternation over several rounds; the ratio hand/fast per round is the
speed-up (goals: >= 1.8x on the CNN, >= 1.5x on the LSTM, on a CPU with AMX bf16).
Compilation happens before gradbench's training clock starts and is reported apart,
for the first run and for the later ones (which reuse the compiled code: one
configuration, other seeds). bf16 pays off only where the CPU has bf16 units (AMX or
AVX512-BF16): elsewhere fast mode stays fp32 (gradbench.fast), and the script says so.

    python bench/fast_speed.py [--steps 30] [--rounds 3] [--threads 1] [--case cnn,lstm]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import Case, cnn_case, hand_loop, lstm_case  # noqa: E402

from gradbench.config import TrainConfig  # noqa: E402
from gradbench.train import train  # noqa: E402


def bf16_units() -> str:
    """What this CPU offers for bf16 matmuls (from /proc/cpuinfo, Linux only)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "unknown"
    found = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return ", ".join(found) or "none (bf16 is emulated: expect no speed-up from it)"


def fast_run(case: Case, steps: int, seed: int) -> tuple[float, dict]:
    config = TrainConfig(
        steps=steps, batch_size=case.batch_size, lr=case.lr, probes="off", device="cpu", fast=True
    )
    result = train(case.task, case.fresh_model(seed), config, seed=seed)
    return result.train_seconds, result.fast


def race(case: Case, steps: int, rounds: int) -> None:
    hand_loop(case, case.fresh_model(), 3, 0)  # warm the eager path
    _, first = fast_run(case, 3, 0)  # compiles (when it compiles)
    ratios, compiles, fast_times, hand_times = [], [], [], []
    for round_ in range(rounds):
        if round_ % 2 == 0:
            fast_seconds, info = fast_run(case, steps, round_)
            hand_seconds = hand_loop(case, case.fresh_model(round_), steps, round_)
        else:
            hand_seconds = hand_loop(case, case.fresh_model(round_), steps, round_)
            fast_seconds, info = fast_run(case, steps, round_)
        compiles.append(info.get("compile_seconds", 0.0))
        fast_times.append(fast_seconds)
        hand_times.append(hand_seconds)
        ratios.append(hand_seconds / fast_seconds)
    compiled = (
        f"compiled ({first.get('compile_backend')}): {first['compile_seconds']:.1f} s the first "
        f"time, {statistics.median(compiles):.2f} s for each later seed"
        if first.get("compiled")
        else f"not compiled ({first.get('compile_skipped')})"
    )
    print(
        f"fast vs eager {case.name}, batch {case.batch_size}, {steps} steps, "
        f"{torch.get_num_threads()} thread(s): hand fp32 / gradbench --fast median "
        f"{statistics.median(ratios):.2f}x; median step hand "
        f"{statistics.median(hand_times) / steps * 1e3:.1f} ms, fast "
        f"{statistics.median(fast_times) / steps * 1e3:.1f} ms; bf16 autocast "
        f"{first.get('bf16_autocast')}, channels-last {first.get('channels_last')}, "
        f"{compiled}; rounds: " + ", ".join(f"{r:.2f}" for r in ratios)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--case", default="cnn,lstm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"fast vs eager: CPU bf16 units: {bf16_units()}")
    cases = {"cnn": cnn_case, "lstm": lstm_case}
    for name in args.case.split(","):
        race(cases[name](), args.steps, args.rounds)


if __name__ == "__main__":
    main()
