"""SST-2 sentiment classification at the word level (``text``) and character level (``text-char``).

The data is the binary Stanford Sentiment Treebank as in GLUE: 67,349 training phrases,
872 dev and 1,821 test sentences. It is read through Hugging Face ``datasets`` from the
TSV files in the data directory (``sst2/{train,dev,test}.tsv`` with a header row; the
mirror's train header is ``label<TAB>sentence``, dev's and test's ``label<TAB>content``),
or, with no local copy and downloads allowed, from the Hub (``stanfordnlp/sst2``; its
test labels are hidden, so only dev is evaluated then).

Preprocessing: lowercase; words by whitespace split (SST-2 is already tokenised) or
single characters. The vocabulary comes from the training split: tokens seen at least
``min_freq`` times, then ``<pad>`` = 0 and ``<unk>`` = 1. Sequences longer than
``max_length`` are truncated at the end (word level, 64: nothing in SST-2 is longer;
character level, 256: 17 training phrases of 67,349, no dev or test sentence). The token
ids are cached under ``cache_dir/sst2`` keyed by the files' content hash and the options,
as plain tensors (``torch.save``) and a JSON vocabulary, and reused on the next load.

Batches are padded to their own longest sample, with ``lengths``, so the short
training phrases (9.4 words on average) cost no more than they are.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.data import content_hash, locate
from gradbench.errors import DataError, UsageError
from gradbench.evaluation import forward
from gradbench.registry import TASKS
from gradbench.task import Batch, DataConfig, DatasetId, InputSpec, MetricSpec, epoch_indices

SST2_LAYOUTS = ("sst2", "SST-2", "glue/SST-2", "glue_data/SST-2", ".")
SPLITS = ("train", "dev", "test")
HUB_NAME = "stanfordnlp/sst2"
PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
# Bump when tokenisation or the cache layout changes, so old caches are not reused.
PREPROCESS_VERSION = 1
LEVELS = ("word", "char")

Texts = dict[str, tuple[list[int], list[str]]]  # split -> (labels, sentences)


def find_local(data: DataConfig) -> dict[str, Path] | None:
    """The three TSV files from one layout of the data directory, or None."""
    for layout in SST2_LAYOUTS:
        files = {s: locate(data, (layout,), f"{s}.tsv") for s in SPLITS}
        if all(files.values()):
            return files  # type: ignore[return-value]
    return None


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


def read_local(files: dict[str, Path], cache_dir: Path) -> Texts:
    """Labels and sentences of each split, read with ``datasets``' CSV builder."""
    datasets = _quiet_datasets()
    texts: Texts = {}
    for split, path in files.items():
        try:
            table = datasets.load_dataset(
                "csv",
                data_files=str(path),
                split="train",
                delimiter="\t",
                # Sentences hold quote characters; "null" and "nan" are words here.
                quoting=csv.QUOTE_NONE,
                keep_default_na=False,
                cache_dir=str(cache_dir / "hf"),
            )
        except Exception as error:  # datasets raises many types; all mean "unreadable"
            raise DataError(f"sst2: cannot read {path} ({type(error).__name__}: {error})") from None
        texts[split] = _columns(table, path)
    return texts


def _columns(table: Any, origin: Any) -> tuple[list[int], list[str]]:
    names = table.column_names
    text_columns = [c for c in names if c not in ("label", "idx")]
    if "label" not in names or len(text_columns) != 1:
        raise DataError(f"sst2: {origin} has columns {names}; expected label and one text column")
    try:
        labels = [int(v) for v in table["label"]]
    except (TypeError, ValueError) as error:
        raise DataError(f"sst2: {origin} has a non-integer label ({error})") from None
    return labels, [str(s) for s in table[text_columns[0]]]


def read_hub(cache_dir: Path) -> Texts:
    datasets = _quiet_datasets()
    try:
        hub = datasets.load_dataset(HUB_NAME, cache_dir=str(cache_dir / "hf"))
    except Exception as error:
        raise DataError(
            f"sst2: no local copy and {HUB_NAME} could not be loaded from the Hub "
            f"({type(error).__name__}); point --data-dir at a folder with sst2/*.tsv"
        ) from None
    texts: Texts = {}
    for split, hub_split in (("train", "train"), ("dev", "validation"), ("test", "test")):
        if hub_split in hub:
            labels, sentences = _columns(hub[hub_split], f"{HUB_NAME}[{hub_split}]")
            if all(label >= 0 for label in labels):  # GLUE hides test labels as -1
                texts[split] = (labels, sentences)
    if "train" not in texts or "dev" not in texts:
        raise DataError(f"sst2: {HUB_NAME} lacks a labelled train or validation split")
    return texts


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


def cache_key(version: str, level: str, min_freq: int, max_length: int) -> str:
    text = json.dumps(
        {
            "v": PREPROCESS_VERSION,
            "data": version,
            "level": level,
            "min_freq": min_freq,
            "max_length": max_length,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    write(tmp)
    tmp.replace(path)


def load_preprocessed(
    data: DataConfig, level: str, min_freq: int, max_length: int
) -> tuple[dict[str, dict[str, Tensor]], list[str], str, str, bool]:
    """(tensors per split, vocabulary, version, source, cache hit)."""
    files = find_local(data)
    texts: Texts | None = None
    if files is not None:
        version, source = "sha256:" + content_hash(files.values()), "local"
    elif data.download:
        texts = read_hub(data.cache_dir)
        digest = hashlib.sha256(json.dumps(texts, sort_keys=True).encode()).hexdigest()[:12]
        version, source = "hub-sha256:" + digest, "hub"
    else:
        where = f" under {data.data_dir}" if data.data_dir else ""
        raise DataError(
            f"sst2: sst2/{{train,dev,test}}.tsv not found{where} and downloads are off "
            "(set --data-dir or GRADBENCH_DATA)"
        )
    folder = data.cache_dir / "sst2"
    stem = f"{level}-{cache_key(version, level, min_freq, max_length)}"
    tensor_path, vocab_path = folder / f"{stem}.pt", folder / f"{stem}.vocab.json"
    if tensor_path.is_file() and vocab_path.is_file():
        try:
            tensors = torch.load(tensor_path, weights_only=True)
            vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
            return tensors, vocab, version, source, True
        except (OSError, RuntimeError, ValueError):
            pass  # a damaged cache is rebuilt below
    if texts is None:
        assert files is not None
        texts = read_local(files, data.cache_dir)
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
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(vocab_path, lambda p: p.write_text(json.dumps(vocab), encoding="utf-8"))
    _atomic_write(tensor_path, lambda p: torch.save(tensors, p))
    return tensors, vocab, version, source, False


def macro_f1(predictions: Tensor, labels: Tensor, num_classes: int) -> float:
    scores = []
    for c in range(num_classes):
        tp = int(((predictions == c) & (labels == c)).sum())
        predicted, actual = int((predictions == c).sum()), int((labels == c).sum())
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / num_classes


class TextClassification:
    """Sentence classification over padded token ids held in memory."""

    # Adam at 1e-3, batch 64: the usual setting for small text classifiers; no clipping
    # (a mitigation to switch on, not a default).
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64}
    num_classes = 2

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
    ):
        self.name = name
        self.level = level
        self.vocab = vocab
        self.version = version
        self.source = source
        self.max_length = max_length
        self.details = details
        self.train_limit = train_limit
        self.cache_hit = cache_hit
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
            self.splits[split] = (padded, lengths, labels)
        self.eval_splits = tuple(s for s in ("dev", "test") if s in self.splits)
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

    def _batch(self, split: str, index: Tensor) -> Batch:
        padded, lengths, labels = self.splits[split]
        batch_lengths = lengths[index]
        width = int(batch_lengths.max())
        return Batch(padded[index, :width].long(), labels[index], batch_lengths)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        count = len(self.splits[split][2])
        for index in epoch_indices(count, batch_size, seed, train=split == "train"):
            yield self._batch(split, index)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        metrics = {}
        for split in self.eval_splits:
            predictions, labels = [], []
            loss_sum = 0.0
            for batch in self.batches(split, batch_size, 0):
                batch = batch.to(device)
                logits = forward(model, batch).float()
                loss_sum += float(F.cross_entropy(logits, batch.y, reduction="sum"))
                predictions.append(logits.argmax(dim=-1).cpu())
                labels.append(batch.y.cpu())
            predicted, actual = torch.cat(predictions), torch.cat(labels)
            metrics[f"{split}_accuracy"] = float((predicted == actual).double().mean())
            metrics[f"{split}_f1"] = macro_f1(predicted, actual, self.num_classes)
            metrics[f"{split}_loss"] = loss_sum / len(actual)
        return metrics

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        # Real training samples: padded to different lengths, as real batches are.
        count = len(self.splits["train"][2])
        index = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:batch_size]
        return self._batch("train", index)

    def dataset_id(self, split: str) -> DatasetId:
        name = split
        if split == "train" and self.train_limit is not None:
            name = f"train[:{self.train_limit}]"
        return DatasetId(
            name="sst2",
            split=name,
            version=self.version,
            source=self.source,
            num_examples=len(self.splits[split][2]),
            details=dict(self.details),
        )


def sst2_task(
    name: str,
    data: DataConfig,
    level: str,
    min_freq: int,
    max_length: int,
    train_limit: int | None,
) -> TextClassification:
    if level not in LEVELS:
        raise UsageError(f"task {name}: level {level!r} is not word or char")
    if min_freq < 1 or max_length < 1:
        raise UsageError(f"task {name}: min_freq and max_length must be >= 1")
    if train_limit is not None and train_limit < 1:
        raise UsageError(f"task {name}: train_limit must be >= 1, got {train_limit}")
    tensors, vocab, version, source, hit = load_preprocessed(data, level, min_freq, max_length)
    details = {
        "level": level,
        "min_freq": min_freq,
        "max_length": max_length,
        "vocab_size": len(vocab),
    }
    return TextClassification(
        name, level, tensors, vocab, version, source, max_length, details, train_limit, hit
    )


@TASKS.register(
    "text",
    aliases=("sst2",),
    tags=("text", "sequence"),
    description="SST-2 sentiment (binary), word level; accuracy and macro F1 on dev and test",
)
def sst2_words(
    data: DataConfig, *, min_freq: int = 2, max_length: int = 64, train_limit: int | None = None
) -> TextClassification:
    return sst2_task("text", data, "word", min_freq, max_length, train_limit)


@TASKS.register(
    "text-char",
    aliases=("sst2-char",),
    tags=("text", "sequence"),
    description="SST-2 sentiment, character level: sequences of up to 256 steps (long range)",
)
def sst2_chars(
    data: DataConfig, *, min_freq: int = 1, max_length: int = 256, train_limit: int | None = None
) -> TextClassification:
    return sst2_task("text-char", data, "char", min_freq, max_length, train_limit)
