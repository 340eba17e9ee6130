"""Real video: action clips from a folder in the UCF101 or HMDB51 layout, decoded with PyAV.

For users who have a video data set on disk (none can be fetched here). ``root`` is the
folder that holds one sub-folder of clips per class; the official split files are found
in ``root``, in the folder the official archive unpacks them to (``ucfTrainTestlist/``,
``testTrainMulti_7030_splits/``) or in ``splits=DIR``:

- UCF101: ``classInd.txt`` ("1 ApplyEyeMakeup"), ``trainlist0{k}.txt`` ("ApplyEyeMakeup/
  v_ApplyEyeMakeup_g08_c01.avi 1") and ``testlist0{k}.txt`` (the path alone);
- HMDB51: ``<class>_test_split{k}.txt`` per class, lines "<clip>.avi 1" (train), "... 2"
  (test) or "... 0" (unused).

Each clip is decoded with PyAV (FFmpeg; torchvision 0.29 has no video reader), ``frames``
frames are taken at evenly spaced positions over the whole clip (a clip with fewer
frames repeats some), each resized (squashed) to ``size`` x ``size``, RGB or
``grayscale=true``. The decoded clips of both splits are cached as uint8 tensors under
the cache directory, keyed by the split files' content, every listed clip's path, size
and modification time, and the sampling options; the record's version hashes the split
files and the clips' paths and sizes. PyAV is an optional extra: ``pip install
'gradbench[video]'``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradbench_tasks.video import VideoClassification

from gradbench.errors import DataError, UsageError
from gradbench.registry import TASKS
from gradbench.task import DataConfig, DatasetId

# torch, numpy and PyAV are imported where they are used: `gradbench list tasks` imports
# this module and must not pay their import time (nor need PyAV at all).
if TYPE_CHECKING:
    import numpy as np

# Bump when decoding or sampling changes what is cached for the same files and options.
LOADER_VERSION = 1
# Where the official archives put their split files, relative to the clips' folder.
SPLIT_FOLDERS = (".", "ucfTrainTestlist", "testTrainMulti_7030_splits")
# Folders under the data directory tried when no root is given.
DATA_DIR_NAMES = ("UCF-101", "UCF101", "ucf101", "hmdb51", "HMDB51")


@dataclass(frozen=True)
class Listing:
    """A split of a video folder: clip paths (relative to root) and class indices."""

    layout: str  # "ucf101" or "hmdb51"
    classes: tuple[str, ...]
    split_files: tuple[Path, ...]
    clips: dict[str, list[tuple[str, int]]]  # split -> [(relative path, class index)]


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def ucf101_listing(folder: Path, split: int) -> Listing | None:
    class_file = folder / "classInd.txt"
    train_file, test_file = folder / f"trainlist0{split}.txt", folder / f"testlist0{split}.txt"
    if not class_file.is_file():
        return None
    missing = [p.name for p in (train_file, test_file) if not p.is_file()]
    if missing:
        raise DataError(f"video-folder: {folder} has classInd.txt but no {' or '.join(missing)}")
    classes: list[str] = []
    for line in _lines(class_file):
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name or int(index) != len(classes) + 1:
            raise DataError(f"video-folder: {class_file}: bad line {line!r} (want 'N ClassName')")
        classes.append(name.strip())
    lookup = {name: i for i, name in enumerate(classes)}
    clips: dict[str, list[tuple[str, int]]] = {}
    for split_name, path in (("train", train_file), ("test", test_file)):
        entries = []
        for line in _lines(path):
            relative = line.split()[0]
            folder_name = relative.replace("\\", "/").split("/")[0]
            if folder_name not in lookup:
                raise DataError(
                    f"video-folder: {path}: class {folder_name!r} is not in classInd.txt"
                )
            entries.append((relative, lookup[folder_name]))
        clips[split_name] = entries
    return Listing("ucf101", tuple(classes), (class_file, train_file, test_file), clips)


def hmdb51_listing(folder: Path, split: int) -> Listing | None:
    files = sorted(folder.glob(f"*_test_split{split}.txt"))
    if not files:
        return None
    classes = tuple(re.sub(rf"_test_split{split}\.txt$", "", p.name) for p in files)
    clips: dict[str, list[tuple[str, int]]] = {"train": [], "test": []}
    for index, (name, path) in enumerate(zip(classes, files, strict=True)):
        for line in _lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(f"video-folder: {path}: bad line {line!r} (want 'clip.avi 0|1|2')")
            if parts[1] != "0":
                clips["train" if parts[1] == "1" else "test"].append((f"{name}/{parts[0]}", index))
    return Listing("hmdb51", classes, tuple(files), clips)


def find_listing(root: Path, splits: Path | None, split: int) -> Listing:
    folders = [splits] if splits is not None else [root / f for f in SPLIT_FOLDERS]
    for folder in folders:
        if folder.is_dir():
            listing = ucf101_listing(folder, split) or hmdb51_listing(folder, split)
            if listing is not None:
                for name, entries in listing.clips.items():
                    if not entries:
                        raise DataError(f"video-folder: split {split} lists no {name} clips")
                return listing
    where = ", ".join(str(f) for f in folders)
    raise DataError(
        f"video-folder: no split files for split {split} in {where} (UCF101: classInd.txt, "
        f"trainlist0{split}.txt, testlist0{split}.txt; HMDB51: <class>_test_split{split}.txt); "
        "name their folder with -O splits=DIR"
    )


def decode_clip(path: Path, frames: int, size: int, grayscale: bool) -> np.ndarray:
    """``frames`` evenly spaced frames of the clip at ``path``: uint8 (T, C, size, size)."""
    import av
    import numpy as np

    pixel_format = "gray" if grayscale else "rgb24"
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            # Every frame is decoded (a container's frame count is often missing or
            # wrong), resized at once by FFmpeg's scaler: small, whatever the clip's length.
            images = [
                frame.to_ndarray(width=size, height=size, format=pixel_format)
                for frame in container.decode(stream)
            ]
    except (av.FFmpegError, ValueError, OSError, IndexError) as error:
        raise DataError(f"video-folder: cannot decode {path} ({error})") from None
    if not images:
        raise DataError(f"video-folder: {path} has no video frames")
    picks = np.linspace(0, len(images) - 1, frames).round().astype(int)
    clip = np.stack([images[i] for i in picks])
    return clip[:, None] if grayscale else clip.transpose(0, 3, 1, 2)


def _cache_keys(root: Path, listing: Listing, options: dict[str, Any]) -> tuple[str, str]:
    """(version of the data: split files and clip sizes; cache key: that plus mtimes, options)."""
    version = hashlib.sha256()
    stamp = hashlib.sha256()
    for path in listing.split_files:
        content = path.read_bytes()
        version.update(path.name.encode() + content)
    for split in ("train", "test"):
        for relative, label in listing.clips[split]:
            path = root / relative
            try:
                info = path.stat()
            except OSError:
                raise DataError(
                    f"video-folder: {path} is listed in the split files but missing"
                ) from None
            version.update(f"{split}:{relative}:{label}:{info.st_size}\n".encode())
            stamp.update(f"{relative}:{info.st_mtime_ns}\n".encode())
    digest = version.hexdigest()
    settings = json.dumps({"loader": LOADER_VERSION, **options}, sort_keys=True)
    key = hashlib.sha256((digest + stamp.hexdigest() + settings).encode()).hexdigest()[:16]
    return "list:" + digest[:12], key


def load_clips(
    root: Path, listing: Listing, options: dict[str, Any], cache_dir: Path, key: str
) -> dict[str, Any]:
    """Both splits' clips from the cache, decoded (and cached) on a miss."""
    import numpy as np
    import torch

    path = cache_dir / "video-folder" / f"clips-{key}.pt"
    if path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache file is decoded again
            path.unlink(missing_ok=True)
    payload: dict[str, Any] = {}
    for split in ("train", "test"):
        clips = [
            decode_clip(root / relative, options["frames"], options["size"], options["grayscale"])
            for relative, _ in listing.clips[split]
        ]
        payload[split] = {
            "clips": torch.from_numpy(np.stack(clips)),
            "labels": torch.tensor([label for _, label in listing.clips[split]]),
        }
    train = payload["train"]["clips"]
    channels = train.shape[2]
    per_channel = train.transpose(0, 2).reshape(channels, -1).float().div(255)
    payload["mean"] = per_channel.mean(dim=1)
    payload["std"] = per_channel.std(dim=1).clamp(min=1e-6)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".clips-", suffix=".part")
    os.close(fd)
    torch.save(payload, partial)
    os.replace(partial, path)
    return payload


class VideoFolder(VideoClassification):
    """Classify real clips, standardised per channel."""

    train_defaults = {"optimizer": "adam", "lr": 1e-3, "batch_size": 16}

    def __init__(
        self, name: str, listing: Listing, payload: dict[str, Any], version: str, details: dict
    ):
        self.name = "video-folder"
        self.dataset = name
        self.classes = listing.classes
        self.num_classes = len(self.classes)
        self.version = version
        self.details = details
        self.mean = payload["mean"].view(1, 1, -1, 1, 1)
        self.std = payload["std"].view(1, 1, -1, 1, 1)
        self.splits = {s: (payload[s]["clips"], payload[s]["labels"]) for s in ("train", "test")}
        self.set_baselines()

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId(
            name=self.dataset,
            split=f"{split}{self.details['split']}",
            version=self.version,
            source="local",
            num_examples=len(self.splits[split][1]),
            details=dict(self.details),
        )


def _find_root(data: DataConfig, root: str | None) -> Path:
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"video-folder: root {str(path)!r} is not a folder")
        return path
    if data.data_dir is not None:
        for name in DATA_DIR_NAMES:
            if (data.data_dir / name).is_dir():
                return data.data_dir / name
    raise UsageError(
        "task video-folder needs -O root=DIR: a folder of class sub-folders of clips "
        "with the UCF101 or HMDB51 split files"
    )


@TASKS.register(
    "video-folder",
    tags=("video",),
    description="Real clips in the UCF101/HMDB51 layout (-O root=DIR), decoded with PyAV",
)
def video_folder(
    data: DataConfig,
    *,
    root: str | None = None,
    splits: str | None = None,
    split: int = 1,
    frames: int = 16,
    size: int = 64,
    grayscale: bool = False,
    name: str | None = None,
) -> VideoFolder:
    if frames < 2:
        raise UsageError(f"task video-folder: frames must be >= 2, got {frames}")
    if size < 1:
        raise UsageError(f"task video-folder: size must be >= 1, got {size}")
    if split not in (1, 2, 3):
        raise UsageError(
            f"task video-folder: split must be 1, 2 or 3 (the official splits), got {split}"
        )
    try:
        import av  # noqa: F401
    except ImportError:
        raise UsageError(
            "task video-folder decodes with PyAV: pip install av (or 'gradbench[video]')"
        ) from None
    folder = _find_root(data, root)
    split_folder = Path(splits).expanduser() if splits else None
    if split_folder is not None and not split_folder.is_dir():
        raise DataError(f"video-folder: splits {str(split_folder)!r} is not a folder")
    listing = find_listing(folder, split_folder, split)
    options = {"frames": frames, "size": size, "grayscale": grayscale, "split": split}
    version, key = _cache_keys(folder, listing, options)
    payload = load_clips(folder, listing, options, data.cache_dir, key)
    details = {
        "layout": listing.layout,
        "classes": len(listing.classes),
        **options,
        "loader": LOADER_VERSION,
    }
    return VideoFolder(name or folder.name, listing, payload, version, details)
