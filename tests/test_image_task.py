"""The Fashion-MNIST task on the real mirror: contents, identity, batches, damaged data."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
import torch
from gradbench_tasks.image import FASHION_FILES, ImageClassification, fashion_mnist
from torch import nn

from gradbench.errors import DataError, UsageError
from gradbench.task import DataConfig, Task


@pytest.fixture(scope="session")
def fashion(data_dir: Path) -> ImageClassification:
    cache = Path(os.environ["GRADBENCH_CACHE"])
    return fashion_mnist(DataConfig(data_dir, cache, download=False))


def load(data_dir: Path, **options) -> ImageClassification:
    cache = Path(os.environ["GRADBENCH_CACHE"])
    return fashion_mnist(DataConfig(data_dir, cache, download=False), **options)


def test_real_mirror_contents(fashion: ImageClassification) -> None:
    assert isinstance(fashion, Task)
    train_x, train_y = fashion.splits["train"]
    test_x, test_y = fashion.splits["test"]
    assert train_x.shape == (60000, 1, 28, 28) and test_x.shape == (10000, 1, 28, 28)
    assert train_x.dtype == torch.float32 and train_y.dtype == torch.int64
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert torch.bincount(train_y).tolist() == [6000] * 10
    assert torch.bincount(test_y).tolist() == [1000] * 10
    # Standardised with the training set's own statistics.
    assert train_x.mean().item() == pytest.approx(0.0, abs=0.01)
    assert train_x.std().item() == pytest.approx(1.0, abs=0.01)
    assert fashion.input_spec().shape == (1, 28, 28) and fashion.input_spec().num_outputs == 10


def test_dataset_identity_is_recorded(fashion: ImageClassification) -> None:
    train = fashion.dataset_id("train")
    assert (train.name, train.split, train.source, train.num_examples) == (
        "fashion-mnist",
        "train",
        "local",
        60000,
    )
    assert train.version == "md5:" + FASHION_FILES["train-images-idx3-ubyte"][1][:12]
    assert fashion.dataset_id("test").split == "test"
    assert fashion.dataset_id("test").num_examples == 10000


def test_train_limit_is_part_of_the_split_name(data_dir: Path) -> None:
    small = load(data_dir, train_limit=100)
    assert small.dataset_id("train").split == "train[:100]"
    assert small.dataset_id("train").num_examples == 100
    assert small.dataset_id("test").num_examples == 10000
    with pytest.raises(UsageError, match="train_limit must be >= 1"):
        load(data_dir, train_limit=0)


def test_train_batches_are_seeded_and_drop_the_ragged_tail(data_dir: Path) -> None:
    task = load(data_dir, train_limit=100)
    batches = list(task.batches("train", 32, seed=1))
    assert [len(b) for b in batches] == [32, 32, 32]
    again = list(task.batches("train", 32, seed=1))
    other = list(task.batches("train", 32, seed=2))
    assert torch.equal(batches[0].y, again[0].y) and torch.equal(batches[0].x, again[0].x)
    assert not torch.equal(batches[0].x, other[0].x)
    seen = torch.cat([b.y for b in batches])
    assert len(seen) == 96  # every example at most once per epoch


def test_test_batches_cover_the_test_set_in_order(fashion: ImageClassification) -> None:
    batches = list(fashion.batches("test", 3000, seed=0))
    assert [len(b) for b in batches] == [3000, 3000, 3000, 1000]
    assert torch.equal(torch.cat([b.y for b in batches]), fashion.splits["test"][1])


class Constant(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], 10)


def test_evaluate_a_constant_classifier(fashion: ImageClassification) -> None:
    metrics = fashion.evaluate(Constant(), torch.device("cpu"), batch_size=2500)
    # argmax of equal logits is class 0: exactly its 1,000 of 10,000 test images.
    assert metrics["test_accuracy"] == pytest.approx(0.1)
    assert metrics["test_loss"] == pytest.approx(torch.log(torch.tensor(10.0)).item(), rel=1e-6)
    assert [m.name for m in fashion.metrics] == ["test_accuracy", "test_loss"]


def test_fake_batch_has_the_task_shapes(fashion: ImageClassification) -> None:
    batch = fashion.fake_batch(batch_size=3, seed=5)
    assert batch.x.shape == (3, 1, 28, 28) and batch.y.shape == (3,)
    assert int(batch.y.max()) < 10
    assert torch.equal(batch.x, fashion.fake_batch(batch_size=3, seed=5).x)


def test_torchvision_layout_is_found(mirror_copy) -> None:
    root = mirror_copy("FashionMNIST/raw")
    task = load(root, train_limit=10)
    assert task.dataset_id("train").source == "local"
    assert task.dataset_id("train").version.startswith("md5:")


def one_line_data_error(root: Path) -> str:
    with pytest.raises(DataError) as caught:
        load(root, train_limit=10)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_truncated_archive_is_a_data_error_even_with_a_warm_cache(mirror_copy, fashion) -> None:
    # `fashion` has filled the session cache from the good mirror first.
    root = mirror_copy(copy=("t10k-labels-idx1-ubyte.gz",))
    target = root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:2000])
    message = one_line_data_error(root)
    assert "t10k-labels-idx1-ubyte.gz is corrupt" in message


def test_flipped_bytes_are_a_data_error(mirror_copy, fashion) -> None:
    root = mirror_copy(copy=("train-labels-idx1-ubyte.gz",))
    target = root / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    data = bytearray(target.read_bytes())
    for offset in range(1000, 1010):
        data[offset] ^= 0xFF
    target.write_bytes(bytes(data))
    assert "train-labels-idx1-ubyte.gz is corrupt" in one_line_data_error(root)


def test_a_valid_archive_with_other_content_is_a_data_error(mirror_copy, fashion) -> None:
    # Well-formed gzip, wrong data: only the content checksum can tell.
    root = mirror_copy(copy=("t10k-labels-idx1-ubyte.gz",))
    target = root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(target.read_bytes()))
    content[-1] = (content[-1] + 1) % 10
    target.write_bytes(gzip.compress(bytes(content)))
    assert "content md5" in one_line_data_error(root)


def test_repairing_the_mirror_makes_it_usable_again(mirror_copy, fashion, data_dir) -> None:
    root = mirror_copy(copy=("t10k-labels-idx1-ubyte.gz",))
    target = root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    good = target.read_bytes()
    target.write_bytes(good[:100])
    one_line_data_error(root)
    target.write_bytes(good)
    assert load(root, train_limit=10).dataset_id("test").num_examples == 10000


def test_a_damaged_cache_is_rebuilt_from_the_mirror(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    config = DataConfig(data_dir, cache, download=False)
    fashion_mnist(config, train_limit=10)
    cached = cache / "fashion-mnist" / "raw" / "t10k-labels-idx1-ubyte"
    cached.write_bytes(b"garbage")
    task = fashion_mnist(config, train_limit=10)
    assert torch.bincount(task.splits["test"][1]).tolist() == [1000] * 10


def test_no_data_and_no_downloads_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    config = DataConfig(tmp_path / "empty", tmp_path / "cache", download=False)
    with pytest.raises(DataError, match="fashion-mnist: .* not found under .* downloads are off"):
        fashion_mnist(config)


def test_a_warm_cache_serves_without_the_data_directory(data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fashion_mnist(DataConfig(data_dir, cache, download=False), train_limit=10)
    offline = fashion_mnist(DataConfig(None, cache, download=False), train_limit=10)
    # The bytes are verified by content checksum and still credited to where they came from.
    assert offline.dataset_id("train").source == "local"
    assert offline.dataset_id("test").num_examples == 10000


def test_an_image_task_from_arrays_names_its_data_set_and_checks_labels() -> None:
    import numpy as np

    from gradbench.classification import image_classification

    generator = np.random.default_rng(0)
    train = (generator.integers(0, 255, (20, 6, 6, 3), dtype=np.uint8), np.arange(20) % 4)
    test = (generator.integers(0, 255, (8, 6, 6, 3), dtype=np.uint8), np.arange(8) % 4)
    task = image_classification("tiles", train, test)
    assert isinstance(task, Task)
    assert task.input_spec().shape == (3, 6, 6) and task.num_classes == 4
    ident = task.dataset_id("train")
    assert (ident.name, ident.split, ident.num_examples) == ("tiles", "train", 20)
    assert ident.version.startswith("sha256:")
    # Standardised with the training split's statistics.
    assert abs(float(task.splits["train"][0].mean())) < 1e-4
    assert image_classification("tiles", train, test).version == ident.version
    task.eval_limit = 5
    assert task.dataset_id("test").split == "test[:5]"
    assert sum(len(b) for b in task.batches("test", 2, 0)) == 5
    bad = (test[0], np.array([0, 1, 2, 3, 0, 1, 2, 9]))
    with pytest.raises(DataError, match="label 9 is outside the task's 4 classes"):
        image_classification("tiles", train, bad)
    with pytest.raises(DataError, match="the train split is empty"):
        image_classification("tiles", (train[0][:0], train[1][:0]), test)


def test_an_image_task_from_a_torchvision_style_dataset() -> None:
    from gradbench.classification import image_classification_from_torchvision

    class Fake:  # what MNIST-like torchvision datasets offer
        def __init__(self, n: int):
            self.data = torch.randint(0, 255, (n, 5, 5), dtype=torch.uint8)
            self.targets = torch.arange(n) % 3
            self.classes = ["a", "b", "c"]

    class ItemsOnly:  # any other dataset: read item by item
        def __init__(self, n: int):
            self.items = [(torch.rand(1, 5, 5), i % 3) for i in range(n)]

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int):
            return self.items[i]

    task = image_classification_from_torchvision("fake", Fake(12), ItemsOnly(6), train_limit=9)
    assert task.num_classes == 3 and task.input_spec().shape == (1, 5, 5)
    assert task.dataset_id("train").split == "train[:9]"
    assert task.dataset_id("train").num_examples == 9 and task.dataset_id("test").num_examples == 6


def test_a_failed_torchvision_download_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import urllib.error

    import torchvision

    from gradbench.registry import TASKS

    def unreachable(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(torchvision.datasets, "MNIST", unreachable)
    with pytest.raises(DataError) as raised:
        TASKS.create("mnist", data=DataConfig(None, tmp_path / "cache", download=True))
    assert "mnist: not in" in str(raised.value) and "\n" not in str(raised.value)
