"""Video clips made from real images, whose label needs memory across frames.

No public video data set can be fetched here, so the clips are generated, from real
Fashion-MNIST (default) or MNIST images: each clip is T frames (``frames=20``) of a
``size`` x ``size`` grey canvas on which items (the images, resized to ``item_size``)
move in straight lines and bounce off the edges. Train clips use train images only,
test clips test images only. What the model must say (``label``):

- ``memory``: the class of the *cue* item, which moves in view for the first ``cue``
  frames and then slides out of the frame within three more, never to return; a second
  item stays in view throughout. Only the first few frames hold the answer, so the model
  must carry it across the remaining frames: difficulty grows with T.
- ``control``: the class of the item that stays, on the *same* clips: visible in every
  frame, so a model that fails ``memory`` but passes ``control`` failed at memory, not
  at vision.
- ``order``: two items of different classes; one is there from frame 0, the other
  appears at a frame in 1..cue, and both stay to the end. The label is 0 if the item of
  the smaller class index appeared first, else 1: which of the two came first, which
  the last frames no longer show.

Clips are a function of the image data, the generator's parameters and ``data_seed``
alone (the training seed fixes only the order), cached as uint8 tensors under the cache
directory, keyed by the image files' content hash and every generator parameter. The
record's data set version is a hash of the same; ``details`` names the image data set
and its version. Baselines: chance (1 / classes) and the majority class of the train
labels, scored on the test labels.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gradbench.data import content_hash, json_hash
from gradbench.errors import DataError, UsageError
from gradbench.registry import TASKS
from gradbench.task import Batch, DataConfig, DatasetId, InputSpec, MetricSpec, epoch_indices

# torch is imported where it is used, not here: `gradbench list tasks` imports this
# module and must not pay torch's import time.
if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

# Bump when the generator changes what it draws for the same parameters.
GENERATOR_VERSION = 1
LABELS = ("memory", "control", "order")
IMAGE_SETS = ("fashion-mnist", "mnist")
SPLIT_SALT = {"train": 0, "test": 1}
# Clips are drawn this many at a time: a chunk's padded float canvas stays ~100 MB.
CHUNK = 256
# Speeds in pixels per frame, as fractions of the room an item has to move in.
SPEED_RANGE = (0.08, 0.2)
# The cue item leaves the frame within this many frames after its cue.
EXIT_FRAMES = 3


@dataclass(frozen=True)
class ImageSet:
    """Real images of one split each, uint8 (N, 28, 28), their labels and identity."""

    name: str
    version: str
    source: str
    splits: dict[str, tuple[Tensor, Tensor]] | None  # None until read (a cache hit needs none)
    # Where the verified, unread Fashion-MNIST files are (``read_fashion``).
    raw_dir: Path | None = None


def image_set(name: str, data: DataConfig, *, read: bool) -> ImageSet:
    """The image data's identity (content hash of its files), and its images when ``read``."""
    if name == "fashion-mnist":
        from gradbench_tasks.image import FASHION_FILES, prepare_fashion_mnist

        raw_dir, source = prepare_fashion_mnist(data)
        # prepare_fashion_mnist has verified each file's published content md5.
        version = (
            "md5:"
            + hashlib.sha256(
                "".join(raw for _, raw in FASHION_FILES.values()).encode()
            ).hexdigest()[:12]
        )
        images = ImageSet(name, version, source, None, raw_dir)
        return read_fashion(images) if read else images
    import torchvision

    root = data.cache_dir / "torchvision"
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            reader = torchvision.datasets.MNIST(str(root), train=train, download=data.download)
        except RuntimeError as error:
            raise DataError(f"mnist: not in {root} and not downloadable ({error})") from None
        splits[split] = (reader.data, reader.targets)
    raw = sorted(p for p in Path(reader.raw_folder).glob("*-ubyte"))
    return ImageSet(name, "sha256:" + content_hash(raw), "download", splits)


def read_fashion(images: ImageSet) -> ImageSet:
    """``images`` with the splits read from its ``raw_dir`` (prepared and verified once)."""
    from gradbench_tasks.image import read_fashion_mnist

    assert images.raw_dir is not None
    splits = {}
    for split, train in (("train", True), ("test", False)):
        pictures, classes = read_fashion_mnist(images.raw_dir, train)
        splits[split] = (pictures.squeeze(1), classes)
    return replace(images, splits=splits)


# ---------------------------------------------------------------- generator


@dataclass(frozen=True)
class Scene:
    """What is drawn: ``leave`` (memory and control labels) or ``order`` clips."""

    kind: Literal["leave", "order"]
    frames: int
    size: int
    item_size: int
    cue: int


def bounce(start: Tensor, velocity: Tensor, steps: int, room: int) -> Tensor:
    """Positions at t = 0..steps-1 moving at ``velocity`` and reflecting off 0 and ``room``.

    ``start``/``velocity``: (..., 2); returns (..., steps, 2). A triangle wave of period
    2*room unfolds the straight path into its reflections.
    """
    import torch

    t = torch.arange(steps, dtype=start.dtype)
    path = start.unsqueeze(-2) + velocity.unsqueeze(-2) * t.unsqueeze(-1)
    if room == 0:
        return torch.zeros_like(path)
    folded = torch.remainder(path, 2 * room)
    return room - (folded - room).abs()


def resize_items(images: Tensor, item_size: int) -> Tensor:
    """uint8 (N, 28, 28) -> float (N, s, s) in [0, 1], antialiased."""
    import torch.nn.functional as F

    items = images.float().div(255).unsqueeze(1)
    if item_size != items.shape[-1]:
        items = F.interpolate(
            items, size=(item_size, item_size), mode="bilinear", antialias=True, align_corners=False
        )
    return items.squeeze(1).clamp(0, 1)


def render(items: Tensor, positions: Tensor, size: int) -> Tensor:
    """Draw items on blank canvases: uint8 (N, T, size, size), overlaps by pixel maximum.

    ``items``: (N, M, s, s) in [0, 1]; ``positions``: (N, M, T, 2) integer top-left
    (row, column), anywhere from -s (just out at the top/left) to ``size`` (just out at
    the bottom/right). The canvas is padded by s on every side, so a partly or wholly
    outside item is drawn into the padding and cropped away.
    """
    import torch

    count, slots, steps, _ = positions.shape
    s = items.shape[-1]
    padded = size + 2 * s
    canvas = torch.zeros(count * steps, padded, padded)
    frame = torch.arange(count * steps)[:, None, None]
    offsets = torch.arange(s)
    for slot in range(slots):
        where = (positions[:, slot].clamp(-s, size) + s).reshape(count * steps, 2)
        rows = (where[:, 0, None] + offsets)[:, :, None]
        cols = (where[:, 1, None] + offsets)[:, None, :]
        patch = items[:, slot].repeat_interleave(steps, dim=0)
        canvas[frame, rows, cols] = torch.maximum(canvas[frame, rows, cols], patch)
    clips = canvas[:, s : s + size, s : s + size].reshape(count, steps, size, size)
    return clips.mul(255).round().to(torch.uint8)


def draw_positions(scene: Scene, count: int, generator: torch.Generator) -> Tensor:
    """Integer top-left positions (count, 2 items, T, 2) of one chunk of clips."""
    import torch

    room = scene.size - scene.item_size
    start = torch.rand(count, 2, 2, generator=generator) * room
    angle = torch.rand(count, 2, generator=generator) * 2 * math.pi
    low, high = SPEED_RANGE
    speed = (low + (high - low) * torch.rand(count, 2, generator=generator)) * max(room, 1)
    velocity = torch.stack([angle.sin(), angle.cos()], dim=-1) * speed.unsqueeze(-1)
    path = bounce(start, velocity, scene.frames, room)
    if scene.kind == "leave":
        # Item 0 (the cue) leaves sideways after frame cue-1, toward its nearer edge,
        # fast enough to be gone within EXIT_FRAMES frames, and never comes back.
        last = path[:, 0, scene.cue - 1]
        direction = torch.where(last[:, 1] < room / 2, -1.0, 1.0)
        step = math.ceil((room / 2 + scene.item_size) / EXIT_FRAMES) + 1
        later = torch.arange(1, scene.frames - scene.cue + 1, dtype=path.dtype)
        cols = last[:, 1, None] + direction[:, None] * step * later
        path[:, 0, scene.cue :, 0] = last[:, 0, None]
        path[:, 0, scene.cue :, 1] = cols
    return path.round().long()


def draw_clips(
    scene: Scene, images: Tensor, classes: Tensor, count: int, generator: torch.Generator
) -> tuple[Tensor, dict[str, Tensor]]:
    """``count`` clips (uint8 (count, T, 1, size, size)) and their labels by mode."""
    import torch

    num_classes = int(classes.max()) + 1
    by_class = torch.argsort(classes, stable=True)
    class_counts = torch.bincount(classes, minlength=num_classes)
    class_starts = torch.cumsum(class_counts, 0) - class_counts
    clips, labels = [], {mode: [] for mode in LABELS}
    for begin in range(0, count, CHUNK):
        n = min(CHUNK, count - begin)
        first = torch.randint(0, len(classes), (n,), generator=generator)
        if scene.kind == "order":
            # A second item of another class: shift the class by 1..K-1, then any image of it.
            shift = torch.randint(1, num_classes, (n,), generator=generator)
            other = (classes[first] + shift) % num_classes
            pick = torch.rand(n, generator=generator) * class_counts[other]
            second = by_class[class_starts[other] + pick.long().clamp(max=class_counts[other] - 1)]
        else:
            second = torch.randint(0, len(classes), (n,), generator=generator)
        positions = draw_positions(scene, n, generator)
        if scene.kind == "order":
            # The second item is out of sight (above the canvas) until it appears.
            appear = torch.randint(1, scene.cue + 1, (n,), generator=generator)
            hidden = torch.arange(scene.frames)[None, :] < appear[:, None]
            positions[:, 1, :, 0] = torch.where(hidden, -scene.item_size, positions[:, 1, :, 0])
        items = resize_items(
            torch.stack([images[first], images[second]], dim=1).flatten(0, 1), scene.item_size
        ).unflatten(0, (n, 2))
        clips.append(render(items, positions, scene.size).unsqueeze(2))
        a, b = classes[first], classes[second]
        if scene.kind == "order":
            labels["order"].append((a > b).long())  # 0: the smaller class index came first
        else:
            labels["memory"].append(a)
            labels["control"].append(b)
    stacked = {mode: torch.cat(parts) for mode, parts in labels.items() if parts}
    return torch.cat(clips), stacked


def split_generator(data_seed: int, split: str) -> torch.Generator:
    import torch

    return torch.Generator().manual_seed(data_seed * 1_000_003 + SPLIT_SALT[split])


def scene_key(images: ImageSet, scene: Scene, sizes: dict[str, int], data_seed: int) -> str:
    return json_hash(
        {
            "generator": GENERATOR_VERSION,
            "images": images.name,
            "images_version": images.version,
            **scene.__dict__,
            **sizes,
            "data_seed": data_seed,
        },
        16,
    )


def load_or_draw(
    data: DataConfig, image_name: str, scene: Scene, sizes: dict[str, int], data_seed: int
) -> tuple[ImageSet, dict[str, Any]]:
    """The clips of both splits from the cache, drawn (and cached) on a miss."""
    import torch

    # Fashion-MNIST's identity needs no images: they are read on a cache miss only.
    images = image_set(image_name, data, read=image_name != "fashion-mnist")
    key = scene_key(images, scene, sizes, data_seed)
    path = data.cache_dir / "video" / f"clips-{key}.pt"
    if path.is_file():
        try:
            return images, torch.load(path, weights_only=True)
        except Exception:  # noqa: BLE001 - a damaged cache file is redrawn, not trusted
            path.unlink(missing_ok=True)
    if images.splits is None:
        images = read_fashion(images)
    payload: dict[str, Any] = {}
    for split in ("train", "test"):
        pictures, classes = images.splits[split]
        clips, labels = draw_clips(
            scene, pictures, classes, sizes[f"{split}_size"], split_generator(data_seed, split)
        )
        payload[split] = {"clips": clips, "labels": labels}
    # Standardisation from the training clips (a fixed subset: cheap, deterministic).
    sample = payload["train"]["clips"][:512].float().div(255)
    payload["mean"], payload["std"] = float(sample.mean()), float(sample.std().clamp(min=1e-6))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=path.parent, prefix=".clips-", suffix=".part")
    os.close(fd)
    torch.save(payload, partial)
    os.replace(partial, path)
    return images, payload


# ---------------------------------------------------------------- task


class VideoClassification:
    """Video clip classification held as uint8 in memory, standardised per batch.

    Subclasses set ``splits`` (split -> (uint8 clips (N, T, C, H, W), labels)), ``mean``
    and ``std`` (broadcastable over a batch of clips) and ``num_classes``, then call
    ``set_baselines``. Shared by ``video`` and ``video-folder``.
    """

    metrics = (MetricSpec("test_accuracy", True), MetricSpec("test_loss", False))
    splits: dict[str, tuple[Tensor, Tensor]]
    mean: Tensor
    std: Tensor
    num_classes: int

    def set_baselines(self) -> None:
        import torch

        counts = torch.bincount(self.splits["train"][1], minlength=self.num_classes)
        test_labels = self.splits["test"][1]
        self.baselines = {
            "test_accuracy (chance)": 1 / self.num_classes,
            "test_accuracy (majority)": float((test_labels == counts.argmax()).double().mean()),
        }

    def input_spec(self) -> InputSpec:
        return InputSpec(
            kind="video",
            shape=tuple(self.splits["train"][0].shape[1:]),
            num_outputs=self.num_classes,
        )

    def standardise(self, clips: Tensor) -> Tensor:
        return (clips.float().div(255) - self.mean) / self.std

    def batches(self, split: str, batch_size: int, seed: int) -> Iterator[Batch]:
        clips, labels = self.splits[split]
        for index in epoch_indices(len(labels), batch_size, seed, train=split == "train"):
            yield Batch(self.standardise(clips[index]), labels[index])

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        import torch.nn.functional as F

        return F.cross_entropy(output.float(), batch.y)

    def evaluate(self, model: nn.Module, device: torch.device, batch_size: int) -> dict[str, float]:
        from gradbench.evaluation import classification_metrics

        return classification_metrics(model, self.batches("test", batch_size, 0), device, "test")

    def fake_batch(self, batch_size: int = 4, seed: int = 0) -> Batch:
        # Real test clips: cheap, and of the right shapes and dtypes.
        import torch

        clips, labels = self.splits["test"]
        generator = torch.Generator().manual_seed(seed)
        index = torch.randint(0, len(labels), (batch_size,), generator=generator)
        return Batch(self.standardise(clips[index]), labels[index])


class VideoClips(VideoClassification):
    """Classify generated clips."""

    # Adam at 3e-3: on control clips (T=10, 16x16, lstm, 200 steps, seed 0) it reached
    # test accuracy 0.43 where 1e-3 reached 0.36. Batch 32 keeps a step of T frames cheap.
    train_defaults = {"optimizer": "adam", "lr": 3e-3, "batch_size": 32}

    def __init__(
        self,
        images: ImageSet,
        payload: dict[str, Any],
        label: str,
        details: dict[str, Any],
    ):
        self.name = "video"
        self.images = images
        self.label = label
        self.mean, self.std = payload["mean"], payload["std"]
        self.splits = {
            split: (payload[split]["clips"], payload[split]["labels"][label])
            for split in ("train", "test")
        }
        self.num_classes = 2 if label == "order" else 10
        self.details = details
        self.version = "gen:" + json_hash(details)
        self.set_baselines()

    def dataset_id(self, split: str) -> DatasetId:
        return DatasetId(
            name=f"video/{self.images.name}",
            split=split,
            version=self.version,
            source=self.images.source,
            num_examples=len(self.splits[split][1]),
            details=dict(self.details),
        )


@TASKS.register(
    "video",
    tags=("video", "image", "sequence"),
    description="Clips of moving Fashion-MNIST items; label=memory|control|order, frames=T",
)
def video(
    data: DataConfig,
    *,
    label: Literal["memory", "control", "order"] = "memory",
    frames: int = 20,
    images: Literal["fashion-mnist", "mnist"] = "fashion-mnist",
    size: int = 32,
    item_size: int = 14,
    cue: int | None = None,
    train_size: int = 10_000,
    test_size: int = 2_000,
    data_seed: int = 0,
) -> VideoClips:
    if label not in LABELS:
        raise UsageError(f"task video: label {label!r} is not one of {', '.join(LABELS)}")
    if images not in IMAGE_SETS:
        raise UsageError(f"task video: images {images!r} is not one of {', '.join(IMAGE_SETS)}")
    if not isinstance(frames, int) or frames < 2:
        raise UsageError(f"task video: frames must be an integer >= 2, got {frames!r}")
    if not 1 <= item_size <= size:
        raise UsageError(f"task video: item_size must be 1..size ({size}), got {item_size}")
    for key, value in (("train_size", train_size), ("test_size", test_size)):
        if value < 1:
            raise UsageError(f"task video: {key} must be >= 1, got {value}")
    # The cue spans the first frames; by default three, fewer in very short clips.
    cue = min(3, frames - 1) if cue is None else cue
    if not 1 <= cue < frames:
        raise UsageError(f"task video: cue must be 1..frames-1 ({frames - 1}), got {cue}")
    scene = Scene("order" if label == "order" else "leave", frames, size, item_size, cue)
    sizes = {"train_size": train_size, "test_size": test_size}
    image_data, payload = load_or_draw(data, images, scene, sizes, data_seed)
    details = {
        "generator": GENERATOR_VERSION,
        "images": image_data.name,
        "images_version": image_data.version,
        "label": label,
        **{k: v for k, v in scene.__dict__.items() if k != "kind"},
        "scene": scene.kind,
        **sizes,
        "data_seed": data_seed,
    }
    return VideoClips(image_data, payload, label, details)
