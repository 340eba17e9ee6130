"""Machine translation on Multi30k task 1 (Elliott et al. 2016): ``translation``.

Image captions in English, German, French and Czech, aligned line by line: 29,000
training, 1,014 validation and 1,000 test (``test_2016_flickr``) sentences. The pair is
a task option (``-O src=de -O tgt=en`` by default). The files, ``{split}.{lang}.gz`` as
the upstream repository publishes them under ``data/task1/raw/``, are read from the data
directory (``multi30k/data/task1/raw/``, the mirror's layout, or ``multi30k/``);
missing ones come from the download cache or from the upstream repository at a pinned
commit, verified against their SHA-256. Local copies are versioned by content hash (the
record says whether they match the upstream files), so a modified copy never shares a
leaderboard table with the original.

Text goes through byte-pair encoding learned on the training split only
(``gradbench.subwords``; one vocabulary per language, or ``shared_vocab`` for both);
the tokenizers and the ids are cached under ``cache_dir/multi30k`` keyed by the data's
content hash and the options. Sources end in EOS; the decoder reads BOS + target and
predicts target + EOS. A batch's ``x`` is (B, T, 2), the source and decoder-input ids
at each position, and its ``lengths`` the source lengths (see ``InputSpec``). Training
batches are bucketed by length (pools of 50 batches, sorted, then the batches
shuffled), so padding stays small.

Metrics: teacher-forced validation loss and perplexity, and after decoding the test
sentences (greedy for ``beam=1``, else beam search with ``length_penalty``; at most
``max_ratio`` x source length + 10 tokens), corpus BLEU and chrF from sacreBLEU on
detokenized text against the raw references, with the signatures in the test split's
dataset details; BLEU by source-length bucket (words) as extra figures. ``eval_limit``
decodes only the first N test sentences, for short runs (recorded in the split name).
The trivial baseline beside the table is the score of copying the source sentence.
"""

from __future__ import annotations

import gzip
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradbench import subwords
from gradbench.data import content_hash, file_digest, json_hash, locate, obtain
from gradbench.errors import DataError, UsageError
from gradbench.evaluation import forward
from gradbench.registry import TASKS
from gradbench.task import Batch, DataConfig, DatasetId, InputSpec, MetricSpec

# torch, sacreBLEU and the decoders (torch) are imported where they are used, not here:
# `gradbench list tasks` imports this module and must not pay their import time.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

DATASET = "multi30k"
LANGUAGES = ("en", "de", "fr", "cs")
# Task split -> upstream file stem.
SPLIT_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}
LAYOUTS = ("multi30k/data/task1/raw", "multi30k/task1/raw", "multi30k/raw", "multi30k")
UPSTREAM_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
URL_TEMPLATES = (
    "https://raw.githubusercontent.com/multi30k/dataset/{commit}/data/task1/raw/{name}",
    "https://github.com/multi30k/dataset/raw/{commit}/data/task1/raw/{name}",
)
# SHA-256 of the upstream files at UPSTREAM_COMMIT (upstream publishes no checksums).
SHA256 = {
    "train.cs.gz": "a65adb8b32e3bc664f21ecba7a6e7f6950fd1f405e135f7c312faabdb6255077",
    "train.de.gz": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en.gz": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "train.fr.gz": "622e75069e9f4c577425c4f277116ce66e63a2401c0a2312d90073cb12379a3c",
    "val.cs.gz": "b63226e05c4bd5dd6a42897d74b86a1b9d2c31498252c572b1ea7f7996927fcc",
    "val.de.gz": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en.gz": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "val.fr.gz": "ca3106f1a72390591d25f6c45cb4cd39dec4cd3f123e099748a3ce5256c160e9",
    "test_2016_flickr.cs.gz": "200a4a74cc9560f051924abb9803be008d1908d77f747e9141aeb86dfd2797f1",
    "test_2016_flickr.de.gz": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en.gz": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
    "test_2016_flickr.fr.gz": "6d326e188d259fb1d04ac19eae3af956559b3a0b93d7635e56c90987c40c8b90",
}
PAD, BOS, EOS = subwords.PAD, subwords.BOS, subwords.EOS
# Bump when tokenisation or the cache layout changes, so old caches are not reused.
PREPROCESS_VERSION = 1
# Source-length buckets (words) for BLEU by length: [1, 10), [10, 15), [15, 20), [20, inf).
BUCKET_EDGES = (10, 15, 20)
# Training batches are sorted by length within pools of this many batches.
POOL_BATCHES = 50
# Output tokens allowed beyond max_ratio x source length (short sources need room).
MAX_OUTPUT_MARGIN = 10

Texts = dict[str, tuple[list[str], list[str]]]  # split -> (source lines, target lines)


# ------------------------------------------------------------------------------ data


def file_name(split: str, lang: str) -> str:
    return f"{SPLIT_FILES[split]}.{lang}.gz"


def find_files(data: DataConfig, src: str, tgt: str) -> tuple[dict[str, Path], str]:
    """The six files of a pair, and where they came from ("local" or "download")."""
    paths: dict[str, Path] = {}
    sources = set()
    for split in SPLIT_FILES:
        for lang in (src, tgt):
            name = file_name(split, lang)
            found = locate(data, LAYOUTS, name)
            if found is not None:
                paths[name], where = found, "local"
            else:
                urls = [t.format(commit=UPSTREAM_COMMIT, name=name) for t in URL_TEMPLATES]
                paths[name], where = obtain(
                    data,
                    dataset=DATASET,
                    layouts=LAYOUTS,
                    filename=name,
                    urls=urls,
                    checksum=SHA256[name],
                    algorithm="sha256",
                )
            sources.add(where)
    return paths, "local" if sources == {"local"} else "download"


def read_lines(path: Path) -> list[str]:
    """A gzipped UTF-8 file's lines, without line ends (a final newline ends the last line)."""
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError, EOFError) as error:
        raise DataError(f"{DATASET}: cannot read {path} ({error})") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.rstrip("\r") for line in lines]


def read_pair(paths: dict[str, Path], src: str, tgt: str) -> Texts:
    """Each split's aligned source and target lines; misaligned or empty files raise."""
    texts: Texts = {}
    for split in SPLIT_FILES:
        source = read_lines(paths[file_name(split, src)])
        target = read_lines(paths[file_name(split, tgt)])
        if not source or not target:
            empty = file_name(split, src) if not source else file_name(split, tgt)
            raise DataError(f"{DATASET}: the {split} split is empty ({paths[empty]} has no line)")
        if len(source) != len(target):
            raise DataError(
                f"{DATASET}: {file_name(split, src)} has {len(source):,} lines but "
                f"{file_name(split, tgt)} has {len(target):,}: parallel files must align"
            )
        texts[split] = (source, target)
    return texts


def cache_key(version: str, **options: Any) -> str:
    return json_hash({"v": PREPROCESS_VERSION, "data": version, **options}, 16)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    write(tmp)
    tmp.replace(path)


Ragged = tuple["Tensor", "Tensor"]  # flat int32 ids and int64 offsets (N + 1)


def ragged(sequences: list[list[int]]) -> Ragged:
    import torch

    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.int64)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    flat = torch.tensor([i for s in sequences for i in s], dtype=torch.int32)
    return flat, offsets


def tokenize(
    texts: Texts, cache: Path, key: str, vocab_size: int, shared: bool
) -> tuple[Any, Any, dict[str, tuple[Ragged, Ragged]], bool]:
    """(source tokenizer, target tokenizer, ids per split, cache hit), learned on train only."""
    import torch

    folder = cache / DATASET
    paths = {side: folder / f"{key}.{side}.json" for side in ("src", "tgt")}
    ids_path = folder / f"{key}.ids.pt"
    if all(p.is_file() for p in (*paths.values(), ids_path)):
        try:
            stored = torch.load(ids_path, weights_only=True)
            ids = {
                split: ((v["src"], v["src_offsets"]), (v["tgt"], v["tgt_offsets"]))
                for split, v in stored.items()
            }
            if set(ids) == set(SPLIT_FILES):
                return subwords.load(paths["src"]), subwords.load(paths["tgt"]), ids, True
        except Exception:  # noqa: BLE001 - any unreadable cache is rebuilt below
            pass
    source, target = texts["train"]
    if shared:
        src_tok = tgt_tok = subwords.train_bpe([*source, *target], vocab_size)
    else:
        src_tok = subwords.train_bpe(source, vocab_size)
        tgt_tok = subwords.train_bpe(target, vocab_size)
    ids = {
        split: (ragged(subwords.encode(src_tok, s)), ragged(subwords.encode(tgt_tok, t)))
        for split, (s, t) in texts.items()
    }
    folder.mkdir(parents=True, exist_ok=True)
    for side, tok in (("src", src_tok), ("tgt", tgt_tok)):
        _atomic(paths[side], lambda p, tok=tok: subwords.save(tok, p))
    stored = {
        split: {"src": s[0], "src_offsets": s[1], "tgt": t[0], "tgt_offsets": t[1]}
        for split, (s, t) in ids.items()
    }
    _atomic(ids_path, lambda p: torch.save(stored, p))
    return src_tok, tgt_tok, ids, False


def padded(ids: Ragged, max_length: int, append: int | None) -> tuple[Tensor, Tensor]:
    """(N, longest) int32 ids padded with PAD, each truncated to max_length then ``append``ed."""
    import torch

    flat, offsets = ids
    count = len(offsets) - 1
    lengths = (offsets[1:] - offsets[:-1]).clamp(max=max_length)
    extra = 0 if append is None else 1
    table = torch.full((count, max(1, int(lengths.max()) + extra)), PAD, dtype=torch.int32)
    rows = torch.repeat_interleave(torch.arange(count), lengths)
    kept_starts = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)[:-1]])
    columns = torch.arange(len(rows)) - torch.repeat_interleave(kept_starts, lengths)
    table[rows, columns] = flat[torch.repeat_interleave(offsets[:-1], lengths) + columns]
    if append is not None:
        table[torch.arange(count), lengths] = append
    return table, lengths + extra


def bucketed_indices(lengths: Tensor, batch_size: int, seed: int) -> Iterator[Tensor]:
    """Full batches of similar lengths, in an order fixed by ``seed``; the ragged tail dropped."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=generator)
    order = order[: len(order) // batch_size * batch_size]
    pool = batch_size * POOL_BATCHES
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches += list(chunk.split(batch_size))
    for index in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[index]


def length_buckets(sources: list[str]) -> list[str]:
    """The source-length bucket label of each sentence (by whitespace words)."""
    labels = []
    for sentence in sources:
        words = len(sentence.split())
        low = max([0, *[e for e in BUCKET_EDGES if e <= words]])
        higher = [e for e in BUCKET_EDGES if e > words]
        labels.append(f"{low}_{higher[0] - 1}" if higher else f"{low}_up")
    return labels


# ------------------------------------------------------------------------------ task


class Translation:
    """Teacher-forced training on a language pair; decoding and sacreBLEU for evaluation."""

    # Adam at 1e-3, batch 64: the usual setting for small encoder-decoders; clipping,
    # warm-up and schedules are mitigations to switch on, not defaults.
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "eval_batch_size": 128}
    eval_splits = ("val", "test")
    metrics = (
        MetricSpec("test_bleu", True),
        MetricSpec("test_chrf", True),
        MetricSpec("val_loss", False),
        MetricSpec("val_ppl", False),
    )

    def __init__(
        self,
        texts: Texts,
        src_tok: Any,
        tgt_tok: Any,
        ids: dict[str, tuple[Ragged, Ragged]],
        *,
        src: str,
        tgt: str,
        version: str,
        source: str,
        options: dict[str, Any],
        details: dict[str, Any],
    ):

        from gradbench.decoding import SpecialTokens

        self.name = "translation"
        self.src, self.tgt = src, tgt
        self.texts = texts
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        self.version, self.source = version, source
        self.beam = options["beam"]
        self.length_penalty = options["length_penalty"]
        self.max_ratio = options["max_ratio"]
        self.label_smoothing = options["label_smoothing"]
        self.train_limit = options["train_limit"]
        max_length = options["max_length"]
        self.splits: dict[str, tuple[Tensor, Tensor, Tensor, Tensor]] = {}
        for split, (src_ids, tgt_ids) in ids.items():
            source_table, source_len = padded(src_ids, max_length, EOS)
            target_table, target_len = padded(tgt_ids, max_length, None)
            if split == "train" and self.train_limit is not None:
                limit = self.train_limit
                source_table, source_len = source_table[:limit], source_len[:limit]
                target_table, target_len = target_table[:limit], target_len[:limit]
            self.splits[split] = (source_table, source_len, target_table, target_len)
        longest_source = max(int(s[1].max()) for s in self.splits.values())
        longest_target = max(int(s[3].max()) for s in self.splits.values()) + 1
        self.max_positions = max(longest_target, self.max_output(longest_source) + 1)
        self.special = SpecialTokens(PAD, BOS, EOS)
        self.details = details
        self.eval_limit = options["eval_limit"]

    @property
    def eval_limit(self) -> int | None:
        return self._eval_limit

    @eval_limit.setter
    def eval_limit(self, limit: int | None) -> None:
        """The test sentences scored (-O eval_limit, or --eval-limit after loading), and
        what depends on them: the length buckets and the copy-source baselines."""
        from sacrebleu.metrics import BLEU, CHRF

        self._eval_limit = limit
        everything = len(self.texts["test"][0])
        self.test_count = everything if limit is None else min(everything, limit)
        sources, references = (lines[: self.test_count] for lines in self.texts["test"])
        self.buckets = length_buckets(sources)
        # Copying the source: the score of a system that learned nothing about the target.
        bleu, chrf = BLEU(), CHRF()
        self.baselines = {
            "test_bleu": bleu.corpus_score(sources, [references]).score,
            "test_chrf": chrf.corpus_score(sources, [references]).score,
        }
        self.signatures = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}

    # -- protocol ------------------------------------------------------------------

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="seq2seq",
            shape=(self.max_positions,),
            num_outputs=self.tgt_tok.get_vocab_size(),
            target="per_step_class",
            vocab_size=self.src_tok.get_vocab_size(),
            pad_index=PAD,
            output_steps=self.max_positions,
        )

    def max_output(self, source_length: int | Tensor) -> Any:
        """Most tokens a decoder may produce for a source of this many tokens (EOS included)."""
        import torch

        if isinstance(source_length, torch.Tensor):
            return (source_length.double() * self.max_ratio).ceil().long() + MAX_OUTPUT_MARGIN
        return math.ceil(source_length * self.max_ratio) + MAX_OUTPUT_MARGIN

    def _batch(self, split: str, index: Tensor | slice) -> Batch:
        import torch

        source_table, source_len, target_table, target_len = self.splits[split]
        s_len, t_len = source_len[index], target_len[index]
        s_width, t_width = int(s_len.max()), int(t_len.max()) + 1
        width = max(s_width, t_width)
        batch = len(s_len)
        x = torch.full((batch, width, 2), PAD, dtype=torch.long)
        x[:, :s_width, 0] = source_table[index, :s_width]
        x[:, 0, 1] = BOS
        x[:, 1:t_width, 1] = target_table[index, : t_width - 1]
        y = torch.full((batch, width), PAD, dtype=torch.long)
        y[:, : t_width - 1] = target_table[index, : t_width - 1]
        y[torch.arange(batch), t_len] = EOS
        return Batch(x, y, s_len)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        import torch

        source_len, target_len = self.splits[split][1], self.splits[split][3]
        if split == "train":
            for index in bucketed_indices(source_len + target_len, batch_size, seed):
                yield self._batch(split, index)
            return
        order = torch.argsort(source_len + target_len, stable=True)
        for index in order.split(batch_size):
            yield self._batch(split, index)

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(
            output.float().flatten(0, 1),
            batch.y.flatten(),
            ignore_index=PAD,
            label_smoothing=self.label_smoothing,
        )

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        from sacrebleu.metrics import BLEU, CHRF

        metrics = self.validation_loss(model, device, batch_size)
        started = time.perf_counter()
        hypotheses = self.translate(model, device, batch_size)
        seconds = time.perf_counter() - started
        sources, references = (lines[: self.test_count] for lines in self.texts["test"])
        metrics["test_bleu"] = BLEU().corpus_score(hypotheses, [references]).score
        metrics["test_chrf"] = CHRF().corpus_score(hypotheses, [references]).score
        for label in sorted(set(self.buckets), key=lambda b: int(b.split("_")[0])):
            chosen = [i for i, b in enumerate(self.buckets) if b == label]
            metrics[f"test_bleu_len_{label}"] = (
                BLEU()
                .corpus_score([hypotheses[i] for i in chosen], [[references[i] for i in chosen]])
                .score
            )
        metrics["test_decode_seconds"] = seconds
        metrics["test_sentences_per_second"] = len(hypotheses) / max(seconds, 1e-9)
        return metrics

    def validation_loss(
        self, model: nn.Module, device: torch.device, batch_size: int
    ) -> dict[str, float]:
        """Teacher-forced cross-entropy per target token (no label smoothing) and perplexity."""
        import torch.nn.functional as F

        total, tokens = 0.0, 0
        for batch in self.batches("val", batch_size, 0):
            batch = batch.to(device)
            logits = forward(model, batch).float()
            total += float(
                F.cross_entropy(
                    logits.flatten(0, 1), batch.y.flatten(), ignore_index=PAD, reduction="sum"
                )
            )
            tokens += int((batch.y != PAD).sum())
        loss = total / max(1, tokens)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0))}

    def translate(self, model: nn.Module, device: torch.device, batch_size: int) -> list[str]:
        """Detokenized translations of the (first ``eval_limit``) test sentences, in order."""
        import torch

        from gradbench.decoding import decode

        source_table, source_len = self.splits["test"][0], self.splits["test"][1]
        source_table, source_len = source_table[: self.test_count], source_len[: self.test_count]
        outputs: list[list[int]] = [[] for _ in range(self.test_count)]
        # Sorted by length, so a batch decodes about as many steps as its sentences need.
        order = torch.argsort(source_len, stable=True)
        rows = max(1, batch_size // self.beam)
        for index in order.split(rows):
            lengths = source_len[index]
            src = source_table[index, : int(lengths.max())].long().to(device)
            found = decode(
                model,
                src,
                lengths.to(device),
                self.max_output(lengths),
                self.special,
                self.beam,
                self.length_penalty,
            )
            for row, ids in zip(index.tolist(), found, strict=True):
                outputs[row] = ids
        return subwords.decode(self.tgt_tok, outputs)

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        # Real training pairs of different lengths, as real batches are.
        import torch

        count = len(self.splits["train"][1])
        index = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:batch_size]
        return self._batch("train", index)

    def dataset_id(self, split: str) -> DatasetId:
        name = SPLIT_FILES[split]
        details = dict(self.details)
        if split == "train" and self.train_limit is not None:
            name = f"{name}[:{self.train_limit}]"
        if split == "test":
            if self.test_count < len(self.texts["test"][0]):
                name = f"{name}[:{self.test_count}]"
            details["sacrebleu"] = self.signatures
            details["bucket_sizes"] = {b: self.buckets.count(b) for b in sorted(set(self.buckets))}
            details["decoding"] = {
                "beam": self.beam,
                "length_penalty": self.length_penalty,
                "max_output": f"ceil({self.max_ratio} x source tokens) + {MAX_OUTPUT_MARGIN}",
            }
        return DatasetId(
            name=f"{DATASET}-{self.src}-{self.tgt}",
            split=name,
            version=self.version,
            source=self.source,
            num_examples=len(self.splits[split][1]) if split != "test" else self.test_count,
            details=details,
        )


# --------------------------------------------------------------------- registration


def _number(key: str, value: Any, cast: type) -> Any:
    """A task option as given on the command line (text) or in code, as ``cast``; none -> None."""
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    try:
        return cast(value)
    except (TypeError, ValueError):
        raise UsageError(f"task translation: {key}={value!r} is not a number") from None


def check_options(src: str, tgt: str, **numbers: Any) -> None:
    for side, lang in (("src", src), ("tgt", tgt)):
        if lang not in LANGUAGES:
            raise UsageError(
                f"task translation: {side}={lang!r} is not a Multi30k language; "
                f"choose one of {', '.join(LANGUAGES)}"
            )
    if src == tgt:
        raise UsageError(f"task translation: src and tgt are both {src!r}")
    if numbers["beam"] < 1:
        raise UsageError(
            f"task translation: beam must be >= 1 (1 is greedy), got {numbers['beam']}"
        )
    for key in ("vocab_size", "max_length"):
        if numbers[key] < 8:
            raise UsageError(f"task translation: {key} must be >= 8, got {numbers[key]}")
    for key in ("eval_limit", "train_limit"):
        if numbers[key] is not None and numbers[key] < 1:
            raise UsageError(f"task translation: {key} must be >= 1, got {numbers[key]}")
    if not 0.0 <= numbers["label_smoothing"] < 1.0:
        raise UsageError("task translation: label_smoothing must be in [0, 1)")
    if not numbers["max_ratio"] > 0:
        raise UsageError("task translation: max_ratio must be > 0")


@TASKS.register(
    "translation",
    aliases=("multi30k", "mt"),
    tags=("text", "seq2seq"),
    description="Multi30k translation (de-en by default); BLEU and chrF (sacreBLEU), beam search",
)
def translation(
    data: DataConfig,
    *,
    src: str = "de",
    tgt: str = "en",
    vocab_size: int = 8000,
    shared_vocab: bool = False,
    beam: int = 4,
    length_penalty: float = 1.0,
    max_ratio: float = 1.5,
    label_smoothing: float = 0.0,
    max_length: int = 100,
    eval_limit: int | None = None,
    train_limit: int | None = None,
) -> Translation:
    options = {
        "beam": _number("beam", beam, int),
        "length_penalty": _number("length_penalty", length_penalty, float),
        "max_ratio": _number("max_ratio", max_ratio, float),
        "label_smoothing": _number("label_smoothing", label_smoothing, float),
        "max_length": _number("max_length", max_length, int),
        "vocab_size": _number("vocab_size", vocab_size, int),
        "eval_limit": _number("eval_limit", eval_limit, int),
        "train_limit": _number("train_limit", train_limit, int),
    }
    check_options(str(src), str(tgt), **options)
    shared = str(shared_vocab).lower() in ("true", "1", "yes", "on")
    paths, source = find_files(data, src, tgt)
    texts = read_pair(paths, src, tgt)
    version = "sha256:" + content_hash(paths.values())
    key = cache_key(version, src=src, tgt=tgt, vocab_size=options["vocab_size"], shared=shared)
    src_tok, tgt_tok, ids, _ = tokenize(texts, data.cache_dir, key, options["vocab_size"], shared)
    upstream = all(file_digest(p, "sha256") == SHA256[name] for name, p in paths.items())
    details = {
        "pair": f"{src}-{tgt}",
        "src": src,
        "tgt": tgt,
        "upstream_commit": UPSTREAM_COMMIT if upstream else None,
        "matches_upstream": upstream,
        "tokenizer": "bpe (tokenizers), " + ("shared" if shared else "separate") + " vocabularies",
        "src_vocab_size": src_tok.get_vocab_size(),
        "tgt_vocab_size": tgt_tok.get_vocab_size(),
    }
    return Translation(
        texts,
        src_tok,
        tgt_tok,
        ids,
        src=src,
        tgt=tgt,
        version=version,
        source=source,
        options=options,
        details=details,
    )
