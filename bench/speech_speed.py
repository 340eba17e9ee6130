"""Speech features: training frames per second per model, and the feature extraction's share.

1. Frames/s: one Adam step (forward, CTC loss, backward, update) of each sequence model
   on a real batch of ``speech-connected`` (log-mel frames of FSDD digit strings, a few
   hundred frames each), all at the same width, measured in interleaved rounds (the best
   round kept, as timeit does) so machine load affects every model alike.
2. Extraction share: the same short ``speech-digits`` run (task load, a GRU trained for
   ``--steps`` steps, evaluation) twice on an empty cache directory. The first run reads
   and featurises the 3,000 clips; the second finds the cached features (it still
   hashes the clips, which is how it knows the cache is theirs). Printed: the seconds in
   feature loading (``cached_bank``) and their share of the run's wall time.

    python bench/speech_speed.py [--width 128] [--batch 16] [--steps 200] [--threads 1]

Needs the FSDD clips (``GRADBENCH_DATA``, or ``../shared/data`` beside the checkout).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import gradbench_tasks.speech as speech  # noqa: E402
from _cases import best_rates  # noqa: E402

from gradbench.config import TrainConfig  # noqa: E402
from gradbench.data import data_config  # noqa: E402
from gradbench.models.build import build_model  # noqa: E402
from gradbench.plugins import load_plugins  # noqa: E402
from gradbench.train import train  # noqa: E402

MODELS = ("rnn", "lstm", "gru", "transformer")


def data_dir() -> Path:
    value = os.environ.get("GRADBENCH_DATA") or str(HERE.parent.parent / "shared" / "data")
    return Path(value)


def frame_rates(width: int, batch_size: int, seconds: float, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        task = speech.speech_connected(data_config(data_dir(), cache, download=False))
    batch = task.fake_batch(batch_size, seed=0)
    frames = int(batch.lengths.sum())
    steps, params = {}, {}
    for name in MODELS:
        torch.manual_seed(0)
        model = build_model(name, task.input_spec(), {"width": width})
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step(model=model, optimizer=optimizer) -> None:
            optimizer.zero_grad(set_to_none=True)
            task.loss(model(batch.x, batch.lengths), batch).backward()
            optimizer.step()

        steps[name], params[name] = step, sum(p.numel() for p in model.parameters())
    rates = best_rates(steps, seconds, rounds)
    print(
        f"speech-connected batch: {batch_size} strings, {frames} frames "
        f"(longest {batch.x.shape[1]}), {batch.x.shape[2]} log-mel bands; width {width}"
    )
    print(f"{'model':<12} {'params':>9} {'frames/s':>10}   vs LSTM")
    for name in MODELS:
        print(
            f"{name:<12} {params[name]:>9,} {rates[name] * frames:10.0f}   "
            f"{rates[name] / rates['lstm']:.2f}x"
        )


def one_run(cache: str, steps: int) -> tuple[float, float, bool]:
    """(seconds loading features, seconds of the whole run, cache hit) of a short run."""
    loading = [0.0]
    hits = []
    original = speech.cached_bank

    def timed(*args, **kwargs):
        began = time.perf_counter()
        bank, hit = original(*args, **kwargs)
        loading[0] += time.perf_counter() - began
        hits.append(hit)
        return bank, hit

    speech.cached_bank = timed
    try:
        began = time.perf_counter()
        task = speech.speech_digits(data_config(data_dir(), cache, download=False))
        torch.manual_seed(0)
        model = build_model("gru", task.input_spec(), {})
        config = TrainConfig(steps=steps, optimizer="adam", lr=1e-3, batch_size=32)
        train(task, model, config, seed=0, device=torch.device("cpu"))
        total = time.perf_counter() - began
    finally:
        speech.cached_bank = original
    return loading[0], total, all(hits)


def extraction_share(steps: int) -> None:
    print(f"\nspeech-digits, GRU-128, {steps} steps + evaluation, on an empty cache, twice:")
    with tempfile.TemporaryDirectory() as cache:
        for number in (1, 2):
            loading, total, hit = one_run(cache, steps)
            state = "cached" if hit else "extracted"
            print(
                f"  run {number}: features {loading:6.2f} s ({state}) of {total:6.2f} s "
                f"= {100 * loading / total:4.1f}% of the run's wall time"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=128, help="Width of every model.")
    parser.add_argument("--batch", type=int, default=16, help="Strings per batch.")
    parser.add_argument("--steps", type=int, default=200, help="Training steps of each run.")
    parser.add_argument("--seconds", type=float, default=1.0, help="Timing per measurement.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds; best kept.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: default).")
    args = parser.parse_args()
    if not (data_dir() / "fsdd" / "recordings").is_dir():
        print(f"skipped: no FSDD clips under {data_dir()} (set GRADBENCH_DATA)")
        return
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    load_plugins()
    frame_rates(args.width, args.batch, args.seconds, args.rounds)
    extraction_share(args.steps)


if __name__ == "__main__":
    main()
