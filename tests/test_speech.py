"""FSDD speech tasks on a tiny copy of the real clips: reading, features, cache, splits,
connected strings, CTC decoding and metrics, the download check, and bad input."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import gradbench_tasks.speech as speech
import numpy as np
import pytest
import soundfile
import torch

from gradbench.audio import FeatureOptions, cached_bank, read_clip
from gradbench.data import content_hash
from gradbench.errors import DataError, UsageError
from gradbench.plugins import load_plugins
from gradbench.registry import TASKS
from gradbench.task import DataConfig, Task

SPEAKERS = ("george", "jackson")
TAKES = range(0, 8)  # takes 0-4 test, 5-7 train


@pytest.fixture(scope="module")
def fsdd_dir() -> Path:
    import os

    value = os.environ.get("GRADBENCH_DATA")
    if not value:
        pytest.skip("GRADBENCH_DATA is not set (point it at the data mirror, e.g. ../shared/data)")
    folder = Path(value).expanduser() / "fsdd" / "recordings"
    if not folder.is_dir():
        pytest.fail(f"GRADBENCH_DATA={value} has no fsdd/recordings/ folder")
    return folder


@pytest.fixture
def tiny_fsdd(fsdd_dir: Path, tmp_path: Path) -> DataConfig:
    """2 speakers x 10 digits x 8 takes (160 real clips) in the upstream layout."""
    folder = tmp_path / "data" / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for speaker in SPEAKERS:
        for digit in range(10):
            for take in TAKES:
                name = f"{digit}_{speaker}_{take}.wav"
                shutil.copyfile(fsdd_dir / name, folder / name)
    return DataConfig(tmp_path / "data", tmp_path / "cache", download=False)


# ---------------------------------------------------------------- reading clips


def test_read_clip_names_the_file_for_each_kind_of_bad_wav(fsdd_dir: Path, tmp_path: Path):
    good = fsdd_dir / "0_george_0.wav"
    samples = read_clip(good, 8000)
    assert samples.dtype == torch.float32 and samples.dim() == 1 and len(samples) == 2384
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:2000])
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    for path, fragment in (
        (truncated, "truncated"),
        (text, "not a readable WAV"),
        (empty, "not a readable WAV"),
    ):
        with pytest.raises(DataError, match=fragment) as caught:
            read_clip(path, 8000)
        assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(DataError, match=r"sample rate 8000 Hz, expected 16000 Hz"):
        read_clip(good, 16000)


def test_feature_bank_is_cached_per_content_and_options(fsdd_dir: Path, tmp_path: Path):
    paths = sorted(fsdd_dir.glob("1_theo_*.wav"))[:5]
    version = content_hash(paths, length=64)
    bank, hit = cached_bank(tmp_path, "fsdd", version, paths, 8000, FeatureOptions())
    assert not hit and len(bank) == 5 and bank.frames.shape[1] == 40
    # 10 ms hop with a centred window: one frame per 80 samples, plus one.
    assert bank.lengths.tolist() == [len(read_clip(p, 8000)) // 80 + 1 for p in paths]
    again, hit = cached_bank(tmp_path, "fsdd", version, paths, 8000, FeatureOptions())
    assert hit and torch.equal(again.frames, bank.frames)
    mfcc, hit = cached_bank(tmp_path, "fsdd", version, paths, 8000, FeatureOptions(kind="mfcc"))
    assert not hit and mfcc.frames.shape[1] == 13
    _, hit = cached_bank(tmp_path, "fsdd", version, paths, 8000, FeatureOptions(n_mels=20))
    assert not hit


# ---------------------------------------------------------------- speech-digits


def test_speech_digits_splits_by_take_or_speaker(tiny_fsdd: DataConfig):
    load_plugins()
    task = TASKS.create("speech-digits", data=tiny_fsdd)
    assert isinstance(task, Task)
    assert task.dataset_id("train").num_examples == 2 * 10 * 3
    assert task.dataset_id("test").num_examples == 2 * 10 * 5
    assert task.dataset_id("test").split == "test[takes 0-4]"
    assert task.dataset_id("train").version == "sha256:" + content_hash(
        (tiny_fsdd.data_dir / "fsdd" / "recordings").glob("*.wav")
    )
    # Standardised with the training frames' statistics.
    train_frames = torch.cat([task.bank.clip(int(i)) for i in task.splits["train"]])
    assert train_frames.mean(dim=0).abs().max() < 1e-4
    batch = next(iter(task.batches("train", 8, seed=0)))
    assert batch.x.shape[0] == 8 and batch.x.shape[2] == 40
    assert int(batch.lengths.max()) == batch.x.shape[1]
    assert task.input_spec().shape == (int(task.bank.lengths.max()), 40)
    held = TASKS.create("speech-digits", data=tiny_fsdd, test_speaker="jackson")
    assert held.dataset_id("test").num_examples == 80
    files = speech.wav_files(tiny_fsdd.data_dir / "fsdd" / "recordings")
    assert {files[i].name.split("_")[1] for i in held.splits["test"].tolist()} == {"jackson"}
    assert held.dataset_id("test").split == "test[speaker=jackson]"
    with pytest.raises(UsageError, match="test_speaker='nobody' is not one of george, jackson"):
        TASKS.create("speech-digits", data=tiny_fsdd, test_speaker="nobody")


def test_spec_augment_masks_training_batches_deterministically(tiny_fsdd: DataConfig):
    plain = TASKS.create("speech-digits", data=tiny_fsdd)
    masked = TASKS.create("speech-digits", data=tiny_fsdd, spec_augment=True)
    a = next(iter(masked.batches("train", 8, seed=3)))
    b = next(iter(masked.batches("train", 8, seed=3)))
    clean = next(iter(plain.batches("train", 8, seed=3)))
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, clean.x)
    changed = a.x != clean.x
    assert bool((a.x[changed] == 0).all())  # masked to the standardised mean
    # The test split is never masked.
    assert torch.equal(
        next(iter(masked.batches("test", 8, 0))).x, next(iter(plain.batches("test", 8, 0))).x
    )


# ---------------------------------------------------------------- speech-connected


@pytest.fixture
def connected(tiny_fsdd: DataConfig):
    load_plugins()
    return TASKS.create(
        "speech-connected", data=tiny_fsdd, digits="2-4", train_size=64, test_size=16
    )


def test_connected_strings_come_from_their_own_split_and_the_data_seed(connected, tiny_fsdd):
    train_clips = set(connected_split(connected, "train"))
    test_clips = set(connected_split(connected, "test"))
    takes = connected.clips.takes
    assert all(int(takes[c]) >= 5 for c in train_clips)
    assert all(int(takes[c]) < 5 for c in test_clips)
    for split in ("train", "test"):
        strings = connected.strings[split]
        k = (strings.clips >= 0).sum(dim=1)
        assert int(k.min()) >= 2 and int(k.max()) <= 4
        # One speaker per string.
        for row in strings.clips:
            assert len({connected.clips.speakers[int(c)] for c in row if c >= 0}) == 1
    again = TASKS.create(
        "speech-connected", data=tiny_fsdd, digits="2-4", train_size=64, test_size=16
    )
    other = TASKS.create(
        "speech-connected", data=tiny_fsdd, digits="2-4", train_size=64, test_size=16, data_seed=1
    )
    assert torch.equal(again.strings["test"].clips, connected.strings["test"].clips)
    assert not torch.equal(other.strings["test"].clips, connected.strings["test"].clips)
    assert other.dataset_id("test").version != connected.dataset_id("test").version


def connected_split(task, split: str) -> list[int]:
    clips = task.strings[split].clips
    return [int(c) for c in clips.flatten() if c >= 0]


def test_connected_batch_concatenates_clips_and_silent_gaps(connected):
    strings = connected.strings["test"]
    batch = connected._batch("test", slice(0, 4))
    for row in range(4):
        clips = [int(c) for c in strings.clips[row] if c >= 0]
        gaps = strings.gaps[row].tolist()
        expected = []
        for i, clip in enumerate(clips):
            expected.append(connected.bank.clip(clip))
            expected.append(connected.silence.expand(gaps[i], -1))
        expected = torch.cat(expected)
        length = int(batch.lengths[row])
        assert length == len(expected) == int(strings.frames[row])
        assert torch.equal(batch.x[row, :length], expected)
        assert bool((batch.x[row, length:] == 0).all())
        digits = [int(connected.clips.digits[c]) + 1 for c in clips]
        assert batch.y[row, : len(digits)].tolist() == digits
        assert bool((batch.y[row, len(digits) :] == 0).all())
    # Gaps lie in 50-250 ms = 5-25 frames, except after the last clip.
    inner = strings.gaps[:, :-1][strings.clips[:, 1:] >= 0]
    assert int(inner.min()) >= 5 and int(inner.max()) <= 25


def test_greedy_decoding_and_library_wer(connected):
    # Frames: blank, 3, 3, blank, 3, 1, 1 -> digits 2, 2, 0 (class = digit + 1).
    path = torch.tensor([0, 3, 3, 0, 3, 1, 1, 5])
    log_probs = torch.nn.functional.one_hot(path, 11).float().log().unsqueeze(0)
    assert speech.greedy_decode(log_probs, torch.tensor([7])) == [[2, 2, 0]]
    assert speech.spell([2, 2, 0]) == "two two zero"
    # The baselines: the best constant guess beats the empty transcript (WER 1.0).
    assert 0.5 < connected.baselines["test_wer"] <= 1.0
    model_free = {"test_wer", "test_cer"}
    assert set(connected.baselines) == model_free


def test_frame_lengths_follow_the_subsampling():
    lengths = torch.tensor([1, 2, 3, 150, 151, 301])
    assert speech.frame_lengths(lengths, 301, 301).tolist() == [1, 2, 3, 150, 151, 301]
    assert speech.frame_lengths(lengths, 301, 151).tolist() == [1, 1, 2, 75, 76, 151]
    assert speech.frame_lengths(lengths, 301, 76).tolist() == [1, 1, 1, 38, 38, 76]


@pytest.mark.parametrize(
    ("digits", "fragment"),
    [("7-3", "reversed"), ("0-2", "empty"), ("0", "empty"), ("three", "is not N or LOW-HIGH")],
)
def test_bad_digit_ranges_are_usage_errors(digits: str, fragment: str, tiny_fsdd: DataConfig):
    with pytest.raises(UsageError, match=fragment) as caught:
        TASKS.create("speech-connected", data=tiny_fsdd, digits=digits)
    assert "digits=" in str(caught.value)


# ---------------------------------------------------------------- finding and fetching FSDD


def test_missing_and_empty_data_are_one_line_errors(tmp_path: Path):
    load_plugins()
    empty = tmp_path / "data" / "fsdd" / "recordings"
    empty.mkdir(parents=True)
    config = DataConfig(tmp_path / "data", tmp_path / "cache", download=False)
    with pytest.raises(DataError, match="holds no .wav files") as caught:
        TASKS.create("speech-digits", data=config)
    assert str(empty) in str(caught.value)
    nothing = DataConfig(tmp_path / "cache", tmp_path / "cache", download=False)
    with pytest.raises(DataError, match="not found .* downloads are off"):
        TASKS.create("speech-digits", data=nothing)


def fake_archive(folder: Path, clips: list[Path]) -> Path:
    """A tarball laid out as GitHub's archive of the repository at a commit."""
    archive = folder / "fsdd.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        prefix = f"free-spoken-digit-dataset-{speech.FSDD_COMMIT}"
        readme = f"{prefix}/README.md".encode()
        info = tarfile.TarInfo(f"{prefix}/README.md")
        info.size = len(readme)
        tar.addfile(info, io.BytesIO(readme))
        for clip in clips:
            tar.add(clip, arcname=f"{prefix}/recordings/{clip.name}")
    return archive


def test_download_keeps_the_clips_only_when_their_hash_matches(fsdd_dir: Path, tmp_path: Path):
    clips = sorted(fsdd_dir.glob("2_yweweler_1*.wav"))
    archive = fake_archive(tmp_path, clips)
    url = archive.as_uri()
    good = content_hash(clips, length=64)
    dest = tmp_path / "cache" / "fsdd"
    folder = speech.fetch_fsdd((url,), dest, good)
    assert sorted(p.name for p in folder.iterdir()) == [c.name for c in clips]
    assert (dest / "VERIFIED").read_text().strip() == good
    wrong = tmp_path / "cache" / "wrong"
    with pytest.raises(DataError, match="does not match the pinned"):
        speech.fetch_fsdd((url,), wrong, "0" * 64)
    assert not (wrong / "recordings").exists() and not (wrong / "VERIFIED").exists()
    assert not (wrong / "archive.tar.gz").exists()


def test_the_pinned_hash_is_the_mirror_s(fsdd_dir: Path):
    assert (fsdd_dir.parent / "SOURCE_COMMIT").read_text().split()[0] == speech.FSDD_COMMIT
    assert content_hash(sorted(fsdd_dir.glob("*.wav")), length=64) == speech.FSDD_CLIPS_SHA256


def test_a_clip_at_another_rate_is_named(tiny_fsdd: DataConfig):
    folder = tiny_fsdd.data_dir / "fsdd" / "recordings"
    victim = folder / "3_george_6.wav"
    samples, rate = soundfile.read(victim, dtype="int16")
    soundfile.write(victim, np.repeat(samples, 2), 2 * rate, subtype="PCM_16")
    with pytest.raises(DataError, match=r"3_george_6\.wav: sample rate 16000 Hz, expected 8000"):
        TASKS.create("speech-digits", data=tiny_fsdd)
