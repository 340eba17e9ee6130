"""Training steps per second of the sequence models, side by side, at two sequence lengths.

The cost side of the RNN / LSTM / GRU / Transformer comparison: the same width, batch
and input, one Adam step each (forward, loss, backward, update), measured in
alternation so that machine load affects every model alike. Also the cost of the
per-timestep path (``hidden_sequence``, which the gradient probe needs) against the
fused forward+backward it replaces on the probe's steps.

    python bench/sequence_speed.py [--lengths 50,200] [--width 128] [--batch 64] [--threads 1]
        [--seconds 0.5] [--rounds 3]

One thread by default: with two OpenMP threads and any other process on a 2-core
machine, the fused recurrent kernels (hundreds of tiny parallel regions per step) spin
and slow down a hundredfold, and the figures would measure the neighbours.

Denormal floats are flushed to zero by default. Without that (``--keep-denormals``),
the vanishing gradients of the tanh RNN and the GRU at T=200 reach the denormal range
(below 1.2e-38), where CPU arithmetic is many times slower: measured on 2 shared cores,
width 128, the RNN's and the GRU's steps took several times longer, the LSTM's the same
(figures in docs/sequence.md). That is a real cost of vanishing gradients on CPUs, but
not the cost of the architecture.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import best_rates  # noqa: E402

from gradbench.models.build import build_model, model_options  # noqa: E402
from gradbench.task import InputSpec  # noqa: E402

MODELS = ("rnn", "lstm", "gru", "transformer")
STEPWISE = ("rnn", "lstm", "gru")


def make_step(name: str, length: int, width: int, batch: int, stepwise: bool = False):
    spec = InputSpec(kind="sequence", shape=(length, 8), num_outputs=1, target="regression")
    torch.manual_seed(0)
    model = build_model(name, spec, {**model_options(name, spec.kind), "width": width})
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
    parser.add_argument("--seconds", type=float, default=0.5, help="Timing per measurement.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; best kept.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default).")
    parser.add_argument(
        "--keep-denormals", action="store_true", help="Do not flush denormal floats to zero."
    )
    args = parser.parse_args()
    torch.set_flush_denormal(not args.keep_denormals)
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = [int(v) for v in args.lengths.split(",")]
    print(
        f"sequence models: training steps/s, width {args.width}, batch {args.batch}, "
        f"{torch.get_num_threads()} threads, denormals "
        + ("kept" if args.keep_denormals else "flushed")
    )
    print(
        f"{'model':<12} {'params':>9} "
        + " ".join(f"{'T=' + str(t):>9}" for t in lengths)
        + "   vs LSTM"
    )
    steps, params = {}, {}
    for length in lengths:
        for name in MODELS:
            steps[(name, length)], params[name] = make_step(name, length, args.width, args.batch)
        for name in STEPWISE:
            steps[(name + "/stepwise", length)], _ = make_step(
                name, length, args.width, args.batch, stepwise=True
            )
    rates = best_rates(steps, args.seconds, args.rounds)
    for name in MODELS:
        row = " ".join(f"{rates[(name, t)]:9.1f}" for t in lengths)
        ratio = " ".join(f"{rates[(name, t)] / rates[('lstm', t)]:.2f}x" for t in lengths)
        print(f"{name:<12} {params[name]:>9,} {row}   {ratio}")
    print(
        "\nper-timestep path (hidden_sequence, for the gradient probe) vs fused, per training step:"
    )
    for name in STEPWISE:
        parts = []
        for t in lengths:
            slow = rates[(name + "/stepwise", t)]
            parts.append(f"T={t}: {rates[(name, t)] / slow:.1f}x the time ({slow:.1f} steps/s)")
        print(f"  {name:<10} " + ", ".join(parts))


if __name__ == "__main__":
    main()
