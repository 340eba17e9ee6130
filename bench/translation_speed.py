"""Translation: training tokens/s per encoder-decoder, decoding sentences/s greedy vs beam 4,
and what data preparation costs on a first and a second run.

    python bench/translation_speed.py [--seconds 1] [--rounds 2] [--sentences 64] [--threads 1]

Models are built at their default sizes on Multi30k de-en (8,000-token BPE vocabularies)
and trained on the task's own bucketed batches of 64, measured in alternation so that
machine load affects every model alike (best round kept). Tokens are target tokens
(EOS included), as machine-translation papers count them. Decoding uses untrained
weights with EOS banned, so every output runs to its maximum length (1.5 x source + 10
tokens): the worst case, the same work for every model; the greedy/beam ratio is the
figure to read. Data preparation: loading
the task with an empty cache (reading, checking, BPE training, encoding) and again with
the cache filled (what every later run pays), against a 120-second training budget.
Needs the data mirror (GRADBENCH_DATA); says so and exits 0 without it.
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

from gradbench.data import data_config  # noqa: E402
from gradbench.models.build import ModelSpec, build_model, resolve_options  # noqa: E402
from gradbench.runner import load_task  # noqa: E402
from gradbench.subwords import EOS  # noqa: E402

MODELS = (
    ("rnn", {}),
    ("gru", {}),
    ("gru", {"attention": "additive"}),
    ("lstm", {"attention": "additive"}),
    ("transformer", {}),
)
BUDGET_SECONDS = 120.0


class NoEOS(torch.nn.Module):
    """The model's search interface with EOS banned: every output runs to its maximum
    length, so greedy and beam search do comparable work whatever the (untrained) weights."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def encode_source(self, src, src_len):
        return self.model.encode_source(src, src_len)

    def start(self, memory):
        return self.model.start(memory)

    def step(self, memory, state, tokens):
        logp, state = self.model.step(memory, state, tokens)
        logp[:, EOS] = float("-inf")
        return logp, state


def label(name: str, options: dict) -> str:
    return name + "".join(f":{k}={v}" for k, v in options.items())


def timed_load(cache: Path):
    started = time.perf_counter()
    task = load_task("translation", data_config(cache_dir=cache), {})
    return task, time.perf_counter() - started


def train_step(task, model):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = list(task.batches("train", 64, seed=0))[:20]
    position = [0]

    def step() -> int:
        batch = batches[position[0] % len(batches)]
        position[0] += 1
        optimizer.zero_grad(set_to_none=True)
        task.loss(model(batch.x, batch.lengths), batch).backward()
        optimizer.step()
        return int((batch.y != 0).sum())

    return step


def rate(step, seconds: float) -> float:
    """Tokens per second of ``step`` (which returns its tokens) over about ``seconds``."""
    tokens, count, started = 0, 0, time.perf_counter()
    while True:
        tokens += step()
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= seconds and count >= 2:
            return tokens / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="Timing per measurement.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds; best kept.")
    parser.add_argument("--sentences", type=int, default=64, help="Test sentences decoded.")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    args = parser.parse_args()
    if not os.environ.get("GRADBENCH_DATA"):
        print("translation_speed: skipped (GRADBENCH_DATA is not set)")
        return 0
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)

    with tempfile.TemporaryDirectory(prefix="gradbench-bench-") as tmp:
        _, cold = timed_load(Path(tmp))
        task, warm = timed_load(Path(tmp))
    print("data preparation (Multi30k de-en, 8k BPE per side):")
    print(f"  first run (BPE training, encoding): {cold:.2f} s")
    print(
        f"  second run (cache filled): {warm:.2f} s = "
        f"{100 * warm / (warm + BUDGET_SECONDS):.1f}% of a {BUDGET_SECONDS:.0f} s training run"
    )

    models, steps = {}, {}
    for name, options in MODELS:
        torch.manual_seed(0)
        resolved = resolve_options(ModelSpec(name, options), {}, task.input_spec().kind)
        model = build_model(name, task.input_spec(), resolved)
        models[label(name, options)] = model
        steps[label(name, options)] = train_step(task, model)
    tokens = best_rates(steps, args.seconds, args.rounds, rate=rate)

    task.test_count = args.sentences
    print(
        f"\ntraining (batch 64, {torch.get_num_threads()} thread(s)) and decoding "
        f"({args.sentences} test sentences, EOS banned: max-length outputs)"
    )
    print(f"{'model':<28} {'params':>10} {'tgt tok/s':>10} {'greedy s/s':>11} {'beam4 s/s':>10}")
    reference = tokens[label("gru", {})]
    decoding = {(key, beam): 0.0 for key in models for beam in (1, 4)}
    for model in models.values():
        model.eval()
    for _ in range(args.rounds):  # interleaved, best round kept, as for training
        for key, beam in decoding:
            task.beam = beam
            started = time.perf_counter()
            with torch.no_grad():
                task.translate(NoEOS(models[key]), torch.device("cpu"), 128)
            speed = args.sentences / (time.perf_counter() - started)
            decoding[(key, beam)] = max(decoding[(key, beam)], speed)
    for key, model in models.items():
        greedy, beam4 = decoding[(key, 1)], decoding[(key, 4)]
        params = sum(p.numel() for p in model.parameters())
        print(
            f"{key:<28} {params:>10,} {tokens[key]:>10.0f} {greedy:>11.1f} {beam4:>10.1f}"
            f"   ({tokens[key] / reference:.2f}x gru's tokens/s; beam 4 takes "
            f"{greedy / beam4:.1f}x greedy's time)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
