"""gradbench's training loop against a PyTorch Lightning Trainer doing the same work.

Same model, data tensors, batch size, optimizer (SGD, momentum 0.9), learning rate,
number of steps and threads; Lightning with logging, checkpointing, progress bar,
model summary and validation off, fed by a DataLoader that fetches a whole batch by
index (as gradbench does, rather than collating samples one by one). A hand-written
eager loop runs beside them, as in bench/loop_overhead.py. The three alternate in one
process over several rounds (the order rotates, so load drifts hit each alike); for
each round the ratios gradbench/Lightning and gradbench/hand are printed, and whether
gradbench was faster than Lightning in every round. Probes are off (their cost is
bench/probe_overhead.py's). gradbench's time is its train_seconds; Lightning's runs
from on_train_start to on_train_end (setup excluded for both).

    python bench/lightning_vs_loop.py [--steps 40] [--rounds 5] [--threads 1] [--case cnn,lstm]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cases import Case, cnn_case, hand_loop, lstm_case  # noqa: E402

from gradbench.config import TrainConfig  # noqa: E402
from gradbench.task import Batch  # noqa: E402
from gradbench.train import train  # noqa: E402


def lightning_seconds(case: Case, model: torch.nn.Module, steps: int, seed: int) -> float:
    import lightning as L

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_index):
            x, y = batch
            return case.task.loss(self.model(x), Batch(x, y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.model.parameters(), lr=case.lr, momentum=0.9)

    class Timer(L.Callback):
        def on_train_start(self, trainer, module):
            self.started = time.perf_counter()

        def on_train_end(self, trainer, module):
            self.seconds = time.perf_counter() - self.started

    class ByIndex(torch.utils.data.Dataset):
        """Indexed by a whole batch of indices: one gather per batch, no per-sample collate."""

        def __init__(self, x, y):
            self.x, self.y = x, y

        def __len__(self):
            return len(self.y)

        def __getitem__(self, index):
            return self.x[index], self.y[index]

    x, y = case.tensors
    sampler = torch.utils.data.BatchSampler(
        torch.utils.data.RandomSampler(
            range(len(y)), generator=torch.Generator().manual_seed(seed)
        ),
        case.batch_size,
        drop_last=True,
    )
    loader = torch.utils.data.DataLoader(ByIndex(x, y), sampler=sampler, batch_size=None)
    timer = Timer()
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    trainer.fit(Module(), train_dataloaders=loader)
    return timer.seconds


def gradbench_seconds(case: Case, model: torch.nn.Module, steps: int, seed: int) -> float:
    config = TrainConfig(
        steps=steps, batch_size=case.batch_size, lr=case.lr, probes="off", device="cpu"
    )
    return train(case.task, model, config, seed=seed).train_seconds


def race(case: Case, steps: int, rounds: int) -> None:
    runners = {"gradbench": gradbench_seconds, "lightning": lightning_seconds, "hand": None}
    names = list(runners)
    # Warm every path (allocator, oneDNN primitive caches, Lightning's imports).
    for name in names:
        run(name, runners, case, 3, 0)
    vs_lightning, vs_hand, times = [], [], {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % 3 :] + names[: round_ % 3]
        seconds = {name: run(name, runners, case, steps, round_) for name in order}
        for name in names:
            times[name].append(seconds[name])
        vs_lightning.append(seconds["gradbench"] / seconds["lightning"])
        vs_hand.append(seconds["gradbench"] / seconds["hand"])
    every = all(r < 1 for r in vs_lightning)
    ms = {name: statistics.median(t) / steps * 1e3 for name, t in times.items()}
    print(
        f"lightning vs loop {case.name}, batch {case.batch_size}, {steps} steps, "
        f"{torch.get_num_threads()} thread(s): gradbench/Lightning median "
        f"{statistics.median(vs_lightning):.3f} (faster in every round: "
        f"{'yes' if every else 'no'}), gradbench/hand median {statistics.median(vs_hand):.3f} "
        f"(goal <= 1.02); median step gradbench {ms['gradbench']:.1f} ms, Lightning "
        f"{ms['lightning']:.1f} ms, hand {ms['hand']:.1f} ms; rounds gradbench/Lightning: "
        + ", ".join(f"{r:.3f}" for r in vs_lightning)
        + "; gradbench/hand: "
        + ", ".join(f"{r:.3f}" for r in vs_hand)
    )


def run(name, runners, case: Case, steps: int, seed: int) -> float:
    model = case.fresh_model()
    if name == "hand":
        return hand_loop(case, model, steps, seed)
    return runners[name](case, model, steps, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--case", default="cnn,lstm")
    args = parser.parse_args()
    # Lightning's own deprecation notices about torch internals say nothing about speed.
    warnings.filterwarnings("ignore", module="lightning")
    try:
        import lightning  # noqa: F401
    except ImportError:
        print("lightning vs loop: skipped, Lightning is not installed (pip install -e '.[bench]')")
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "GPU available: False" and the like
    torch.set_num_threads(args.threads)
    cases = {"cnn": cnn_case, "lstm": lstm_case}
    for name in args.case.split(","):
        race(cases[name](), args.steps, args.rounds)


if __name__ == "__main__":
    main()
