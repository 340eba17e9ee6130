"""Video models' training throughput (clips/s) side by side, and the cost of clip generation.

Part 1: one Adam step each (forward, loss, backward, update) on the same batch of clips,
measured in alternation so that machine load affects every model alike, as clips per
second and against the CNN+LSTM: the frame encoder + rnn / lstm / gru / transformer
(plain and residual encoder), and the plain / residual 3D CNNs.

Part 2: the generated ``video`` task's clips on a first run (drawn from the images, then
cached) and a second run (read from the cache), against the wall time of a default-sized
training run (``--steps`` steps of the CNN+LSTM at the rate of part 1): the second run's
share must stay at most 5%. Needs the image data (``GRADBENCH_DATA``); skipped without.

    python bench/video_speed.py [--frames 20] [--size 32] [--batch 32] [--steps 200]
        [--threads 1] [--seconds 0.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import best_rates  # noqa: E402

from gradbench.models.build import build_model, model_options  # noqa: E402
from gradbench.task import InputSpec  # noqa: E402

MODELS = (
    "rnn",
    "lstm",
    "gru",
    "transformer",
    "lstm:encoder=resnet-8",
    "plain3d-8",
    "resnet3d-8",
)


def make_step(label: str, spec: InputSpec, batch: int):
    name, _, option = label.partition(":")
    options = model_options(name, spec.kind)
    if option:
        key, _, value = option.partition("=")
        options[key] = value
    torch.manual_seed(0)
    model = build_model(name, spec, options)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, *spec.shape)
    y = torch.randint(0, spec.num_outputs, (batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step, sum(p.numel() for p in model.parameters())


def generation_share(args: argparse.Namespace, lstm_clips_per_second: float) -> None:
    from gradbench_tasks.video import video

    from gradbench.data import data_config
    from gradbench.errors import GradbenchError

    if not os.environ.get("GRADBENCH_DATA"):
        print("\nclip generation: skipped (set GRADBENCH_DATA to the data directory)")
        return
    with tempfile.TemporaryDirectory(prefix="gradbench-video-bench-") as cache:
        config = data_config(None, cache)
        options = {"frames": args.frames, "size": args.size}
        try:
            began = time.perf_counter()
            video(config, **options)
            first = time.perf_counter() - began
            began = time.perf_counter()
            video(config, **options)
            second = time.perf_counter() - began
        except GradbenchError as error:
            print(f"\nclip generation: skipped ({error})")
            return
    train = args.steps * args.batch / lstm_clips_per_second
    share = second / (second + train)
    print(
        f"\nclip generation ({args.frames} frames of {args.size}x{args.size}, 12,000 clips): "
        f"first run {first:.1f} s (drawn and cached), second run {second:.2f} s (cache)"
    )
    print(
        f"second run's share of a {args.steps}-step lstm run ({train:.0f} s of training): "
        f"{100 * share:.1f}% (limit 5%)" + ("" if share <= 0.05 else "  OVER")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20, help="Frames per clip (T).")
    parser.add_argument("--size", type=int, default=32, help="Frame height and width.")
    parser.add_argument("--batch", type=int, default=32, help="Clips per step.")
    parser.add_argument("--steps", type=int, default=200, help="Steps of the reference run.")
    parser.add_argument("--seconds", type=float, default=0.5, help="Timing per measurement.")
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds; best kept.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default).")
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = InputSpec(kind="video", shape=(args.frames, 1, args.size, args.size), num_outputs=10)
    print(
        f"video models: training clips/s, {args.frames} frames of {args.size}x{args.size}, "
        f"batch {args.batch}, {torch.get_num_threads()} threads, default widths"
    )
    steps, params = {}, {}
    for label in MODELS:
        steps[label], params[label] = make_step(label, spec, args.batch)
    rates = best_rates(steps, args.seconds, args.rounds)
    print(f"{'model':<24} {'params':>9} {'clips/s':>9}   vs lstm")
    for label in MODELS:
        clips = rates[label] * args.batch
        ratio = rates[label] / rates["lstm"]
        print(f"{label:<24} {params[label]:>9,} {clips:9.1f}   {ratio:.2f}x")
    generation_share(args, rates["lstm"] * args.batch)


if __name__ == "__main__":
    main()
