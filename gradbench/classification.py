"""Classification tasks from your own data, in a few lines: images from tensors or a
torchvision dataset, sentences from labelled text files.

    from gradbench.classification import image_classification_from_torchvision
    from gradbench.registry import TASKS

    @TASKS.register("kmnist", tags=("image",), description="Kuzushiji-MNIST via torchvision")
    def kmnist(data, *, train_limit: int | None = None):
        import torchvision

        root = data.cache_dir / "torchvision"
        make = lambda train: torchvision.datasets.KMNIST(root, train=train, download=data.download)
        return image_classification_from_torchvision(
            "kmnist", make(True), make(False), train_limit=train_limit
        )

The task's ``dataset_id`` carries the data set's own name and a version (a content
hash unless one is given), so its runs get their own leaderboard table. Labels are
checked when the data is loaded: a label outside ``0 .. num_classes-1``, an empty split
or a malformed line is one ``DataError`` naming the file and line. See docs/plugins.md.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.errors import DataError
from gradbench.evaluation import classification_metrics, per_split_metrics
from gradbench.task import Batch, DatasetId, InputSpec, MetricSpec, epoch_indices, split_count

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
LEVELS = ("word", "char")


def tensor_version(*tensors: Tensor, length: int = 12) -> str:
    """A content hash of tensors: the version of a data set that has no release number."""
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()[:length]


def check_labels(
    dataset: str, split: str, labels: Tensor, num_classes: int, where: Sequence[str] | None = None
) -> None:
    """Raise one DataError for an empty split or the first label outside 0..num_classes-1.

    ``where``: for each example, where it came from ("train.tsv:12"), named in the error.
    """
    if len(labels) == 0:
        raise DataError(f"{dataset}: the {split} split is empty")
    bad = ((labels < 0) | (labels >= num_classes)).nonzero()
    if len(bad):
        index = int(bad[0])
        origin = where[index] if where is not None else f"{split} example {index}"
        raise DataError(
            f"{dataset}: {origin}: label {int(labels[index])} is outside the task's "
            f"{num_classes} classes (0..{num_classes - 1})"
        )


# --------------------------------------------------------------------------- images


class ImageClassification:
    """Classify images held in memory as one (N, C, H, W) float tensor per split."""

    metrics = (
        MetricSpec("test_accuracy", True),
        MetricSpec("test_loss", False),
    )

    def __init__(
        self,
        name: str,
        dataset: str,
        train: tuple[Tensor, Tensor],
        test: tuple[Tensor, Tensor],
        source: str,
        version: str,
        num_classes: int,
        train_limit: int | None = None,
    ):
        self.name = name
        self.dataset = dataset
        self.source = source
        self.version = version
        self.num_classes = num_classes
        self.train_limit = train_limit
        # Evaluate on the first N test examples (set from --eval-limit); None: all.
        self.eval_limit: int | None = None
        for split, (images, labels) in (("train", train), ("test", test)):
            if images.dim() != 4 or len(images) != len(labels):
                raise DataError(
                    f"{dataset}: {split} images must be (N, C, H, W) with one label each, "
                    f"got {tuple(images.shape)} and {len(labels)} labels"
                )
            check_labels(dataset, split, labels, num_classes)
        if train[0].shape[1:] != test[0].shape[1:]:
            raise DataError(
                f"{dataset}: train images are {tuple(train[0].shape[1:])}, "
                f"test images {tuple(test[0].shape[1:])}"
            )
        self.splits = {"train": train, "test": test}

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="image",
            shape=tuple(self.splits["train"][0].shape[1:]),
            num_outputs=self.num_classes,
        )

    def _count(self, split: str) -> int:
        return split_count(len(self.splits[split][1]), split, self.eval_limit)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        images, labels = self.splits[split]
        for index in epoch_indices(self._count(split), batch_size, seed, train=split == "train"):
            yield Batch(images[index], labels[index])

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        return classification_metrics(model, self.batches("test", batch_size, 0), device, "test")

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        generator = torch.Generator().manual_seed(seed)
        shape = (batch_size, *self.input_spec().shape)
        return Batch(
            torch.randn(shape, generator=generator),
            torch.randint(0, self.num_classes, (batch_size,), generator=generator),
        )

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId(
            name=self.dataset,
            split=split_name(split, self.train_limit, self.eval_limit),
            version=self.version,
            source=self.source,
            num_examples=self._count(split),
        )


def split_name(split: str, train_limit: int | None, eval_limit: int | None) -> str:
    """ "train[:1000]" for a subset, so a leaderboard never mixes it with the whole split."""
    limit = train_limit if split == "train" else eval_limit
    return f"{split}[:{limit}]" if limit is not None else split


def standardise(
    images: Tensor, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> Tensor:
    """uint8 or float images -> float, per channel zero mean and unit variance.

    Without ``mean``/``std``: the statistics of ``images`` themselves (pass the training
    split's to the test split).
    """
    images = _unit(images)
    if mean is None or std is None:
        mean, std = channel_stats(images)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (images - mean_t) / std_t


def _unit(images: Tensor) -> Tensor:
    """uint8 pixels scaled to 0..1; float images as they are."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def channel_stats(images: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of (N, C, H, W) images scaled to 0..1."""
    images = _unit(images)
    flat = images.transpose(0, 1).reshape(images.shape[1], -1)
    return flat.mean(dim=1).tolist(), flat.std(dim=1).clamp_min(1e-6).tolist()


def _as_nchw(images: Tensor) -> Tensor:
    images = torch.as_tensor(images)
    if images.dim() == 3:  # N, H, W (grey)
        return images.unsqueeze(1)
    if images.dim() == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] not in (1, 3, 4):
        return images.permute(0, 3, 1, 2)  # N, H, W, C (numpy / PIL order)
    return images


def image_classification(
    dataset: str,
    train: tuple[Any, Any],
    test: tuple[Any, Any],
    *,
    name: str | None = None,
    num_classes: int | None = None,
    version: str | None = None,
    source: str = "local",
    train_limit: int | None = None,
) -> ImageClassification:
    """An image task from (images, labels) per split: tensors or arrays, (N, H, W),
    (N, C, H, W) or (N, H, W, C), uint8 or float. Standardised with the training
    split's per-channel statistics; ``num_classes`` defaults to the largest label + 1;
    ``version`` to a content hash of the data."""
    train_x, train_y = _as_nchw(train[0]), torch.as_tensor(train[1]).long()
    test_x, test_y = _as_nchw(test[0]), torch.as_tensor(test[1]).long()
    if train_limit is not None:
        train_x, train_y = train_x[:train_limit], train_y[:train_limit]
    if len(train_y) == 0:
        raise DataError(f"{dataset}: the train split is empty")
    classes = num_classes if num_classes is not None else int(train_y.max()) + 1
    version = version or tensor_version(train_x, train_y, test_x, test_y)
    mean, std = channel_stats(train_x)
    return ImageClassification(
        name or dataset,
        dataset,
        (standardise(train_x, mean, std), train_y),
        (standardise(test_x, mean, std), test_y),
        source,
        version,
        classes,
        train_limit,
    )


def image_classification_from_torchvision(
    dataset: str,
    train_set: Any,
    test_set: Any,
    *,
    name: str | None = None,
    num_classes: int | None = None,
    version: str | None = None,
    source: str = "download",
    train_limit: int | None = None,
) -> ImageClassification:
    """An image task from two torchvision datasets (``.data`` and ``.targets``, as MNIST,
    KMNIST, CIFAR-10 and their kin have; any other dataset is read item by item)."""
    pairs = []
    for split_set in (train_set, test_set):
        if hasattr(split_set, "data") and hasattr(split_set, "targets"):
            pairs.append((torch.as_tensor(split_set.data), torch.as_tensor(split_set.targets)))
        else:
            import numpy as np

            items = [split_set[i] for i in range(len(split_set))]
            images = torch.stack([torch.as_tensor(np.asarray(x)) for x, _ in items])
            pairs.append((images, torch.as_tensor([int(y) for _, y in items])))
    classes = num_classes
    if classes is None and hasattr(train_set, "classes"):
        classes = len(train_set.classes)
    return image_classification(
        dataset,
        pairs[0],
        pairs[1],
        name=name,
        num_classes=classes,
        version=version,
        source=source,
        train_limit=train_limit,
    )


# --------------------------------------------------------------------------- text


def tokenize(sentence: str, level: str) -> list[str]:
    text = sentence.lower()
    return text.split() if level == "word" else list(text)


def build_vocab(sentences: list[str], level: str, min_freq: int) -> list[str]:
    """Training tokens seen ``min_freq`` times or more, most frequent first, after the specials."""
    counts = Counter(token for s in sentences for token in tokenize(s, level))
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    return [*SPECIALS, *kept]


def encode(
    sentences: list[str], level: str, index: dict[str, int], max_length: int
) -> tuple[Tensor, Tensor]:
    """Ragged token ids: a flat int32 tensor and int64 offsets (N + 1), truncated, never empty."""
    ids: list[int] = []
    offsets = [0]
    for sentence in sentences:
        tokens = [index.get(t, UNK) for t in tokenize(sentence, level)][:max_length] or [UNK]
        ids.extend(tokens)
        offsets.append(len(ids))
    return torch.tensor(ids, dtype=torch.int32), torch.tensor(offsets, dtype=torch.int64)


def pad_ragged(tokens: Tensor, offsets: Tensor) -> tuple[Tensor, Tensor]:
    """(N, max length) int32 ids padded with PAD, and the (N,) lengths."""
    lengths = offsets[1:] - offsets[:-1]
    width = int(lengths.max()) if len(lengths) else 1
    padded = torch.full((len(lengths), width), PAD, dtype=torch.int32)
    rows = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
    columns = torch.arange(len(tokens)) - torch.repeat_interleave(offsets[:-1], lengths)
    padded[rows, columns] = tokens
    return padded, lengths


def macro_f1(predictions: Tensor, labels: Tensor, num_classes: int) -> float:
    """Unweighted mean of per-class F1; a class never predicted nor present scores 0."""
    scores = []
    for c in range(num_classes):
        tp = int(((predictions == c) & (labels == c)).sum())
        predicted, actual = int((predictions == c).sum()), int((labels == c).sum())
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / num_classes


def encode_splits(
    texts: dict[str, tuple[list[int], list[str]]], level: str, min_freq: int, max_length: int
) -> tuple[dict[str, dict[str, Tensor]], list[str]]:
    """Token ids per split and the vocabulary (from the training split)."""
    vocab = build_vocab(texts["train"][1], level, min_freq)
    index = {token: i for i, token in enumerate(vocab)}
    tensors = {}
    for split, (labels, sentences) in texts.items():
        tokens, offsets = encode(sentences, level, index, max_length)
        tensors[split] = {
            "tokens": tokens,
            "offsets": offsets,
            "labels": torch.tensor(labels, dtype=torch.int64),
        }
    return tensors, vocab


class TextClassification:
    """Sentence classification over padded token ids held in memory."""

    # Adam at 1e-3, batch 64: the usual setting for small text classifiers; no clipping
    # (a mitigation to switch on, not a default).
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64}

    def __init__(
        self,
        name: str,
        level: str,
        tensors: dict[str, dict[str, Tensor]],
        vocab: list[str],
        version: str,
        source: str,
        max_length: int,
        details: dict[str, Any],
        train_limit: int | None = None,
        cache_hit: bool = False,
        *,
        dataset: str = "sst2",
        num_classes: int = 2,
    ):
        self.name = name
        self.dataset = dataset
        self.num_classes = num_classes
        self.level = level
        self.vocab = vocab
        self.version = version
        self.source = source
        self.max_length = max_length
        self.details = details
        self.train_limit = train_limit
        self.cache_hit = cache_hit
        self.eval_limit: int | None = None
        self.splits: dict[str, tuple[Tensor, Tensor, Tensor]] = {}
        for split, parts in tensors.items():
            padded, lengths = pad_ragged(parts["tokens"], parts["offsets"])
            labels = parts["labels"]
            if split == "train" and train_limit is not None:
                padded, lengths, labels = (
                    padded[:train_limit],
                    lengths[:train_limit],
                    labels[:train_limit],
                )
            check_labels(dataset, split, labels, num_classes)
            self.splits[split] = (padded, lengths, labels)
        self.eval_splits = tuple(s for s in ("dev", "test") if s in self.splits)
        if "train" not in self.splits or not self.eval_splits:
            raise DataError(f"{dataset}: needs a train split and a dev or test split")
        self.metrics = tuple(
            MetricSpec(f"{split}_{metric}", higher)
            for metric, higher in (("accuracy", True), ("f1", True), ("loss", False))
            for split in self.eval_splits
        )
        # Majority class of the training labels, scored on each evaluation split.
        majority = torch.bincount(self.splits["train"][2], minlength=self.num_classes).argmax()
        self.baselines = {
            f"{split}_accuracy": float((self.splits[split][2] == majority).double().mean())
            for split in self.eval_splits
        }

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="tokens",
            shape=(self.max_length,),
            num_outputs=self.num_classes,
            vocab_size=len(self.vocab),
            pad_index=PAD,
        )

    def _batch(self, split: str, index: Tensor | slice) -> Batch:
        padded, lengths, labels = self.splits[split]
        batch_lengths = lengths[index]
        width = int(batch_lengths.max())
        return Batch(padded[index, :width].long(), labels[index], batch_lengths)

    def _count(self, split: str) -> int:
        return split_count(len(self.splits[split][2]), split, self.eval_limit)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        for index in epoch_indices(self._count(split), batch_size, seed, train=split == "train"):
            yield self._batch(split, index)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        metrics = {}
        for split in self.eval_splits:
            metrics |= per_split_metrics(
                model,
                self.batches(split, batch_size, 0),
                device,
                split,
                lambda predicted, actual: macro_f1(predicted, actual, self.num_classes),
            )
        return metrics

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        # Real training samples: padded to different lengths, as real batches are.
        count = len(self.splits["train"][2])
        index = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:batch_size]
        return self._batch("train", index)

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId(
            name=self.dataset,
            split=split_name(split, self.train_limit, self.eval_limit),
            version=self.version,
            source=self.source,
            num_examples=self._count(split),
            details=dict(self.details),
        )


def read_labelled_lines(path: Path, dataset: str) -> tuple[list[int], list[str], list[str]]:
    """``label<TAB>text`` lines (a first line ``label<TAB>...`` is a header): labels,
    texts, and where each came from ("file:line") for error messages."""
    labels: list[int] = []
    texts: list[str] = []
    where: list[str] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{dataset}: cannot read {path} ({error})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        label, sep, text = line.partition("\t")
        if number == 1 and label.strip().lower() == "label":
            continue
        if not sep or "\t" in text:
            fields = len(line.split("\t"))
            raise DataError(
                f"{dataset}: {path}:{number}: expected label<TAB>text, got {fields} field(s)"
            )
        try:
            labels.append(int(label))
        except ValueError:
            raise DataError(
                f"{dataset}: {path}:{number}: label {label!r} is not an integer"
            ) from None
        texts.append(text)
        where.append(f"{path}:{number}")
    return labels, texts, where


def text_classification_from_files(
    dataset: str,
    files: dict[str, Path],
    *,
    name: str | None = None,
    num_classes: int | None = None,
    level: str = "word",
    min_freq: int = 1,
    max_length: int = 64,
    train_limit: int | None = None,
    version: str | None = None,
    source: str = "local",
) -> TextClassification:
    """A text task from ``label<TAB>sentence`` files, one per split: ``train`` and at least
    one of ``dev`` and ``test``. ``num_classes`` defaults to the largest training label
    + 1; every label of every split is checked against it (file and line named)."""
    from gradbench.data import content_hash

    if level not in LEVELS:
        raise DataError(f"{dataset}: level {level!r} is not word or char")
    if "train" not in files:
        raise DataError(f"{dataset}: no train file among {', '.join(files)}")
    read = {split: read_labelled_lines(path, dataset) for split, path in files.items()}
    for split, (labels, _, _) in read.items():
        if not labels:
            raise DataError(f"{dataset}: {files[split]} has no examples")
    classes = num_classes if num_classes is not None else max(read["train"][0]) + 1
    for split, (labels, _, where) in read.items():
        check_labels(dataset, split, torch.tensor(labels), classes, where)
    texts = {split: (labels, sentences) for split, (labels, sentences, _) in read.items()}
    tensors, vocab = encode_splits(texts, level, min_freq, max_length)
    details = {"level": level, "min_freq": min_freq, "max_length": max_length}
    return TextClassification(
        name or dataset,
        level,
        tensors,
        vocab,
        version or "sha256:" + content_hash(files.values()),
        source,
        max_length,
        details | {"vocab_size": len(vocab)},
        train_limit,
        dataset=dataset,
        num_classes=classes,
    )


def data_file(data: Any, *parts: str) -> Path:
    """``data_dir/part/...`` when it exists; otherwise one DataError saying what to set."""
    if data.data_dir is None:
        raise DataError(f"{parts[0]}: no data directory; set --data-dir or GRADBENCH_DATA")
    path = Path(data.data_dir, *parts)
    if not path.is_file():
        raise DataError(f"{parts[0]}: {path} not found")
    return path
