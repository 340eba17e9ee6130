"""Data directory, checksums and downloads shared by every task.

Resolution order for a data file: the user's data directory (``--data-dir`` or
``GRADBENCH_DATA``) in each layout the task names (so the upstream layout and
torchvision's layout both work), then the download cache, then a download from the
upstream source when allowed. Every file is checked against its published checksum
before use; a mismatch is a ``DataError``, never a silent fallback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from gradbench.atomic import write_text_atomic
from gradbench.errors import DataError
from gradbench.task import DataConfig

DATA_ENV = "GRADBENCH_DATA"
CACHE_ENV = "GRADBENCH_CACHE"
T = TypeVar("T")


def data_config(
    data_dir: Path | str | None = None, cache_dir: Path | str | None = None, download: bool = True
) -> DataConfig:
    """DataConfig from explicit values, falling back to the environment variables."""
    data_dir = data_dir or os.environ.get(DATA_ENV) or None
    cache_dir = cache_dir or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "gradbench"
    if data_dir is not None:
        data_dir = Path(data_dir).expanduser()
        if not data_dir.is_dir():
            raise DataError(f"data directory {str(data_dir)!r} does not exist")
    return DataConfig(data_dir=data_dir, cache_dir=Path(cache_dir).expanduser(), download=download)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, checksum: str | None, algorithm: str = "md5") -> Path:
    """Raise DataError unless ``path`` has the published checksum (None: existence only)."""
    if checksum is not None:
        actual = file_digest(path, algorithm)
        if actual != checksum:
            raise DataError(
                f"{path} is corrupt: {algorithm} {actual} does not match the published {checksum}"
            )
    return path


def content_hash(paths: Iterable[Path], length: int = 12) -> str:
    """Short sha256 over several files' bytes: the version of data with no release number."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:length]


def cached_content_hash(paths: Iterable[Path], cache_dir: Path, length: int = 12) -> str:
    """``content_hash`` of many files, remembered under ``cache_dir`` by their stat.

    A corpus of 100k clips (Speech Commands: 2.3 GB) takes seconds to minutes to hash,
    on every load. The key is each file's name, size and modification time (as make and
    ccache trust them): while none of them changes, the stored hash is returned without
    reading a byte; any change, and the bytes are hashed again.
    """
    paths = sorted(Path(p) for p in paths)
    stats = [(str(p), st.st_size, st.st_mtime_ns) for p in paths for st in [p.stat()]]
    memo = Path(cache_dir) / "hashes" / f"{json_hash(stats, length=24)}.txt"
    try:
        stored = memo.read_text().strip()
    except OSError:
        stored = ""
    if len(stored) >= length:
        return stored[:length]
    full = content_hash(paths, length=64)
    write_text_atomic(memo, full)  # a reader sees the whole hash or none
    return full[:length]


def json_hash(value: Any, length: int = 12) -> str:
    """Short sha256 of ``value`` as sorted-key JSON: the key of whatever determines a result."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:length]


def locate(data: DataConfig, layouts: Sequence[str], filename: str) -> Path | None:
    """First existing ``data_dir/layout/filename`` among ``layouts`` (relative folders)."""
    if data.data_dir is None:
        return None
    for layout in layouts:
        candidate = data.data_dir / layout / filename
        if candidate.is_file():
            return candidate
    return None


def download(urls: Sequence[str], dest: Path, checksum: str | None, algorithm: str = "md5") -> Path:
    """Fetch the first reachable URL into ``dest`` atomically and verify it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 (fixed URLs)
                fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(response, out)
            try:
                verify(Path(tmp), checksum, algorithm)
            except DataError:
                os.unlink(tmp)
                raise
            os.replace(tmp, dest)
            return dest
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            errors.append(f"{url}: {error}")
    raise DataError(f"could not download {dest.name} ({'; '.join(errors)})")


def obtain(
    data: DataConfig,
    *,
    dataset: str,
    layouts: Sequence[str],
    filename: str,
    urls: Sequence[str],
    checksum: str | None,
    algorithm: str = "md5",
) -> tuple[Path, str]:
    """Verified path of a data file and its source ("local" or "download")."""
    found = locate(data, layouts, filename)
    if found is not None:
        return verify(found, checksum, algorithm), "local"
    cached = data.cache_dir / "downloads" / dataset / filename
    if cached.is_file():
        return verify(cached, checksum, algorithm), "download"
    fetched = fetch_missing(
        data, dataset, filename, lambda: download(urls, cached, checksum, algorithm)
    )
    return fetched, "download"


def fetch_missing(data: DataConfig, dataset: str, what: str, fetch: Callable[[], T]) -> T:
    """``fetch()`` for data found neither locally nor in the cache: one DataError naming
    ``what`` was missing when downloads are off or the download fails."""
    where = f" under {data.data_dir}" if data.data_dir else ""
    if not data.download:
        raise DataError(
            f"{dataset}: {what} not found{where} and downloads are off "
            f"(set --data-dir or {DATA_ENV})"
        )
    try:
        return fetch()
    except DataError as error:
        raise DataError(
            f"{dataset}: {what} not found{where} and the download failed; "
            f"point --data-dir or {DATA_ENV} at a copy ({error})"
        ) from None
