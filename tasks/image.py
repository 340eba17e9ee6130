"""Image classification: Fashion-MNIST (default), MNIST and CIFAR-10 through torchvision.

Fashion-MNIST is read from the upstream IDX files, found in the data directory in the
upstream layout (``fashion-mnist/*.gz``) or torchvision's (``FashionMNIST/raw/``), or
downloaded from the upstream mirror. Each file is checked against its published MD5
(of the archive, or of the decompressed IDX data, since repackaged archives such as
Debian's differ in gzip headers only), decompressed into the cache and read with
torchvision's ``FashionMNIST`` class. MNIST and CIFAR-10 go through torchvision's own
download-and-verify path into the cache (no local mirror exists for them here).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradbench.data import file_digest, locate, obtain
from gradbench.errors import DataError, UsageError
from gradbench.options import Count
from gradbench.registry import TASKS
from gradbench.task import DataConfig

# torch and torchvision are imported by the factories, not here: `gradbench list tasks`
# imports this module and must not pay for them.
if TYPE_CHECKING:
    from torch import Tensor

    from gradbench.classification import ImageClassification

# (archive, md5 of the archive as published, md5 of the decompressed IDX file as published)
FASHION_FILES = {
    "train-images-idx3-ubyte": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    ),
    "train-labels-idx1-ubyte": (
        "25c81989df183df01b3e8a0aad5dffbe",
        "9018921c3c673c538a1fc5bad174d6f9",
    ),
    "t10k-images-idx3-ubyte": (
        "bef4ecab320f06d8554ea6380940ec79",
        "8181f5470baa50b63fa0f6fddb340f0a",
    ),
    "t10k-labels-idx1-ubyte": (
        "bb300cfdad3c16e7a12a480ee83cd310",
        "15d484375f8d13e6eb1aabb0c3f46965",
    ),
}
FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_LAYOUTS = ("fashion-mnist", "FashionMNIST/raw", "fashion_mnist", ".")
# Per-channel mean and std of the training images, for input standardisation.
FASHION_STATS = ((0.2860,), (0.3530,))
FASHION_CLASSES = 10


def __getattr__(name: str) -> Any:
    # The task class lives in gradbench.classification (it imports torch); older code
    # imports it from here.
    if name == "ImageClassification":
        from gradbench.classification import ImageClassification

        return ImageClassification
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_fashion_mnist(raw_dir: Path, train: bool) -> tuple[Tensor, Tensor]:
    """(N, 1, 28, 28) uint8 images and labels, read by torchvision's FashionMNIST from
    the verified, decompressed files in the cache."""
    import torchvision

    class CachedFashionMNIST(torchvision.datasets.FashionMNIST):
        @property
        def raw_folder(self) -> str:
            return str(raw_dir)

    try:
        reader = CachedFashionMNIST(str(raw_dir), train=train, download=False)
    except (RuntimeError, ValueError, AssertionError) as error:
        raise DataError(f"fashion-mnist: cannot read {raw_dir} ({error})") from None
    return reader.data.unsqueeze(1), reader.targets


def prepare_fashion_mnist(data: DataConfig) -> tuple[Path, str]:
    """Verified decompressed IDX files in the cache, and where they came from.

    A cached file is reused only if it still has the published content checksum and,
    when it came from the data directory, that file is still the one it was made from
    (its MD5 is kept beside it): a corrupted mirror is an error even with a warm cache.
    """
    raw_dir = data.cache_dir / "fashion-mnist" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    sources = set()
    for name, (archive_md5, raw_md5) in FASHION_FILES.items():
        target = raw_dir / name
        origin_stamp = raw_dir / f"{name}.origin-md5"
        plain = locate(data, FASHION_LAYOUTS, name)
        archive = None if plain else locate(data, FASHION_LAYOUTS, name + ".gz")
        local = plain or archive
        origin_md5 = file_digest(local) if local else None
        if target.is_file() and file_digest(target) == raw_md5:
            if local is None:  # verified bytes in the cache; say where they first came from
                sources.add("local" if origin_stamp.is_file() else "download")
                continue
            if origin_stamp.is_file() and origin_stamp.read_text().strip() == origin_md5:
                sources.add("local")
                continue
        source = "local" if local else "download"
        if local is None:
            archive, source = obtain(
                data,
                dataset="fashion-mnist",
                layouts=FASHION_LAYOUTS,
                filename=name + ".gz",
                urls=[m + name + ".gz" for m in FASHION_MIRRORS],
                checksum=archive_md5,
            )
        sources.add(source)
        origin = archive or plain
        # A private partial file: two processes warming one cache must not interleave.
        fd, partial_name = tempfile.mkstemp(dir=raw_dir, prefix=f".{name}.", suffix=".part")
        partial = Path(partial_name)
        try:
            with os.fdopen(fd, "wb") as dst:
                if archive is not None:
                    with gzip.open(archive, "rb") as src:
                        shutil.copyfileobj(src, dst)
                else:
                    with open(plain, "rb") as src:
                        shutil.copyfileobj(src, dst)
        except (OSError, EOFError, zlib.error) as error:  # BadGzipFile is an OSError
            partial.unlink(missing_ok=True)
            raise DataError(f"fashion-mnist: {origin} is corrupt ({error})") from None
        # The decompressed content is checked, not the archive: a repackaged archive
        # (Debian's, say) differs in gzip headers only and is the same data.
        actual = file_digest(partial)
        if actual != raw_md5:
            partial.unlink(missing_ok=True)
            raise DataError(
                f"fashion-mnist: {origin} is corrupt: content md5 {actual} "
                f"does not match the published {raw_md5}"
            )
        partial.chmod(0o644)  # mkstemp makes it private; the cache is readable like any
        partial.replace(target)
        if source == "local":  # origin is the local file, whose md5 is origin_md5
            origin_stamp.write_text(f"{origin_md5}\n")
        else:
            origin_stamp.unlink(missing_ok=True)
    return raw_dir, "local" if sources == {"local"} else "download"


def _standardise(images: Tensor, stats: tuple[tuple[float, ...], tuple[float, ...]]) -> Tensor:
    from gradbench.classification import standardise

    return standardise(images, stats[0], stats[1])


def _limit(pair: tuple[Tensor, Tensor], limit: int | None) -> tuple[Tensor, Tensor]:
    if limit is None:
        return pair
    if limit < 1:  # the command line checks this first; a direct call is checked here
        raise UsageError(f"train_limit must be >= 1, got {limit}")
    return pair[0][:limit], pair[1][:limit]


@TASKS.register(
    "image",
    aliases=("fashion-mnist",),
    tags=("image",),
    description="Fashion-MNIST 10-way image classification (28x28 grey), upstream IDX files",
)
def fashion_mnist(data: DataConfig, *, train_limit: Count | None = None) -> ImageClassification:
    from gradbench.classification import ImageClassification

    _limit(((), ()), train_limit)  # a bad limit fails before any file is read
    raw_dir, source = prepare_fashion_mnist(data)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        images, labels = read_fashion_mnist(raw_dir, train)
        if train:  # limit before standardising: a 512-example test task skips 60k images
            images, labels = _limit((images, labels), train_limit)
        splits[split] = (_standardise(images, FASHION_STATS), labels)
    # The published content checksums name the version: they change if the data does.
    version = "md5:" + FASHION_FILES["train-images-idx3-ubyte"][1][:12]
    return ImageClassification(
        "image",
        "fashion-mnist",
        splits["train"],
        splits["test"],
        source,
        version,
        FASHION_CLASSES,
        train_limit,
    )


def _torchvision_task(name: str, dataset: str, stats, data: DataConfig, train_limit: int | None):
    """MNIST / CIFAR-10 via torchvision's own download and MD5 check, into the cache."""
    import torch
    import torchvision

    from gradbench.classification import ImageClassification

    dataset_cls = getattr(torchvision.datasets, dataset)
    root = data.cache_dir / "torchvision"
    splits = {}
    for split, train in (("train", True), ("test", False)):
        try:
            ds = dataset_cls(str(root), train=train, download=data.download)
        except (RuntimeError, OSError) as error:
            # A failed download (no network, a refused mirror) is one line.
            detail = " ".join(str(error).split())[:200]
            raise DataError(f"{name}: not in {root} and not downloadable ({detail})") from None
        images = torch.as_tensor(ds.data)
        if images.dim() == 3:  # MNIST: N, H, W
            images = images.unsqueeze(1)
        else:  # CIFAR: N, H, W, C
            images = images.permute(0, 3, 1, 2)
        splits[split] = (_standardise(images, stats), torch.as_tensor(ds.targets))
    return ImageClassification(
        name,
        name,
        _limit(splits["train"], train_limit),
        splits["test"],
        "download",
        f"torchvision-{torchvision.__version__.split('+')[0]}",
        10,
        train_limit,
    )


@TASKS.register("mnist", tags=("image",), description="MNIST digits via torchvision (download)")
def mnist(data: DataConfig, *, train_limit: Count | None = None) -> ImageClassification:
    stats = ((0.1307,), (0.3081,))
    return _torchvision_task("mnist", "MNIST", stats, data, train_limit)


@TASKS.register("cifar10", tags=("image",), description="CIFAR-10 via torchvision (download)")
def cifar10(data: DataConfig, *, train_limit: Count | None = None) -> ImageClassification:
    stats = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    return _torchvision_task("cifar10", "CIFAR10", stats, data, train_limit)
