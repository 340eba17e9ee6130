"""Subword vocabularies: byte-pair encoding (Sennrich et al. 2016) with Hugging Face ``tokenizers``.

Set up as SentencePiece does it: NFKC normalisation, whitespace kept as the ``▁`` marker
(``Metaspace``), so decoding a sequence of ids gives back the text (detokenized, as
sacreBLEU wants it) without language-specific rules. The special tokens come first:
``<pad>`` = 0, ``<unk>`` = 1, ``<s>`` = 2 (BOS), ``</s>`` = 3 (EOS).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

# tokenizers is imported where it is used: the translation task imports this module, and
# `gradbench list tasks` imports the tasks.
if TYPE_CHECKING:
    from tokenizers import Tokenizer

SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
PAD, UNK, BOS, EOS = range(4)


def train_bpe(lines: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A BPE tokenizer learned from ``lines`` (the training split only), ``vocab_size`` at most."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIALS),
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, lines: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(lines, add_special_tokens=False)]


def decode(tokenizer: Tokenizer, ids: list[list[int]]) -> list[str]:
    return tokenizer.decode_batch(ids, skip_special_tokens=True)


def save(tokenizer: Tokenizer, path: Path) -> None:
    tokenizer.save(str(path))


def load(path: Path) -> Tokenizer:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))
