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
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradbench.data import content_hash, json_hash, locate
from gradbench.errors import DataError, UsageError
from gradbench.options import Count
from gradbench.registry import TASKS
from gradbench.task import DataConfig

# torch and the task class are imported by the factories (gradbench.classification):
# `gradbench list tasks` imports this module and must not pay for torch.
if TYPE_CHECKING:
    from torch import Tensor

    from gradbench.classification import TextClassification

SST2_LAYOUTS = ("sst2", "SST-2", "glue/SST-2", "glue_data/SST-2", ".")
SPLITS = ("train", "dev", "test")
HUB_NAME = "stanfordnlp/sst2"
# The Hub revision read: the commit "Convert dataset to Parquet" (data/{train,validation,
# test}-00000-of-00001.parquet; 67,349 / 872 / 1,821 examples). Pinned, so a later
# edit of the Hub repository cannot change what a run trains on unnoticed.
HUB_REVISION = "f817a2b0170bf1822262d6198427436189c07d04"
# What the Hub copy must hold (its dataset card): anything else is not SST-2 as
# published, and is refused rather than trained on.
HUB_SPLIT_SIZES = {"train": 67_349, "dev": 872}
NUM_CLASSES = 2
# Bump when tokenisation, validation or the cache layout changes, so old caches are not
# reused (2: labels checked against the two classes when read).
PREPROCESS_VERSION = 2
LEVELS = ("word", "char")

Texts = dict[str, tuple[list[int], list[str]]]  # split -> (labels, sentences)

_MOVED = set(
    "TextClassification tokenize build_vocab encode pad_ragged macro_f1 PAD UNK SPECIALS".split()
)


def __getattr__(name: str) -> Any:
    # Generic text-classification pieces live in gradbench.classification (torch);
    # older code imports them from here.
    if name in _MOVED:
        import gradbench.classification as classification

        return getattr(classification, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    return datasets


def read_local(files: dict[str, Path], cache_dir: Path) -> Texts:
    """Labels and sentences of each split, read with ``datasets``' CSV builder."""
    datasets = _quiet_datasets()
    texts: Texts = {}
    for split, path in files.items():
        lines = check_tsv(path)
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
        texts[split] = _columns(table, path, lines)
    return texts


def check_tsv(path: Path) -> list[int]:
    """Every data line has the header's number of fields, and there is one; else one
    DataError naming the file and line (before ``datasets`` reads it). Returns the line
    number of each data row (after the header; blank lines are skipped)."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = [(n, line.rstrip("\n")) for n, line in enumerate(handle, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"sst2: cannot read {path} ({error})") from None
    if len(lines) < 2:
        raise DataError(f"sst2: {path} has no examples")
    fields = lines[0][1].count("\t") + 1
    for number, line in lines[1:]:
        if line.count("\t") + 1 != fields:
            raise DataError(
                f"sst2: {path}:{number}: {line.count(chr(9)) + 1} tab-separated fields, "
                f"the header has {fields}"
            )
    return [number for number, _ in lines[1:]]


def _columns(
    table: Any, origin: Any, lines: list[int] | None = None
) -> tuple[list[int], list[str]]:
    """Labels and sentences; a bad label or an empty split is one DataError naming the
    file and line (``lines``: each row's line number, for a local file)."""
    names = table.column_names
    text_columns = [c for c in names if c not in ("label", "idx")]
    if "label" not in names or len(text_columns) != 1:
        raise DataError(f"sst2: {origin} has columns {names}; expected label and one text column")

    def where(row: int) -> str:
        if lines is not None and row < len(lines):
            return f"{origin}:{lines[row]}"
        return f"{origin} row {row + 1}"

    labels = []
    for row, value in enumerate(table["label"]):
        try:
            labels.append(int(value))
        except (TypeError, ValueError):
            raise DataError(f"sst2: {where(row)}: label {value!r} is not an integer") from None
        # GLUE hides the Hub's test labels as -1; those splits are dropped by read_hub.
        if not (0 <= labels[-1] < NUM_CLASSES or (lines is None and labels[-1] == -1)):
            raise DataError(
                f"sst2: {where(row)}: label {labels[-1]} is not 0 or 1 (SST-2 is binary)"
            )
    if not labels:
        raise DataError(f"sst2: {origin} has no examples")
    return labels, [str(s) for s in table[text_columns[0]]]


def read_hub(cache_dir: Path) -> Texts:
    datasets = _quiet_datasets()
    try:
        hub = datasets.load_dataset(
            HUB_NAME, revision=HUB_REVISION, cache_dir=str(cache_dir / "hf")
        )
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
    sizes = {split: len(texts[split][0]) for split in HUB_SPLIT_SIZES}
    if sizes != HUB_SPLIT_SIZES:
        raise DataError(
            f"sst2: {HUB_NAME} has {sizes} examples, not the published {HUB_SPLIT_SIZES}; "
            "refusing a changed data set"
        )
    return texts


def cache_key(version: str, level: str, min_freq: int, max_length: int) -> str:
    return json_hash(
        {
            "v": PREPROCESS_VERSION,
            "data": version,
            "level": level,
            "min_freq": min_freq,
            "max_length": max_length,
        },
        16,
    )


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
        version, source = "hub-sha256:" + json_hash(texts), "hub"
    else:
        where = f" under {data.data_dir}" if data.data_dir else ""
        raise DataError(
            f"sst2: sst2/{{train,dev,test}}.tsv not found{where} and downloads are off "
            "(set --data-dir or GRADBENCH_DATA)"
        )
    import torch

    from gradbench.classification import encode_splits

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
    tensors, vocab = encode_splits(texts, level, min_freq, max_length)
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(vocab_path, lambda p: p.write_text(json.dumps(vocab), encoding="utf-8"))
    _atomic_write(tensor_path, lambda p: torch.save(tensors, p))
    return tensors, vocab, version, source, False


def sst2_task(
    name: str,
    data: DataConfig,
    level: str,
    min_freq: int,
    max_length: int,
    train_limit: int | None,
) -> TextClassification:
    from gradbench.classification import TextClassification

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
        name,
        level,
        tensors,
        vocab,
        version,
        source,
        max_length,
        details,
        train_limit,
        hit,
        dataset="sst2",
        num_classes=NUM_CLASSES,
    )


@TASKS.register(
    "text",
    aliases=("sst2",),
    tags=("text", "sequence"),
    description="SST-2 sentiment (binary), word level; accuracy and macro F1 on dev and test",
)
def sst2_words(
    data: DataConfig,
    *,
    min_freq: Count = 2,
    max_length: Count = 64,
    train_limit: Count | None = None,
) -> TextClassification:
    return sst2_task("text", data, "word", min_freq, max_length, train_limit)


@TASKS.register(
    "text-char",
    aliases=("sst2-char",),
    tags=("text", "sequence"),
    description="SST-2 sentiment, character level: sequences of up to 256 steps (long range)",
)
def sst2_chars(
    data: DataConfig,
    *,
    min_freq: Count = 1,
    max_length: Count = 256,
    train_limit: Count | None = None,
) -> TextClassification:
    return sst2_task("text-char", data, "char", min_freq, max_length, train_limit)
