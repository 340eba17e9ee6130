"""Keyword classification on Speech Commands (Warden 2018): ``speech-commands``.

The layout as published (v0.02: 105,829 one-second clips, 16 kHz, 35 words): one folder
per word, ``validation_list.txt`` and ``testing_list.txt`` naming the held-out clips as
``word/file.wav``; every other clip is training data; ``_background_noise_`` is not a
word. It is found in the data directory (``speech_commands/``,
``speech_commands_v0.02/`` or torchaudio's ``SpeechCommands/speech_commands_v0.02/``),
else in the download cache, else downloaded from the published archive and checked
against its sha256 (the one torchaudio and TensorFlow Datasets publish). Clips are read
with soundfile (torchaudio's own dataset class needs FFmpeg to decode), featurised and
cached exactly as FSDD's (``gradbench.audio``), and every class is one word folder.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from pathlib import Path

from gradbench_tasks.speech import (
    ClipClassification,
    augment_details,
    feature_options,
    spec_augment_from,
    standardise,
    wav_files,
)

from gradbench.audio import FeatureOptions, cached_bank
from gradbench.data import cached_content_hash, download, fetch_missing
from gradbench.errors import DataError
from gradbench.registry import TASKS
from gradbench.task import DataConfig

SC_RATE = 16000
SC_VERSION = "v0.02"
SC_ARCHIVE = "speech_commands_v0.02.tar.gz"
SC_URLS = (
    "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
    "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
)
SC_SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
SC_LAYOUTS = (
    "speech_commands",
    "speech_commands_v0.02",
    "SpeechCommands/speech_commands_v0.02",
    "speech-commands",
)
LISTS = ("validation_list.txt", "testing_list.txt")


def find_speech_commands(data: DataConfig) -> tuple[Path, str]:
    """(root of the layout, "local" or "download"): data directory, cache, then download."""
    if data.data_dir is not None:
        for layout in SC_LAYOUTS:
            root = data.data_dir / layout
            if root.is_dir():
                for name in LISTS:
                    if not (root / name).is_file():
                        raise DataError(f"speech-commands: {root / name} is missing")
                return root, "local"
    cached = data.cache_dir / "speech-commands" / SC_VERSION
    if (cached / "VERIFIED").is_file():
        return cached / "data", "download"
    archive = data.cache_dir / "downloads" / "speech-commands" / SC_ARCHIVE

    def fetch() -> Path:
        return archive if archive.is_file() else download(SC_URLS, archive, SC_SHA256, "sha256")

    fetched = fetch_missing(data, "speech-commands", "speech_commands/", fetch)
    return unpack(fetched, cached), "download"


def unpack(archive: Path, dest: Path) -> Path:
    """Extract the verified archive into ``dest/data`` (safe members only), then stamp it."""
    dest.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=dest, prefix=".data-"))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            # The "data" filter refuses absolute paths, links out of the tree and devices.
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError, EOFError) as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise DataError(f"speech-commands: {archive} is not a readable archive ({error})") from None
    shutil.rmtree(dest / "data", ignore_errors=True)
    staging.replace(dest / "data")
    (dest / "VERIFIED").write_text(SC_SHA256 + "\n")
    return dest / "data"


def list_clips(root: Path) -> tuple[list[Path], list[str], list[str], tuple[str, ...]]:
    """(clip paths, their split, their word, the words) in a fixed order."""
    words = tuple(
        sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("_"))
    )
    held_out: dict[str, str] = {}
    for name, split in zip(LISTS, ("validation", "test"), strict=True):
        for line in (root / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = line.strip()
                if not (root / entry).is_file():
                    raise DataError(f"speech-commands: {root / name} names {entry}, not found")
                held_out[entry] = split
    paths, splits, labels = [], [], []
    for word in words:
        for path in wav_files(root / word):
            paths.append(path)
            splits.append(held_out.get(f"{word}/{path.name}", "train"))
            labels.append(word)
    if not paths:
        raise DataError(f"speech-commands: no .wav files in the word folders of {root}")
    return paths, splits, labels, words


@TASKS.register(
    "speech-commands",
    aliases=("speechcommands",),
    tags=("audio", "speech", "sequence"),
    description="Speech Commands v0.02 keywords (16 kHz, one-second clips, 35 words)",
)
def speech_commands(
    data: DataConfig,
    *,
    features: str = "logmel",
    n_mels: int = 40,
    n_mfcc: int = 13,
    spec_augment: bool = False,
    freq_mask: int = 8,
    time_mask: int = 10,
) -> ClipClassification:
    import torch

    name = "speech-commands"
    options: FeatureOptions = feature_options(name, str(features), int(n_mels), int(n_mfcc))
    augment = spec_augment_from(name, bool(spec_augment), int(freq_mask), int(time_mask))
    root, source = find_speech_commands(data)
    paths, split_of, word_of, words = list_clips(root)
    full_hash = cached_content_hash([*paths, *(root / n for n in LISTS)], data.cache_dir, length=64)
    bank, _ = cached_bank(data.cache_dir, "speech-commands", full_hash, paths, SC_RATE, options)
    index = {word: i for i, word in enumerate(words)}
    labels = torch.tensor([index[w] for w in word_of])
    splits = {
        split: torch.tensor([i for i, s in enumerate(split_of) if s == split], dtype=torch.int64)
        for split in ("train", "validation", "test")
    }
    for split, members in splits.items():
        if len(members) == 0:
            raise DataError(f"speech-commands: the {split} split of {root} is empty")
    bank, _, _ = standardise(bank, splits["train"])
    return ClipClassification(
        name=name,
        dataset="speech-commands",
        bank=bank,
        labels=labels,
        splits=splits,
        split_names={},
        classes=words,
        version="sha256:" + full_hash[:12],
        source=source,
        details={"sample_rate": SC_RATE, "features": options.as_dict(), "words": len(words)}
        | augment_details(augment),
        spec_augment=augment,
        eval_splits=("test", "validation"),
    )
