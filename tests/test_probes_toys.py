"""Toy task and recurrent models shared by the probe tests (plus checks of the toys).

The toy task is in memory and learnable (labels from a fixed random projection), so
the probe tests need no data and run in well under a second each. The recurrent toys
implement ``hidden_sequence`` with explicit cell loops, as the contract asks, so the
probe tests do not depend on gradbench's own sequence models.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.config import TrainConfig
from gradbench.task import Batch, DatasetId, InputSpec, MetricSpec


class ToyTask:
    """Classify random inputs by a fixed random projection; ``shape`` per sample."""

    name = "toy"
    metrics = (MetricSpec("test_loss", False),)

    def __init__(self, shape: tuple[int, ...] = (1, 8, 8), size: int = 256, classes: int = 4):
        generator = torch.Generator().manual_seed(1234)
        self.shape = shape
        self.classes = classes
        self.x = torch.randn((size, *shape), generator=generator)
        projection = torch.randn(math.prod(shape), classes, generator=generator)
        self.y = (self.x.flatten(1) @ projection).argmax(dim=1)
        self.kind = "image" if len(shape) == 3 else "sequence"

    def input_spec(self) -> InputSpec:
        return InputSpec(kind=self.kind, shape=self.shape, num_outputs=self.classes)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        order = torch.randperm(len(self.y), generator=torch.Generator().manual_seed(seed))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            index = order[start : start + batch_size]
            yield Batch(self.x[index], self.y[index])

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict:
        with torch.no_grad():
            return {
                "test_loss": float(self.loss(model(self.x[:64]), Batch(self.x[:64], self.y[:64])))
            }

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        return Batch(self.x[:batch_size], self.y[:batch_size])

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId("toy", split, "1", "synthetic", len(self.y))


class ToyRNN(nn.Module):
    """Cell loop over (B, T, F) inputs; ``cell`` "rnn" (tanh) or "lstm"; reads the last state.

    ``dropout`` and ``batch_norm`` exist so tests can check the probe's extra forward pass
    leaves RNG and running statistics alone.
    """

    def __init__(
        self,
        features: int,
        hidden: int,
        classes: int,
        cell: str = "rnn",
        dropout: float = 0.0,
        batch_norm: bool = False,
    ):
        super().__init__()
        self.cell_kind = cell
        self.cell = nn.RNNCell(features, hidden) if cell == "rnn" else nn.LSTMCell(features, hidden)
        self.hidden = hidden
        self.drop = nn.Dropout(dropout)
        self.norm = nn.BatchNorm1d(hidden) if batch_norm else nn.Identity()
        self.head = nn.Linear(hidden, classes)

    def hidden_sequence(
        self, x: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden)
        states = []
        for t in range(x.shape[1]):
            if self.cell_kind == "rnn":
                h = self.cell(x[:, t], h)
            else:
                h, c = self.cell(x[:, t], (h, c))
            states.append(h)
        return self.head(self.drop(self.norm(h))), states

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self.hidden_sequence(x, lengths)[0]


def config(**overrides) -> TrainConfig:
    """A CPU training config for the toys (small batches, plain SGD unless overridden)."""
    options = dict(
        steps=10, batch_size=16, optimizer="sgd", lr=0.05, device="cpu", eval_batch_size=64
    )
    options.update(overrides)
    return TrainConfig(**options)


def test_toy_rnn_forward_is_its_hidden_sequence_output():
    torch.manual_seed(0)
    model = ToyRNN(3, 5, 4, cell="lstm")
    x = torch.randn(2, 7, 3)
    output, states = model.hidden_sequence(x)
    assert len(states) == 7 and states[0].shape == (2, 5)
    torch.testing.assert_close(model(x), output)


def test_toy_task_is_learnable_and_shaped_as_declared():
    task = ToyTask((6, 3))
    batch = next(task.batches("train", 8, seed=0))
    assert batch.x.shape == (8, 6, 3) and task.input_spec().kind == "sequence"
    assert len(set(task.y.tolist())) > 1  # more than one class present
