"""The Task protocol: everything the training loop and the model factories may know of a task.

A task is about five things: what its input looks like (``input_spec``), batches of a
split for a seed (``batches``), the loss (``loss``), evaluation returning named metrics
(``evaluate``, described by ``metrics``), and a tiny fake batch for tests (``fake_batch``).
``dataset_id`` says which data a run saw, so a leaderboard never mixes data sources.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

# torch only for annotations here: `gradbench list tasks` imports this module and must
# not pay torch's import time; the functions that use it import it themselves.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


@dataclass(frozen=True)
class InputSpec:
    """What a model factory needs to know to build a model for a task."""

    kind: Literal["image", "sequence", "tokens", "seq2seq", "video"]
    # Per-sample input shape: (C, H, W) for images, (T, F) for real-valued sequences,
    # (T,) for token ids (T is the maximum length; shorter samples are padded).
    # "seq2seq" (translation): vocab_size is the source vocabulary, num_outputs the
    # target's; a batch's x is (B, T, 2): at each position the source id and the
    # teacher-forced decoder input id (BOS + target), both padded with pad_index;
    # lengths are the source lengths, the decoder input's are where its padding starts.
    # "video": (T, C, H, W), T frames of C x H x W; a batch's x is (B, T, C, H, W).
    shape: tuple[int, ...]
    # Number of classes, or of regression outputs.
    num_outputs: int
    # "class": one label per sample; "regression": real targets (MSE);
    # "per_step_class": one label per output step (copy task), output_steps long;
    # "per_frame": num_outputs scores at every frame (CTC, blank included). The model
    # returns (B, T', num_outputs) with T' = ceil(T / k) for an integer time
    # subsampling k (1 unless it has a front end), and a sample of length L fills
    # ceil(L / k) frames.
    target: Literal["class", "regression", "per_step_class", "per_frame"] = "class"
    vocab_size: int | None = None
    pad_index: int | None = None
    output_steps: int | None = None


@dataclass
class Batch:
    x: Tensor
    y: Tensor
    # True lengths of padded token sequences; None when every sample is full length.
    lengths: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        lengths = None if self.lengths is None else self.lengths.to(device)
        return Batch(self.x.to(device), self.y.to(device), lengths)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def epoch_indices(
    count: int, batch_size: int, seed: int, *, train: bool
) -> Iterator[Tensor | slice]:
    """Indices of each batch of one epoch over ``count`` in-memory examples.

    Training: a permutation fixed by ``seed``, without the ragged tail, so every step
    sees a full batch. Evaluation: every example once, in order (slices: no copies).
    """
    import torch

    if train:
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        for start in range(0, count - batch_size + 1, batch_size):
            yield order[start : start + batch_size]
    else:
        for start in range(0, count, batch_size):
            yield slice(start, min(start + batch_size, count))


def split_count(count: int, split: str, eval_limit: int | None) -> int:
    """How many of a split's ``count`` examples an epoch uses: all of the training split,
    at most ``eval_limit`` (``--eval-limit``; None: all) of an evaluation split."""
    return count if split == "train" or eval_limit is None else min(count, eval_limit)


@dataclass(frozen=True)
class DatasetId:
    """Which data a run used: name, split, version or content hash, and where it came from."""

    name: str
    split: str
    version: str
    source: str  # "local", "download", "hub" or "synthetic"
    num_examples: int
    details: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class DataConfig:
    """Where a task finds its data (``data_dir``), caches derived files, and may download."""

    data_dir: Path | None = None
    cache_dir: Path = Path.home() / ".cache" / "gradbench"
    download: bool = True


@runtime_checkable
class Task(Protocol):
    name: str
    # The metrics ``evaluate`` returns; the first is the primary (leaderboard sort) metric.
    metrics: tuple[MetricSpec, ...]

    def input_spec(self) -> InputSpec:
        """Shape of inputs and outputs, for the model factories."""
        ...

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        """One epoch of ``split`` in an order fixed by ``seed`` (train drops the ragged tail)."""
        ...

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        """Scalar training loss of a model output on a batch."""
        ...

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        """Evaluation metrics named as in ``metrics``, plus any extra figures."""
        ...

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        """A tiny batch of the right shapes and dtypes, for tests and FLOP counting."""
        ...

    def dataset_id(self, split: str) -> DatasetId:
        """Identity of the data behind a split."""
        ...


# Optional members of a task and their defaults. The runner reads them through
# ``task_defaults``; ``check_task`` checks their types when a task is loaded.
OPTIONAL_MEMBERS: dict[str, Any] = {
    # Training options the task is usually trained with (``{"optimizer": "adam"}``);
    # command-line options override them.
    "train_defaults": {},
    # Splits ``evaluate`` reports on, recorded with the run (``("dev", "test")``).
    "eval_splits": ("test",),
    # Trivial baselines per metric (predict the mean, the majority class), shown beside
    # the leaderboard so that "did not learn" is visible.
    "baselines": {},
}
REQUIRED_METHODS = ("input_spec", "batches", "loss", "evaluate", "fake_batch", "dataset_id")


def task_member(task: Any, name: str) -> Any:
    """An optional task member (``train_defaults``, ``eval_splits``, ``baselines``)."""
    value = getattr(task, name, None)
    return OPTIONAL_MEMBERS[name] if value is None else value


def check_task(task: Any, name: str) -> None:
    """Raise one ``GradbenchError`` naming the first member ``task`` lacks or gets wrong."""
    from gradbench.errors import GradbenchError

    where = f"task {name} ({type(task).__module__}.{type(task).__qualname__})"
    for member in ("name", "metrics", *REQUIRED_METHODS):
        if not hasattr(task, member):
            raise GradbenchError(f"{where} has no {member!r}; see docs/plugins.md")
    for member in REQUIRED_METHODS:
        if not callable(getattr(task, member)):
            raise GradbenchError(f"{where}: {member!r} is not a method; see docs/plugins.md")
    metrics = task.metrics
    if (
        not isinstance(metrics, (tuple, list))
        or not metrics
        or not all(hasattr(m, "name") and hasattr(m, "higher_is_better") for m in metrics)
    ):
        raise GradbenchError(f"{where}: 'metrics' must be a non-empty tuple of MetricSpec")
    kinds = {
        "train_defaults": (dict, "a dict of training options"),
        "eval_splits": ((tuple, list), "a tuple of split names"),
        "baselines": (dict, "a dict of metric -> value"),
    }
    for member, (kind, wanted) in kinds.items():
        value = getattr(task, member, None)
        if value is not None and not isinstance(value, kind):
            raise GradbenchError(f"{where}: {member!r} must be {wanted}")
