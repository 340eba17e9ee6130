"""Shared fixtures: the real data directory, a tiny in-memory task, a scratch results dir.

Tests never touch the repository's ``results/`` or the user's ``~/.cache``: the cache is
one temporary folder per session (so Fashion-MNIST is decompressed once) and the
results directory is a fresh ``tmp_path`` per test.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# OpenMP threads that spin while waiting turn a loaded 2-core machine (parallel jobs, CI
# neighbours) into a 20x slowdown of tiny models; passive waiting costs next to nothing.
# Set before torch is imported, which reads it once.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.evaluation import classification_metrics
from gradbench.task import Batch, DatasetId, InputSpec, MetricSpec, epoch_indices

# Two cores in CI: more threads only contend.
torch.set_num_threads(2)

_SESSION_CACHE = Path(tempfile.mkdtemp(prefix="gradbench-test-cache-"))


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test imports a module that reads it; no test may write to ~/.cache.
    os.environ["GRADBENCH_CACHE"] = str(_SESSION_CACHE)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_CACHE, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Results default to a per-test folder; no stray plugin directory; no progress bars."""
    monkeypatch.setenv("GRADBENCH_CACHE", str(_SESSION_CACHE))
    monkeypatch.setenv("GRADBENCH_RESULTS", str(tmp_path / "default-results"))
    monkeypatch.delenv("GRADBENCH_TASKS_DIR", raising=False)
    monkeypatch.setenv("CI", "1")


@pytest.fixture
def cache_dir() -> Path:
    """The session's data cache (decompressed Fashion-MNIST lives here once warmed)."""
    return _SESSION_CACHE


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data mirror; tests that need it skip only when GRADBENCH_DATA is unset."""
    value = os.environ.get("GRADBENCH_DATA")
    if not value:
        pytest.skip("GRADBENCH_DATA is not set (point it at the data mirror, e.g. ../shared/data)")
    path = Path(value).expanduser().resolve()
    if not (path / "fashion-mnist").is_dir():
        pytest.fail(f"GRADBENCH_DATA={value} has no fashion-mnist/ folder")
    return path


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    return tmp_path / "results"


FASHION_ARCHIVES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


@pytest.fixture
def mirror_copy(data_dir: Path, tmp_path: Path) -> Callable[..., Path]:
    """A private data directory with Fashion-MNIST in a chosen layout.

    Big files are symlinked (no 30 MB copies); ``copy=`` names files to copy for real,
    so a test can damage them without touching the shared mirror.
    """

    def make(layout: str = "fashion-mnist", copy: tuple[str, ...] = ()) -> Path:
        root = tmp_path / "data"
        folder = root / layout
        folder.mkdir(parents=True, exist_ok=True)
        for name in FASHION_ARCHIVES:
            source = data_dir / "fashion-mnist" / name
            if name in copy:
                shutil.copyfile(source, folder / name)
            else:
                (folder / name).symlink_to(source)
        return root

    return make


class FakeTask:
    """A tiny in-memory classification task (Gaussian blobs) that follows the Task protocol.

    ``poison_step`` makes the loss at that training step non-finite ("loss") or keeps the
    loss finite but its gradient NaN ("gradient"), to test divergence handling exactly.
    """

    name = "fake"
    metrics = (MetricSpec("test_accuracy", True), MetricSpec("test_loss", False))

    def __init__(
        self,
        *,
        train_size: int = 64,
        test_size: int = 32,
        shape: tuple[int, ...] = (1, 4, 4),
        classes: int = 3,
        data_seed: int = 0,
        poison_step: int | None = None,
        poison: str = "loss",
    ):
        generator = torch.Generator().manual_seed(data_seed)
        centres = 2.0 * torch.randn(classes, *shape, generator=generator)

        def sample(n: int) -> tuple[Tensor, Tensor]:
            labels = torch.randint(0, classes, (n,), generator=generator)
            noise = 0.5 * torch.randn(n, *shape, generator=generator)
            return centres[labels] + noise, labels

        self.splits = {"train": sample(train_size), "test": sample(test_size)}
        self.shape = shape
        self.classes = classes
        self.poison_step = poison_step
        self.poison = poison
        self.loss_calls = 0

    def input_spec(self) -> InputSpec:
        return InputSpec(kind="image", shape=self.shape, num_outputs=self.classes)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        x, y = self.splits[split]
        for index in epoch_indices(len(y), batch_size, seed, train=split == "train"):
            yield Batch(x[index], y[index])

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        loss = F.cross_entropy(output.float(), batch.y)
        if self.poison_step is not None and self.loss_calls == self.poison_step:
            if self.poison == "loss":
                loss = loss * float("inf")
            else:  # d sqrt(|u|)/du is infinite at u = 0: finite loss, NaN gradient
                loss = loss + 0.0 * (output - output.detach()).abs().sqrt().sum()
        self.loss_calls += 1
        return loss

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        return classification_metrics(model, self.batches("test", batch_size, 0), device, "test")

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        generator = torch.Generator().manual_seed(seed)
        return Batch(
            torch.randn(batch_size, *self.shape, generator=generator),
            torch.randint(0, self.classes, (batch_size,), generator=generator),
        )

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId("fake-blobs", split, "v1", "synthetic", len(self.splits[split][1]))


@pytest.fixture
def make_fake_task() -> Callable[..., FakeTask]:
    """Factory of tiny in-memory tasks: ``make_fake_task(train_size=64, poison_step=3)``."""
    return FakeTask


@pytest.fixture
def restore_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test register tasks, models and plugins without leaking them into others."""
    from gradbench import plugins
    from gradbench.plugins import load_plugins
    from gradbench.registry import MODELS, TASKS

    load_plugins()  # built-ins first, so they are part of the snapshot
    for registry in (TASKS, MODELS):
        monkeypatch.setattr(registry, "_entries", dict(registry._entries))
        monkeypatch.setattr(registry, "_names", dict(registry._names))
    monkeypatch.setattr(plugins, "_loaded", set(plugins._loaded))
