"""Synthetic long-range probes with the sequence length as the knob.

- ``adding-T``: the adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et
  al. 2015 and Arjovsky et al. 2016): T steps of (value in U(0,1), marker); one marker in
  the first half, one in the second; the target is the sum of the two marked values.
  Predicting the mean scores MSE ~ 1/6 (the variance of a sum of two U(0,1)).
- ``copy-T``: the copy/memory task (Hochreiter & Schmidhuber 1997; Arjovsky et al.
  2016): K symbols, a delay of T blanks ending in a delimiter, then K blanks during
  which the model must reproduce the symbols. Chance is 1/num_symbols per symbol.
- ``seq-fashion``: Fashion-MNIST read row by row (T=28) or pixel by pixel (T=784, or
  784/stride), optionally in a fixed permuted order (Le et al. 2015's pMNIST).

Data sets are generated from ``data_seed`` alone (the training seed fixes only the order)
and identified by a hash of the generator's parameters. The trivial baselines in
``baselines`` are computed from the data (predict the training mean / majority), so a
run that "did not learn" is visible beside them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Any

from annotated_types import Ge

from gradbench.data import json_hash
from gradbench.errors import UsageError
from gradbench.options import Count, NonNegativeInt
from gradbench.registry import TASKS
from gradbench.task import (
    Batch,
    DataConfig,
    DatasetId,
    InputSpec,
    MetricSpec,
    epoch_indices,
    split_count,
)

# torch is imported where it is used, not here: `gradbench list tasks` imports this
# module and must not pay torch's import time.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

# Bump when a generator changes what it produces for the same parameters.
GENERATOR_VERSION = 1
SPLIT_SALT = {"train": 0, "test": 1}


def generator_version(params: dict[str, Any]) -> str:
    """Version of a generated data set: a short hash of everything that determines it."""
    return "gen:" + json_hash({"generator": GENERATOR_VERSION, **params})


def split_generator(data_seed: int, split: str) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(data_seed * 1_000_003 + SPLIT_SALT[split])


def check_positive(task: str, **values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise UsageError(f"task {task}: {key} must be >= 1, got {value}")


class TensorTask:
    """A task whose splits are in-memory (inputs, targets) tensors; subclasses add the rest."""

    name: str
    dataset: str
    metrics: tuple[MetricSpec, ...]
    splits: dict[str, tuple[Tensor, Tensor]]
    version: str
    source: str = "synthetic"
    details: dict[str, Any]
    eval_splits: tuple[str, ...] = ("test",)
    baselines: dict[str, float]
    train_defaults: dict[str, Any]
    # How a split is named in its DatasetId (e.g. "train[:1000]" for a subset).
    split_names: dict[str, str] = {}
    # Evaluate on the first N examples of each evaluation split (--eval-limit); None: all.
    eval_limit: int | None = None

    def _count(self, split: str) -> int:
        return split_count(len(self.splits[split][1]), split, self.eval_limit)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        inputs, targets = self.splits[split]
        for index in epoch_indices(self._count(split), batch_size, seed, train=split == "train"):
            yield Batch(inputs[index], targets[index])

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        import torch

        # Real samples from the test split: cheap, and of the right shapes and dtypes.
        inputs, targets = self.splits["test"]
        index = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
        index = index[:batch_size]
        return Batch(inputs[index], targets[index])

    def dataset_id(self, split: str) -> DatasetId:
        name = self.split_names.get(split, split)
        if split != "train" and self.eval_limit is not None:
            name = f"{name}[:{self.eval_limit}]"
        return DatasetId(
            name=self.dataset,
            split=name,
            version=self.version,
            source=self.source,
            num_examples=self._count(split),
            details=dict(self.details),
        )


# ---------------------------------------------------------------- adding problem


def adding_data(count: int, length: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(count, length, 2) inputs [value, marker] and (count,) targets: the marked values' sum."""
    import torch

    values = torch.rand(count, length, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (count,), generator=generator)
    second = torch.randint(half, length, (count,), generator=generator)
    rows = torch.arange(count)
    markers = torch.zeros(count, length)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    targets = values[rows, first] + values[rows, second]
    return torch.stack([values, markers], dim=-1), targets


class AddingProblem(TensorTask):
    metrics = (MetricSpec("test_mse", False),)
    # Adam at 1e-2, batch 64, no clipping. Measured on adding-100 (width 128, seed 0):
    # the GRU leaves the baseline at ~200 steps, the LSTM at ~750 (0.003 by step 800,
    # 0.001 by 1000), the tanh RNN is still at ~0.17 after 2000; at 1e-3 neither gated
    # net had left the plateau after 300 steps.
    train_defaults = {"optimizer": "adam", "lr": 1e-2, "batch_size": 64}

    def __init__(self, length: int, train_size: int, test_size: int, data_seed: int):
        check_positive("adding", train_size=train_size, test_size=test_size)
        if length < 2:
            raise UsageError(f"task adding: length must be >= 2, got {length}")
        self.name = f"adding-{length}"
        self.dataset = "adding"
        self.length = length
        self.details = {"length": length, "data_seed": data_seed}
        self.version = generator_version(
            {
                "task": "adding",
                "length": length,
                "train_size": train_size,
                "test_size": test_size,
                "data_seed": data_seed,
            }
        )
        self.splits = {
            "train": adding_data(train_size, length, split_generator(data_seed, "train")),
            "test": adding_data(test_size, length, split_generator(data_seed, "test")),
        }
        # The best constant predictor: the training targets' mean (~1, MSE ~1/6).
        mean = float(self.splits["train"][1].mean())
        self.baselines = {"test_mse": float(((self.splits["test"][1] - mean) ** 2).mean())}

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="sequence", shape=(self.length, 2), num_outputs=1, target="regression"
        )

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        import torch.nn.functional as F

        return F.mse_loss(output.float().squeeze(-1), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        from gradbench.evaluation import forward

        squared = 0.0
        total = 0
        for batch in self.batches("test", batch_size, 0):
            batch = batch.to(device)
            output = forward(model, batch).float().squeeze(-1)
            squared += float(((output - batch.y) ** 2).sum())
            total += len(batch)
        return {"test_mse": squared / max(1, total)}


@TASKS.register(
    "adding",
    suffix_param="length",
    tags=("synthetic", "sequence"),
    description="Adding problem of length T (adding-100): sum of two marked values; MSE ~0.167",
)
def adding(
    data: DataConfig,
    *,
    length: Annotated[int, Ge(2)] = 100,
    train_size: Count = 20_000,
    test_size: Count = 2_000,
    data_seed: NonNegativeInt = 0,
) -> AddingProblem:
    return AddingProblem(length, train_size, test_size, data_seed)


# ---------------------------------------------------------------- copy task


def copy_data(
    count: int, delay: int, copy_length: int, num_symbols: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Token inputs (count, 2K + delay) and targets (count, K) in 0..num_symbols-1.

    Token 0 is the blank, 1..num_symbols the symbols, num_symbols + 1 the delimiter,
    placed at the last step of the delay: the cue to start reproducing.
    """
    import torch

    symbols = torch.randint(1, num_symbols + 1, (count, copy_length), generator=generator)
    inputs = torch.zeros(count, 2 * copy_length + delay, dtype=torch.long)
    inputs[:, :copy_length] = symbols
    inputs[:, copy_length + delay - 1] = num_symbols + 1
    return inputs, symbols - 1


class CopyTask(TensorTask):
    metrics = (
        MetricSpec("test_accuracy", True),
        MetricSpec("test_sequence_accuracy", True),
        MetricSpec("test_loss", False),
    )
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64}

    def __init__(
        self,
        delay: int,
        copy_length: int,
        num_symbols: int,
        train_size: int,
        test_size: int,
        data_seed: int,
    ):
        check_positive(
            "copy",
            delay=delay,
            copy_length=copy_length,
            train_size=train_size,
            test_size=test_size,
        )
        if num_symbols < 2:
            raise UsageError(f"task copy: num_symbols must be >= 2, got {num_symbols}")
        self.name = f"copy-{delay}"
        self.dataset = "copy"
        self.delay = delay
        self.copy_length = copy_length
        self.num_symbols = num_symbols
        self.details = {
            "delay": delay,
            "copy_length": copy_length,
            "num_symbols": num_symbols,
            "data_seed": data_seed,
        }
        self.version = generator_version(
            {"task": "copy", **self.details, "train_size": train_size, "test_size": test_size}
        )
        self.splits = {
            split: copy_data(
                size, delay, copy_length, num_symbols, split_generator(data_seed, split)
            )
            for split, size in (("train", train_size), ("test", test_size))
        }
        import torch

        train_targets = self.splits["train"][1].flatten()
        test_targets = self.splits["test"][1].flatten()
        counts = torch.bincount(train_targets, minlength=num_symbols).double()
        prior = counts / counts.sum()
        # Chance: always the most frequent training symbol; a memoryless model's best
        # cross-entropy: the training symbol frequencies (~log num_symbols).
        self.baselines = {
            "test_accuracy": float((test_targets == counts.argmax()).double().mean()),
            "test_sequence_accuracy": float(
                (self.splits["test"][1] == counts.argmax()).all(dim=1).double().mean()
            ),
            "test_loss": float(-prior.log()[test_targets].mean()),
        }

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="tokens",
            shape=(2 * self.copy_length + self.delay,),
            num_outputs=self.num_symbols,
            target="per_step_class",
            vocab_size=self.num_symbols + 2,
            output_steps=self.copy_length,
        )

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output.float().reshape(-1, self.num_symbols), batch.y.reshape(-1))

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        import torch.nn.functional as F

        from gradbench.evaluation import forward

        correct = sequences = total = 0
        loss_sum = 0.0
        for batch in self.batches("test", batch_size, 0):
            batch = batch.to(device)
            logits = forward(model, batch).float()
            hits = logits.argmax(dim=-1) == batch.y
            correct += int(hits.sum())
            sequences += int(hits.all(dim=1).sum())
            loss_sum += float(
                F.cross_entropy(
                    logits.reshape(-1, self.num_symbols), batch.y.reshape(-1), reduction="sum"
                )
            )
            total += len(batch)
        symbols = max(1, total * self.copy_length)
        return {
            "test_accuracy": correct / symbols,
            "test_sequence_accuracy": sequences / max(1, total),
            "test_loss": loss_sum / symbols,
        }


@TASKS.register(
    "copy",
    suffix_param="delay",
    tags=("synthetic", "sequence"),
    description="Copy task: reproduce K=10 symbols after a delay of T steps (copy-50); chance 1/8",
)
def copy(
    data: DataConfig,
    *,
    delay: Count = 50,
    copy_length: Count = 10,
    num_symbols: Annotated[int, Ge(2)] = 8,
    train_size: Count = 20_000,
    test_size: Count = 2_000,
    data_seed: NonNegativeInt = 0,
) -> CopyTask:
    return CopyTask(delay, copy_length, num_symbols, train_size, test_size, data_seed)


# ---------------------------------------------------------------- sequential Fashion-MNIST


def sequential_images(images: Tensor, pixels: bool, stride: int, order: Tensor | None) -> Tensor:
    """(N, 1, 28, 28) images -> (N, 28, 28) rows or (N, ceil(784/stride), 1) pixels."""
    count = images.shape[0]
    if pixels:
        steps = images.reshape(count, -1)[:, ::stride].unsqueeze(-1)
    else:
        steps = images.reshape(count, images.shape[-2], images.shape[-1])
    if order is not None:
        steps = steps[:, order]
    return steps.contiguous()


class SequentialImages(TensorTask):
    metrics = (MetricSpec("test_accuracy", True), MetricSpec("test_loss", False))
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64}

    def __init__(
        self, image_task: Any, pixels: bool, stride: int, permute: bool, permute_seed: int
    ):
        check_positive("seq-fashion", stride=stride)
        if stride > 1 and not pixels:
            raise UsageError("task seq-fashion: stride applies to pixels=true only")
        self.name = "seq-fashion"
        self.num_classes = image_task.num_classes
        base = image_task.dataset_id("train")
        self.dataset = base.name
        self.source = base.source
        import torch

        steps = math.ceil(784 / stride) if pixels else 28
        order = None
        if permute:
            order = torch.randperm(steps, generator=torch.Generator().manual_seed(permute_seed))
        variant = ("pixels" + (f"/{stride}" if stride > 1 else "")) if pixels else "rows"
        if permute:
            variant += f"-perm{permute_seed}"
        # The image files' version plus how they are read: a different read is other data.
        self.version = f"{base.version}:{variant}"
        self.details = {"read": variant, "steps": steps}
        self.split_names = {"train": base.split}
        self.splits = {
            split: (sequential_images(images, pixels, stride, order), labels)
            for split, (images, labels) in image_task.splits.items()
        }
        counts = torch.bincount(self.splits["train"][1], minlength=self.num_classes)
        self.baselines = {
            "test_accuracy": float((self.splits["test"][1] == counts.argmax()).double().mean())
        }

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="sequence",
            shape=tuple(self.splits["train"][0].shape[1:]),
            num_outputs=self.num_classes,
        )

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        from gradbench.evaluation import classification_metrics

        return classification_metrics(model, self.batches("test", batch_size, 0), device, "test")


@TASKS.register(
    "seq-fashion",
    aliases=("sequential-fashion-mnist",),
    tags=("image", "sequence"),
    description="Sequential Fashion-MNIST: rows (T=28) or pixels=true (T=784/stride), permute=true",
)
def seq_fashion(
    data: DataConfig,
    *,
    pixels: bool = False,
    stride: Count = 1,
    permute: bool = False,
    permute_seed: NonNegativeInt = 0,
    train_limit: Count | None = None,
) -> SequentialImages:
    from gradbench_tasks.image import fashion_mnist

    # Checked before the images are read: a wrong combination costs no loading time.
    if stride > 1 and not pixels:
        raise UsageError("task seq-fashion: stride applies to pixels=true only")

    return SequentialImages(
        fashion_mnist(data, train_limit=train_limit), pixels, stride, permute, permute_seed
    )
