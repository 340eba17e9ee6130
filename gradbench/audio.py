"""Audio for the speech tasks: reading WAV clips, log-mel/MFCC features, and their cache.

Clips are read with ``soundfile`` (libsndfile: no FFmpeg needed) and checked as they are
read: a file libsndfile cannot open, one whose data chunk is shorter than its header says
(a truncated download: libsndfile reads what is there and only notes "should be" in its
log), an empty clip or one at another sample rate is a one-line ``DataError`` naming the
file. Features come from torchaudio (``MelSpectrogram`` or ``MFCC``) on each clip, as
(frames, features) float32, and are cached as one ragged bank (all frames stacked, plus
offsets) under the cache directory, keyed by the clips' content hash and every feature
option: a second run reads one file instead of thousands.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gradbench.data import json_hash
from gradbench.errors import DataError, UsageError

# soundfile and torch are imported where they are used: the speech tasks import this
# module, and `gradbench list tasks` imports the tasks without paying torch's import time.
if TYPE_CHECKING:
    import torch
    from torch import Tensor

# Bump when feature extraction or the cache layout changes, so old caches are not reused.
FEATURE_VERSION = 1
# Added before the log: silence (exact zeros) gives log(1e-6), not -inf.
LOG_FLOOR = 1e-6
# libsndfile's log line for a data chunk shorter than its header declares
# ("data : 4768 (should be 1956)"); it then reads what is there without an error.
TRUNCATED_DATA = re.compile(r"^data\s*:\s*\d+\s*\(should be", re.MULTILINE)


@dataclass(frozen=True)
class FeatureOptions:
    """How frames are made from a waveform. Defaults: the usual ASR front end."""

    kind: Literal["logmel", "mfcc"] = "logmel"
    # 40 log-mel bands: the common choice for small ASR models (Kaldi's fbank default is 23,
    # ESPnet's 80); at 8 kHz the mel scale below 4 kHz is what there is to cover.
    n_mels: int = 40
    n_mfcc: int = 13
    # 25 ms windows every 10 ms: the standard speech framing (100 frames per second).
    window_ms: float = 25.0
    hop_ms: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in ("logmel", "mfcc"):
            raise UsageError(f"features={self.kind!r} is not logmel or mfcc")
        if self.n_mels < 1 or self.n_mfcc < 1:
            raise UsageError("n_mels and n_mfcc must be >= 1")
        if self.kind == "mfcc" and self.n_mfcc > self.n_mels:
            raise UsageError(f"n_mfcc={self.n_mfcc} cannot exceed n_mels={self.n_mels}")
        if not (0 < self.hop_ms <= self.window_ms):
            raise UsageError(
                f"hop_ms={self.hop_ms} must be > 0 and at most window_ms={self.window_ms}"
            )

    @property
    def num_features(self) -> int:
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def interactive() -> bool:
    """A progress bar only where a person watches (as the CLI decides for its own bars)."""
    return sys.stderr.isatty() and not os.environ.get("CI")


def read_clip(path: Path, sample_rate: int) -> Tensor:
    """Mono float32 samples of one WAV file, checked; DataError naming the file otherwise."""
    import soundfile
    import torch

    try:
        with soundfile.SoundFile(str(path)) as clip:
            if clip.samplerate != sample_rate:
                raise DataError(
                    f"{path}: sample rate {clip.samplerate} Hz, expected {sample_rate} Hz"
                )
            if TRUNCATED_DATA.search(clip.extra_info):
                raise DataError(f"{path}: truncated WAV file (shorter than its header says)")
            samples = clip.read(dtype="float32", always_2d=True)
    except soundfile.SoundFileError as error:
        reason = str(error).split(": ", 1)[-1] if ": " in str(error) else str(error)
        raise DataError(f"{path}: not a readable WAV file ({reason})") from None
    if samples.shape[0] == 0:
        raise DataError(f"{path}: empty WAV file (no samples)")
    return torch.from_numpy(samples).mean(dim=1)


def feature_transform(options: FeatureOptions, sample_rate: int) -> torch.nn.Module:
    """torchaudio's MelSpectrogram or MFCC for these options at this sample rate."""
    import torchaudio  # here, not at the top: every command imports the task modules

    window = round(sample_rate * options.window_ms / 1000)
    hop = round(sample_rate * options.hop_ms / 1000)
    # The FFT size: the next power of two at least the window (256 at 8 kHz, 512 at 16 kHz).
    n_fft = 1 << math.ceil(math.log2(window))
    mel = {
        "sample_rate": sample_rate,
        "n_fft": n_fft,
        "win_length": window,
        "hop_length": hop,
        "n_mels": options.n_mels,
    }
    if options.kind == "mfcc":
        return torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=options.n_mfcc,
            log_mels=True,
            melkwargs={k: v for k, v in mel.items() if k != "sample_rate"},
        )
    return torchaudio.transforms.MelSpectrogram(**mel)


def clip_features(transform: torch.nn.Module, options: FeatureOptions, samples: Tensor) -> Tensor:
    """(frames, features) of one clip: log-mel energies or MFCCs."""
    import torch

    with torch.no_grad():
        spectrum = transform(samples)
        if options.kind == "logmel":
            spectrum = torch.log(spectrum + LOG_FLOOR)
    return spectrum.transpose(0, 1).contiguous()


@dataclass
class FeatureBank:
    """Every clip's frames stacked (total frames, F), and offsets (N + 1) into them."""

    frames: Tensor
    offsets: Tensor

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> Tensor:
        return self.offsets[1:] - self.offsets[:-1]

    def clip(self, index: int) -> Tensor:
        return self.frames[self.offsets[index] : self.offsets[index + 1]]


def _track(items: Sequence[Path], description: str) -> Iterable[Path]:
    if not interactive():
        return items
    from rich.console import Console
    from rich.progress import track

    return track(items, description=description, console=Console(stderr=True), transient=True)


def extract_bank(
    paths: Sequence[Path],
    sample_rate: int,
    options: FeatureOptions,
    *,
    description: str = "features",
) -> FeatureBank:
    """Read and featurise every clip, in order (a progress bar on a terminal)."""
    import torch

    transform = feature_transform(options, sample_rate)
    chunks, offsets = [], [0]
    # One thread: a clip's FFTs are far too small to share, and on a busy machine the
    # extra threads' synchronisation made extraction ~100x slower (measured, 2 cores).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for path in _track(paths, description):
            features = clip_features(transform, options, read_clip(path, sample_rate))
            chunks.append(features)
            offsets.append(offsets[-1] + len(features))
    finally:
        torch.set_num_threads(threads)
    frames = torch.cat(chunks) if chunks else torch.zeros(0, options.num_features)
    return FeatureBank(frames, torch.tensor(offsets, dtype=torch.int64))


def cache_key(version: str, sample_rate: int, options: FeatureOptions, names: Sequence[str]) -> str:
    """Hash of everything the bank depends on: data version, rate, options, clip order."""
    return json_hash(
        {
            "v": FEATURE_VERSION,
            "data": version,
            "rate": sample_rate,
            "options": options.as_dict(),
            "names": hashlib.sha256("\n".join(names).encode()).hexdigest(),
        },
        16,
    )


def cached_bank(
    cache_dir: Path,
    dataset: str,
    version: str,
    paths: Sequence[Path],
    sample_rate: int,
    options: FeatureOptions,
) -> tuple[FeatureBank, bool]:
    """The feature bank of ``paths`` from the cache, or extracted and cached; (bank, cache hit).

    ``version`` must be the clips' content hash: a changed clip is a new key, so a
    corrupted copy is read (and reported) rather than hidden behind an old cache.
    """
    import torch

    names = [p.name for p in paths]
    folder = cache_dir / dataset
    path = folder / f"features-{options.kind}-{cache_key(version, sample_rate, options, names)}.pt"
    if path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            bank = FeatureBank(saved["frames"], saved["offsets"])
            if len(bank) == len(paths):
                return bank, True
        except (OSError, RuntimeError, KeyError, ValueError):
            pass  # a damaged cache file is rebuilt below
    bank = extract_bank(paths, sample_rate, options, description=f"{dataset} features")
    folder.mkdir(parents=True, exist_ok=True)
    # Written under a private name and renamed: two processes warming one cache never
    # read a half-written file.
    partial = path.with_name(f".{path.name}.{os.getpid()}.part")
    torch.save({"frames": bank.frames, "offsets": bank.offsets}, partial)
    partial.replace(path)
    return bank, False
