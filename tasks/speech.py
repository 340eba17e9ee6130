"""Spoken digits on real audio (FSDD): isolated (``speech-digits``) and connected digit strings
(``speech-connected``).

The Free Spoken Digit Dataset: 3,000 WAV clips, 8 kHz mono, six speakers saying each
digit 50 times, named ``{digit}_{speaker}_{take}.wav``. It is found in the data
directory (``fsdd/recordings/`` as in the upstream repository), else in the download
cache, else downloaded as the upstream repository's archive at the pinned commit and
checked against the pinned content hash of its clips (GitHub's archives carry no
published checksum, and re-compression could change the archive's bytes but not the
clips'). The version in every record is the content hash of the clips actually read.

Splits: the upstream one (takes 0-4 of every speaker and digit are the test set, 5-49
train) or, with ``-O test_speaker=NAME``, one speaker held out entirely (all their clips
test, everyone else's train).

Features (``gradbench.audio``): 40 log-mel bands, 25 ms windows every 10 ms, cached per
content hash and options; standardised per band with the training frames' mean and std.
``-O spec_augment=true`` masks one band range (up to ``freq_mask`` bands) and one time
range (up to ``time_mask`` frames) of every training example (Park et al. 2019), drawn
from the batch's own seed so training stays deterministic.

``speech-connected`` builds strings of K digits (``-O digits=3-7``) by concatenating
clips of one speaker from one split, with random silent gaps (``-O gap_ms=50-250``)
between them: train strings from train clips only, test strings from test clips only,
both fixed by ``data_seed``. Strings run to a few hundred frames (at the defaults the
median test string has 266, the longest 607). Models emit per-frame scores over blank +
10 digits, trained with CTC (``torch.nn.functional.ctc_loss``) and decoded greedily
(best path, repeats merged, blanks dropped); WER and CER come from torchmetrics on the
spelled transcripts ("three one four").
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradbench.audio import (
    FeatureBank,
    FeatureOptions,
    cached_bank,
    clip_features,
    feature_transform,
)
from gradbench.data import content_hash, download, fetch_missing, json_hash
from gradbench.errors import DataError, UsageError
from gradbench.evaluation import forward, per_split_metrics
from gradbench.registry import TASKS
from gradbench.task import Batch, DataConfig, DatasetId, InputSpec, MetricSpec, epoch_indices

# torch is imported where it is used, not here: `gradbench list tasks` imports this
# module and must not pay torch's import time.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

FSDD_RATE = 8000
FSDD_REPO = "Jakobovski/free-spoken-digit-dataset"
# The commit the shared mirror was taken from (its SOURCE_COMMIT file), and the sha256
# content hash (``gradbench.data.content_hash``: sorted names and bytes) of the 3,000
# clips in its recordings/ folder.
FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_CLIPS_SHA256 = "45a9b976ba3397a2fd5c70a9f2e43c34f442a3a6be47392ecfc41174b678f37e"
FSDD_ARCHIVE_URLS = (f"https://github.com/{FSDD_REPO}/archive/{FSDD_COMMIT}.tar.gz",)
FSDD_LAYOUTS = ("fsdd/recordings", "free-spoken-digit-dataset/recordings", "fsdd", "recordings")
# Upstream split: takes 0-4 of every speaker and digit are the test set.
FSDD_TEST_TAKES = 5
CLIP_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
BLANK = 0  # CTC blank; digit d is class d + 1


# ---------------------------------------------------------------- finding the clips


def wav_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())


def find_fsdd(data: DataConfig) -> tuple[Path, str]:
    """(folder of the clips, "local" or "download"): data directory, cache, then download."""
    if data.data_dir is not None:
        for layout in FSDD_LAYOUTS:
            folder = data.data_dir / layout
            if folder.is_dir() and (layout != "fsdd" or not (folder / "recordings").is_dir()):
                if any(folder.glob("*.wav")):
                    return folder, "local"
                if layout == FSDD_LAYOUTS[0]:
                    raise DataError(f"fsdd: {folder} holds no .wav files")
    cached = data.cache_dir / "downloads" / "fsdd" / FSDD_COMMIT / "recordings"
    if (cached.parent / "VERIFIED").is_file():
        return cached, "download"
    fetched = fetch_missing(
        data,
        "fsdd",
        "fsdd/recordings/*.wav",
        lambda: fetch_fsdd(FSDD_ARCHIVE_URLS, cached.parent, FSDD_CLIPS_SHA256),
    )
    return fetched, "download"


def fetch_fsdd(urls: tuple[str, ...], dest: Path, clips_sha256: str) -> Path:
    """Download the repository archive, keep its recordings/*.wav, verify their content hash.

    The clips land in ``dest/recordings`` only once verified (a ``VERIFIED`` stamp says
    so); a mismatch removes them and raises DataError.
    """
    dest.mkdir(parents=True, exist_ok=True)
    archive = download(urls, dest / "archive.tar.gz", None)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".recordings-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if member.isfile() and len(parts) >= 2 and parts[-2] == "recordings":
                    if CLIP_NAME.match(parts[-1]):
                        source = tar.extractfile(member)
                        assert source is not None
                        with source, open(staging / parts[-1], "wb") as out:
                            shutil.copyfileobj(source, out)
    except (tarfile.TarError, OSError, EOFError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise DataError(f"fsdd: {archive} is not a readable archive ({error})") from None
    actual = content_hash(wav_files(staging), length=64)
    if actual != clips_sha256:
        shutil.rmtree(staging, ignore_errors=True)
        archive.unlink(missing_ok=True)
        raise DataError(
            f"fsdd: the downloaded clips' sha256 {actual[:16]}... does not match the "
            f"pinned {clips_sha256[:16]}... of commit {FSDD_COMMIT[:12]}"
        )
    target = dest / "recordings"
    shutil.rmtree(target, ignore_errors=True)
    staging.replace(target)
    (dest / "VERIFIED").write_text(clips_sha256 + "\n")
    archive.unlink(missing_ok=True)
    return target


@dataclass
class Clips:
    """Every clip's features (standardised later), digit, speaker and take, plus identity."""

    bank: FeatureBank
    digits: Tensor
    speakers: list[str]
    takes: Tensor
    version: str
    source: str
    folder: Path
    cache_hit: bool


def load_fsdd(data: DataConfig, options: FeatureOptions) -> Clips:
    import torch

    folder, source = find_fsdd(data)
    paths = wav_files(folder)
    parsed = []
    for path in paths:
        match = CLIP_NAME.match(path.name)
        if match is None:
            raise DataError(f"fsdd: {path} is not named {{digit}}_{{speaker}}_{{take}}.wav")
        parsed.append((int(match[1]), match[2], int(match[3])))
    full_hash = content_hash(paths, length=64)
    bank, hit = cached_bank(data.cache_dir, "fsdd", full_hash, paths, FSDD_RATE, options)
    return Clips(
        bank=bank,
        digits=torch.tensor([p[0] for p in parsed]),
        speakers=[p[1] for p in parsed],
        takes=torch.tensor([p[2] for p in parsed]),
        version="sha256:" + full_hash[:12],
        source=source,
        folder=folder,
        cache_hit=hit,
    )


def fsdd_split(clips: Clips, test_speaker: str | None, task: str) -> dict[str, Tensor]:
    """Clip indices of train and test: upstream takes, or one speaker held out."""
    import torch

    if test_speaker is None:
        test = clips.takes < FSDD_TEST_TAKES
    else:
        known = sorted(set(clips.speakers))
        if test_speaker not in known:
            raise UsageError(
                f"task {task}: test_speaker={test_speaker!r} is not one of {', '.join(known)}"
            )
        test = torch.tensor([s == test_speaker for s in clips.speakers])
    split = {"train": torch.nonzero(~test).squeeze(1), "test": torch.nonzero(test).squeeze(1)}
    for name, index in split.items():
        if len(index) == 0:
            raise DataError(f"task {task}: the {name} split of {clips.folder} is empty")
    return split


def standardise(bank: FeatureBank, train_clips: Tensor) -> tuple[FeatureBank, Tensor, Tensor]:
    """The bank with every band at zero mean, unit variance over the training clips' frames."""
    import torch

    lengths = bank.lengths
    owner = torch.repeat_interleave(torch.arange(len(bank)), lengths)
    is_train = torch.zeros(len(bank), dtype=torch.bool)
    is_train[train_clips] = True
    train_frames = bank.frames[is_train[owner]]
    mean = train_frames.mean(dim=0)
    std = train_frames.std(dim=0).clamp(min=1e-5)
    return FeatureBank((bank.frames - mean) / std, bank.offsets), mean, std


# ---------------------------------------------------------------- shared batching


@dataclass(frozen=True)
class SpecAugment:
    """One frequency and one time mask per training example (zeros: the standardised mean)."""

    freq_mask: int
    time_mask: int

    def __call__(self, x: Tensor, seed: int) -> Tensor:
        import torch
        import torchaudio

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            spec = x.transpose(1, 2)  # (B, F, T): torchaudio's (..., freq, time)
            if self.freq_mask:
                spec = torchaudio.transforms.FrequencyMasking(self.freq_mask, iid_masks=True)(spec)
            if self.time_mask:
                spec = torchaudio.transforms.TimeMasking(self.time_mask, iid_masks=True)(spec)
        return spec.transpose(1, 2).contiguous()


def spec_augment_from(
    task: str, enabled: bool, freq_mask: int, time_mask: int
) -> SpecAugment | None:
    if freq_mask < 0 or time_mask < 0:
        raise UsageError(f"task {task}: freq_mask and time_mask must be >= 0")
    return SpecAugment(freq_mask, time_mask) if enabled else None


def augment_details(augment: SpecAugment | None) -> dict[str, Any]:
    """What a record says of SpecAugment: the two mask widths, or nothing when it is off."""
    return {"spec_augment": [augment.freq_mask, augment.time_mask]} if augment else {}


def feature_options(task: str, features: str, n_mels: int, n_mfcc: int) -> FeatureOptions:
    try:
        return FeatureOptions(kind=features, n_mels=n_mels, n_mfcc=n_mfcc)  # type: ignore[arg-type]
    except UsageError as error:
        raise UsageError(f"task {task}: {error}") from None


def batch_seed(seed: int, number: int) -> int:
    return (seed * 1_000_003 + number) % (2**63)


class ClipClassification:
    """Classify whole clips (one label each) from padded frame sequences with lengths."""

    # Adam at 1e-3, batch 32: the usual setting for small speech classifiers.
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32}

    def __init__(
        self,
        *,
        name: str,
        dataset: str,
        bank: FeatureBank,
        labels: Tensor,
        splits: dict[str, Tensor],
        split_names: dict[str, str],
        classes: tuple[str, ...],
        version: str,
        source: str,
        details: dict[str, Any],
        spec_augment: SpecAugment | None,
        eval_splits: tuple[str, ...] = ("test",),
    ):
        import torch

        self.name = name
        self.dataset = dataset
        self.bank = bank
        self.labels = labels
        self.splits = splits
        self.split_names = split_names
        self.classes = classes
        self.version = version
        self.source = source
        self.details = details
        self.spec_augment = spec_augment
        self.eval_splits = eval_splits
        self.num_classes = len(classes)
        self.metrics = tuple(
            MetricSpec(f"{split}_{metric}", higher)
            for split in eval_splits
            for metric, higher in (("accuracy", True), ("f1", True), ("loss", False))
        )
        counts = torch.bincount(labels[splits["train"]], minlength=self.num_classes)
        self.baselines = {
            f"{split}_accuracy": float((labels[splits[split]] == counts.argmax()).double().mean())
            for split in eval_splits
        }
        self.max_frames = int(bank.lengths.max())

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="sequence",
            shape=(self.max_frames, self.bank.frames.shape[1]),
            num_outputs=self.num_classes,
        )

    def _batch(self, split: str, index: Tensor | slice) -> Batch:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        clips = self.splits[split][index]
        frames = [self.bank.clip(int(c)) for c in clips]
        lengths = torch.tensor([len(f) for f in frames])
        return Batch(pad_sequence(frames, batch_first=True), self.labels[clips], lengths)

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        train = split == "train"
        count = len(self.splits[split])
        for number, index in enumerate(epoch_indices(count, batch_size, seed, train=train)):
            batch = self._batch(split, index)
            if train and self.spec_augment is not None:
                batch.x = self.spec_augment(batch.x, batch_seed(seed, number))
            yield batch

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        def f1(predicted: Tensor, actual: Tensor) -> float:
            from torchmetrics.functional.classification import multiclass_f1_score

            # Macro-F1: every class counts alike, however many clips it has.
            macro = multiclass_f1_score(
                predicted, actual, num_classes=self.num_classes, average="macro"
            )
            return float(macro)

        metrics = {}
        for split in self.eval_splits:
            batches = self.batches(split, batch_size, 0)
            metrics |= per_split_metrics(model, batches, device, split, f1)
        return metrics

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        # Real training clips, of their real (different) lengths.
        import torch

        count = len(self.splits["train"])
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        return self._batch("train", order[:batch_size])

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId(
            name=self.dataset,
            split=self.split_names.get(split, split),
            version=self.version,
            source=self.source,
            num_examples=len(self.splits[split]),
            details=dict(self.details),
        )


# ---------------------------------------------------------------- speech-digits


def split_names(test_speaker: str | None) -> dict[str, str]:
    if test_speaker is None:
        return {"train": "train[takes 5-49]", "test": "test[takes 0-4]"}
    return {"train": f"train[speaker!={test_speaker}]", "test": f"test[speaker={test_speaker}]"}


def fsdd_details(clips: Clips, options: FeatureOptions, test_speaker: str | None) -> dict:
    return {
        "sample_rate": FSDD_RATE,
        "features": options.as_dict(),
        "split": "speaker" if test_speaker else "takes",
        "upstream_commit": FSDD_COMMIT,
        "matches_upstream": clips.version == "sha256:" + FSDD_CLIPS_SHA256[:12],
    }


@TASKS.register(
    "speech-digits",
    aliases=("fsdd",),
    tags=("audio", "speech", "sequence"),
    description="Spoken digit classification (FSDD, 8 kHz, log-mel frames); -O test_speaker=NAME",
)
def speech_digits(
    data: DataConfig,
    *,
    test_speaker: str | None = None,
    features: str = "logmel",
    n_mels: int = 40,
    n_mfcc: int = 13,
    spec_augment: bool = False,
    freq_mask: int = 8,
    time_mask: int = 10,
) -> ClipClassification:
    name = "speech-digits"
    options = feature_options(name, str(features), int(n_mels), int(n_mfcc))
    augment = spec_augment_from(name, bool(spec_augment), int(freq_mask), int(time_mask))
    speaker = None if test_speaker in (None, "", "none") else str(test_speaker)
    clips = load_fsdd(data, options)
    splits = fsdd_split(clips, speaker, name)
    bank, _, _ = standardise(clips.bank, splits["train"])
    return ClipClassification(
        name=name,
        dataset="fsdd",
        bank=bank,
        labels=clips.digits,
        splits=splits,
        split_names=split_names(speaker),
        classes=DIGIT_WORDS,
        version=clips.version,
        source=clips.source,
        details=fsdd_details(clips, options, speaker) | augment_details(augment),
        spec_augment=augment,
    )


# ---------------------------------------------------------------- speech-connected


def parse_range(task: str, option: str, value: Any, low: int) -> tuple[int, int]:
    """'3-7' or '5' -> (3, 7) / (5, 5); empty, reversed or below ``low`` is a UsageError."""
    text = str(value).strip()
    first, dash, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if dash else lo
    except ValueError:
        raise UsageError(f"task {task}: {option}={text!r} is not N or LOW-HIGH") from None
    if hi < lo:
        raise UsageError(f"task {task}: {option}={text!r} is reversed (write LOW-HIGH)")
    if lo < low:
        raise UsageError(f"task {task}: {option}={text!r} is empty (it must start at >= {low})")
    return lo, hi


@dataclass
class Strings:
    """Connected-digit strings as indices into the clip bank: clips (N, K), gaps (N, K)."""

    clips: Tensor  # (N, Kmax) clip indices, -1 past each string's K
    gaps: Tensor  # (N, Kmax) silent frames after each clip (0 after the last)
    digits: Tensor  # (N, Kmax) class ids (digit + 1), BLANK (0) past K
    frames: Tensor  # (N,) total frames


def make_strings(
    count: int,
    pool: Tensor,
    clips: Clips,
    lengths: Tensor,
    digits_range: tuple[int, int],
    gap_frames: tuple[int, int],
    generator: torch.Generator,
) -> Strings:
    """``count`` strings, each from one speaker's clips in ``pool``, uniformly at random."""
    import torch

    low, high = digits_range
    speakers = sorted({clips.speakers[int(i)] for i in pool})
    by_speaker = [
        torch.tensor([int(i) for i in pool if clips.speakers[int(i)] == s]) for s in speakers
    ]
    k = torch.randint(low, high + 1, (count,), generator=generator)
    who = torch.randint(0, len(speakers), (count,), generator=generator)
    picks = torch.rand(count, high, generator=generator)
    gaps = torch.randint(gap_frames[0], gap_frames[1] + 1, (count, high), generator=generator)
    steps = torch.arange(high)[None, :]
    real = steps < k[:, None]
    chosen = torch.full((count, high), -1, dtype=torch.int64)
    for s, members in enumerate(by_speaker):
        rows = who == s
        slot = (picks[rows] * len(members)).long().clamp(max=len(members) - 1)
        chosen[rows] = members[slot]
    chosen = torch.where(real, chosen, -1)
    gaps = torch.where(steps < (k - 1)[:, None], gaps, 0)
    digit_ids = torch.where(real, clips.digits[chosen.clamp(min=0)] + 1, BLANK)
    clip_frames = torch.where(real, lengths[chosen.clamp(min=0)], 0)
    return Strings(chosen, gaps, digit_ids, (clip_frames + gaps).sum(dim=1))


def frame_lengths(lengths: Tensor, steps_in: int, steps_out: int) -> Tensor:
    """Output frames per sample of a model that subsamples time by an integer k (InputSpec)."""
    factor = -(-steps_in // steps_out)  # ceil: exact for T > k(k-1), see gradbench.task
    return (-(-lengths // factor)).clamp(min=1, max=steps_out)


def greedy_decode(log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
    """Best path per sample: argmax per frame, repeats merged, blanks dropped (digits 0-9)."""
    import torch

    best = log_probs.argmax(dim=-1).cpu()
    out = []
    for row, length in zip(best, lengths.tolist(), strict=True):
        merged = torch.unique_consecutive(row[:length])
        out.append([int(c) - 1 for c in merged if c != BLANK])
    return out


def spell(digits: list[int] | Tensor) -> str:
    return " ".join(DIGIT_WORDS[int(d)] for d in digits)


class ConnectedDigits:
    """Connected-digit recognition with CTC over per-frame outputs."""

    metrics = (
        MetricSpec("test_wer", False),
        MetricSpec("test_cer", False),
        MetricSpec("test_string_accuracy", True),
        MetricSpec("test_loss", False),
    )
    # Adam at 1e-3, batch 32, no clipping (a mitigation to switch on, not a default).
    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32}
    eval_splits = ("test",)

    def __init__(
        self,
        *,
        clips: Clips,
        bank: FeatureBank,
        silence: Tensor,
        strings: dict[str, Strings],
        split_names: dict[str, str],
        version: str,
        details: dict[str, Any],
        spec_augment: SpecAugment | None,
    ):
        self.name = "speech-connected"
        self.clips = clips
        self.bank = bank
        self.silence = silence
        self.strings = strings
        self.split_names = split_names
        self.version = version
        self.details = details
        self.spec_augment = spec_augment
        self.max_frames = max(int(s.frames.max()) for s in strings.values())
        self.baselines = blind_baselines(strings)

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="sequence",
            shape=(self.max_frames, self.bank.frames.shape[1]),
            num_outputs=len(DIGIT_WORDS) + 1,
            target="per_frame",
        )

    def _batch(self, split: str, index: Tensor | slice) -> Batch:
        import torch
        from torch.nn.utils.rnn import pad_sequence

        strings = self.strings[split]
        rows = []
        for clips, gaps in zip(strings.clips[index], strings.gaps[index], strict=True):
            parts = []
            for clip, gap in zip(clips.tolist(), gaps.tolist(), strict=True):
                if clip < 0:
                    break
                parts.append(self.bank.clip(clip))
                if gap:
                    parts.append(self.silence.expand(gap, -1))
            rows.append(torch.cat(parts))
        digits = strings.digits[index]
        width = int((digits != BLANK).sum(dim=1).max())
        return Batch(pad_sequence(rows, batch_first=True), digits[:, :width], strings.frames[index])

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        train = split == "train"
        count = len(self.strings[split].frames)
        for number, index in enumerate(epoch_indices(count, batch_size, seed, train=train)):
            batch = self._batch(split, index)
            if train and self.spec_augment is not None:
                batch.x = self.spec_augment(batch.x, batch_seed(seed, number))
            yield batch

    def _ctc(self, output: Tensor, batch: Batch, reduction: str = "mean") -> Tensor:
        import torch.nn.functional as F

        assert batch.lengths is not None
        log_probs = output.float().log_softmax(dim=-1)
        frames = frame_lengths(batch.lengths.to(output.device), batch.x.shape[1], output.shape[1])
        targets = batch.y
        target_lengths = (targets != BLANK).sum(dim=1)
        # zero_infinity: a string with more labels than output frames (possible only
        # behind a subsampling front end) adds nothing rather than an infinite loss.
        return F.ctc_loss(
            log_probs.transpose(0, 1),
            targets,
            frames,
            target_lengths,
            blank=BLANK,
            reduction=reduction,
            zero_infinity=True,
        )

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        # Mean over the batch of each string's loss divided by its length (CTCLoss's mean).
        return self._ctc(output, batch)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        from torchmetrics.functional.text import char_error_rate, word_error_rate

        hypotheses, references = [], []
        loss_sum, count, exact = 0.0, 0, 0
        for batch in self.batches("test", batch_size, 0):
            batch = batch.to(device)
            output = forward(model, batch)
            loss_sum += float(self._ctc(output, batch, reduction="sum"))
            frames = frame_lengths(batch.lengths, batch.x.shape[1], output.shape[1])
            for decoded, target in zip(greedy_decode(output, frames), batch.y.cpu(), strict=True):
                reference = [int(d) - 1 for d in target if d != BLANK]
                hypotheses.append(spell(decoded))
                references.append(spell(reference))
                exact += decoded == reference
            count += len(batch)
        return {
            "test_wer": float(word_error_rate(hypotheses, references)),
            "test_cer": float(char_error_rate(hypotheses, references)),
            "test_string_accuracy": exact / max(1, count),
            "test_loss": loss_sum / max(1, count),
        }

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        import torch

        count = len(self.strings["train"].frames)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
        return self._batch("train", order[:batch_size])

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId(
            name="fsdd-connected",
            split=self.split_names.get(split, split),
            version=self.version,
            source=self.clips.source,
            num_examples=len(self.strings[split].frames),
            details=dict(self.details),
        )


def references_of(strings: Strings) -> list[str]:
    return [spell([int(d) - 1 for d in row if d != BLANK]) for row in strings.digits]


def blind_baselines(strings: dict[str, Strings]) -> dict[str, float]:
    """WER/CER of the best data-blind guess: one transcript for every string.

    Candidates are "d d ... d" (n times, every digit d, n from 0 to the longest string);
    the best on (up to 200) training strings is scored on the test set. The empty
    transcript (n = 0) has WER 1.0 whatever the data.
    """
    # Imported here: torchmetrics takes seconds to import, and every command loads tasks.
    from torchmetrics.functional.text import char_error_rate, word_error_rate

    train = references_of(strings["train"])[:200]
    test = references_of(strings["test"])
    longest = int((strings["train"].digits != BLANK).sum(dim=1).max())
    candidates = [""] + [
        " ".join([word] * n) for word in DIGIT_WORDS for n in range(1, longest + 1)
    ]
    best = min(candidates, key=lambda guess: float(word_error_rate([guess] * len(train), train)))
    return {
        "test_wer": float(word_error_rate([best] * len(test), test)),
        "test_cer": float(char_error_rate([best] * len(test), test)),
    }


@TASKS.register(
    "speech-connected",
    aliases=("fsdd-connected",),
    tags=("audio", "speech", "sequence", "ctc"),
    description="Connected spoken digits (FSDD strings of 3-7, CTC, WER); -O digits=3-7",
)
def speech_connected(
    data: DataConfig,
    *,
    digits: str = "3-7",
    gap_ms: str = "50-250",
    train_size: int = 6000,
    test_size: int = 500,
    data_seed: int = 0,
    test_speaker: str | None = None,
    features: str = "logmel",
    n_mels: int = 40,
    n_mfcc: int = 13,
    spec_augment: bool = False,
    freq_mask: int = 8,
    time_mask: int = 20,
) -> ConnectedDigits:
    import torch

    name = "speech-connected"
    digits_range = parse_range(name, "digits", digits, 1)
    gap_range = parse_range(name, "gap_ms", gap_ms, 0)
    train_size, test_size, data_seed = int(train_size), int(test_size), int(data_seed)
    if train_size < 1 or test_size < 1:
        raise UsageError(f"task {name}: train_size and test_size must be >= 1")
    options = feature_options(name, str(features), int(n_mels), int(n_mfcc))
    augment = spec_augment_from(name, bool(spec_augment), int(freq_mask), int(time_mask))
    speaker = None if test_speaker in (None, "", "none") else str(test_speaker)
    clips = load_fsdd(data, options)
    splits = fsdd_split(clips, speaker, name)
    bank, mean, std = standardise(clips.bank, splits["train"])
    # A silent gap: the features of digital silence, standardised like every frame.
    transform = feature_transform(options, FSDD_RATE)
    quiet = clip_features(transform, options, torch.zeros(FSDD_RATE // 10))[0]
    silence = ((quiet - mean) / std).unsqueeze(0)
    hop = options.hop_ms
    gap_frames = (round(gap_range[0] / hop), round(gap_range[1] / hop))
    params = {
        "generator": 1,
        "digits": list(digits_range),
        "gap_frames": list(gap_frames),
        "train_size": train_size,
        "test_size": test_size,
        "data_seed": data_seed,
        "test_speaker": speaker,
    }
    strings = {
        split: make_strings(
            size,
            splits[split],
            clips,
            clips.bank.lengths,
            digits_range,
            gap_frames,
            torch.Generator().manual_seed(data_seed * 1_000_003 + salt),
        )
        for split, size, salt in (("train", train_size, 0), ("test", test_size, 1))
    }
    names = split_names(speaker)
    return ConnectedDigits(
        clips=clips,
        bank=bank,
        silence=silence,
        strings=strings,
        split_names={s: f"{names[s]}x{len(strings[s].frames)}" for s in names},
        version=f"{clips.version}:gen-{json_hash(params)}",
        details=fsdd_details(clips, options, speaker)
        | {k: v for k, v in params.items() if k != "generator"}
        | augment_details(augment),
        spec_augment=augment,
    )
