"""bf16 autocast against fp32: training steps per second on a CNN and on an LSTM, side by side.

What ``--precision bf16`` buys on this machine. Each model trains one step at a time
(forward, loss, backward, optimiser), fp32 and bf16 autocast alternating in rounds so
that load drifts touch both alike; the best round of each is kept (as timeit does) and
the ratio bf16/fp32 printed. Goal: >= 1.5x where the CPU has bf16 matrix units (AMX,
``amx_bf16``; AVX512-BF16 helps less); without them, autocast adds casts for no faster
arithmetic and the ratio falls below 1.

    python bench/precision_speed.py [--seconds 1.0] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import steps_per_second  # noqa: E402

from gradbench.models.build import ModelSpec, build_model, resolve_options  # noqa: E402
from gradbench.plugins import load_plugins  # noqa: E402
from gradbench.task import InputSpec  # noqa: E402

# The CNN of `make run` on Fashion-MNIST shapes; an LSTM on adding-100 shapes.
CASES = {
    "resnet-20 (batch 128, 1x28x28)": (
        "resnet-20",
        InputSpec(kind="image", shape=(1, 28, 28), num_outputs=10),
        128,
        {},
    ),
    "lstm width 256 (batch 64, T=100)": (
        "lstm",
        InputSpec(kind="sequence", shape=(100, 2), num_outputs=10),
        64,
        {"width": 256},
    ),
}


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    wanted = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f")
    return [flag for flag in wanted if f" {flag}" in text]


def make_step(name: str, spec: InputSpec, batch: int, options: dict, bf16: bool):
    torch.manual_seed(0)
    options = resolve_options(ModelSpec(name, options), {}, spec.kind)
    model = build_model(name, spec, options).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, *spec.shape)
    y = torch.randint(0, spec.num_outputs, (batch,))
    cast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with cast:
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    load_plugins()
    print(
        f"threads {torch.get_num_threads()}; CPU bf16 features: "
        f"{', '.join(cpu_flags()) or 'none found'}"
    )
    for label, (name, spec, batch, options) in CASES.items():
        steps = {bf16: make_step(name, spec, batch, options, bf16) for bf16 in (False, True)}
        for step in steps.values():
            step()  # warm-up: allocator, kernel selection
        best = {False: 0.0, True: 0.0}
        ratios = []
        for _ in range(args.rounds):
            rates = {bf16: steps_per_second(step, args.seconds) for bf16, step in steps.items()}
            ratios.append(rates[True] / rates[False])
            best = {k: max(best[k], rates[k]) for k in best}
        per_round = ", ".join(f"{r:.2f}" for r in ratios)
        print(
            f"{label}: fp32 {best[False]:.2f} steps/s, bf16 {best[True]:.2f} steps/s, "
            f"bf16/fp32 {best[True] / best[False]:.2f}x (rounds: {per_round}; goal >= 1.5x)"
        )


if __name__ == "__main__":
    main()
