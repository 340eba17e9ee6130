"""Training steps per second of the sequence models, side by side, at two sequence lengths.

The cost side of the RNN / LSTM / GRU / Transformer comparison: the same width, batch
and input, one Adam step each (forward, loss, backward, update), measured in
alternation so that machine load affects every model alike. Also the cost of the
per-timestep path (``hidden_sequence``, which the gradient probe needs) against the
fused forward+backward it replaces on the probe's steps.

    python bench/sequence_speed.py [--lengths 50,200] [--width 128] [--batch 64] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import time

import torch

from gradbench.models.build import build_model, model_options
from gradbench.task import InputSpec

MODELS = ("rnn", "lstm", "gru", "transformer")
STEPWISE = ("rnn", "lstm", "gru")


def steps_per_second(step, seconds: float, warmup: int = 2) -> float:
    """Run ``step`` for about ``seconds`` after ``warmup`` calls; steps per second."""
    for _ in range(warmup):
        step()
    count, started = 0, time.perf_counter()
    while True:
        step()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and count >= 3:
            return count / elapsed


def make_step(name: str, length: int, width: int, batch: int, stepwise: bool = False):
    spec = InputSpec(kind="sequence", shape=(length, 8), num_outputs=1, target="regression")
    torch.manual_seed(0)
    model = build_model(name, spec, {**model_options(name), "width": width})
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, length, 8)
    y = torch.randn(batch, 1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        output = model.hidden_sequence(x)[0] if stepwise else model(x)
        torch.nn.functional.mse_loss(output, y).backward()
        optimizer.step()

    params = sum(p.numel() for p in model.parameters())
    return step, params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", default="50,200", help="Sequence lengths, comma-separated.")
    parser.add_argument("--width", type=int, default=128, help="Width of every model.")
    parser.add_argument("--batch", type=int, default=64, help="Batch size.")
    parser.add_argument("--seconds", type=float, default=1.0, help="Timing per measurement.")
    args = parser.parse_args()
    lengths = [int(v) for v in args.lengths.split(",")]
    print(
        f"sequence models: training steps/s, width {args.width}, batch {args.batch}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'model':<12} {'params':>9} " + " ".join(f"{'T=' + str(t):>9}" for t in lengths)
          + "   vs LSTM")
    rates: dict[tuple[str, int], float] = {}
    params: dict[str, int] = {}
    for length in lengths:
        # Alternate the models within a length so load drifts hit all of them.
        steps = {}
        for name in MODELS:
            steps[name], params[name] = make_step(name, length, args.width, args.batch)
        for name in MODELS:
            rates[(name, length)] = steps_per_second(steps[name], args.seconds)
    for name in MODELS:
        row = " ".join(f"{rates[(name, t)]:9.1f}" for t in lengths)
        ratio = " ".join(f"{rates[(name, t)] / rates[('lstm', t)]:.2f}x" for t in lengths)
        print(f"{name:<12} {params[name]:>9,} {row}   {ratio}")
    print("\nper-timestep path (hidden_sequence) vs fused, training step time ratio:")
    for name in STEPWISE:
        parts = []
        for length in lengths:
            step, _ = make_step(name, length, args.width, args.batch, stepwise=True)
            stepwise_rate = steps_per_second(step, args.seconds)
            parts.append(f"T={length}: {rates[(name, length)] / stepwise_rate:.2f}x slower "
                         f"({stepwise_rate:.1f} steps/s)")
        print(f"  {name:<10} " + ", ".join(parts))


if __name__ == "__main__":
    main()
