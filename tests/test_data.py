"""Data directory resolution, checksums and (offline) downloads shared by every task."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from gradbench.data import (
    content_hash,
    data_config,
    download,
    file_digest,
    locate,
    obtain,
    verify,
)
from gradbench.errors import DataError
from gradbench.task import DataConfig


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_data_config_reads_the_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GRADBENCH_DATA", str(tmp_path))
    monkeypatch.setenv("GRADBENCH_CACHE", str(tmp_path / "cache"))
    config = data_config()
    assert config.data_dir == tmp_path and config.cache_dir == tmp_path / "cache"
    assert config.download is True
    # Explicit values win over the environment.
    other = tmp_path / "other"
    other.mkdir()
    assert data_config(other, tmp_path / "c2", download=False) == DataConfig(
        other, tmp_path / "c2", False
    )


def test_no_data_dir_is_allowed(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GRADBENCH_DATA", raising=False)
    assert data_config(cache_dir=tmp_path).data_dir is None


def test_a_missing_data_directory_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as caught:
        data_config(tmp_path / "nope")
    assert str(caught.value) == f"data directory {str(tmp_path / 'nope')!r} does not exist"


def test_verify_and_digest(tmp_path: Path) -> None:
    path = write(tmp_path / "f.bin", b"hello")
    assert file_digest(path) == md5(b"hello")
    assert file_digest(path, "sha256") == hashlib.sha256(b"hello").hexdigest()
    assert verify(path, md5(b"hello")) == path
    assert verify(path, None) == path
    with pytest.raises(DataError, match="f.bin is corrupt: md5 .* does not match"):
        verify(path, md5(b"other"))


def test_content_hash_is_stable_and_sees_names_and_bytes(tmp_path: Path) -> None:
    a = write(tmp_path / "a", b"1")
    b = write(tmp_path / "b", b"2")
    first = content_hash([a, b])
    assert len(first) == 12 and first == content_hash([b, a])  # order of the list is irrelevant
    b.write_bytes(b"3")
    assert content_hash([a, b]) != first


def test_locate_tries_each_layout_in_order(tmp_path: Path) -> None:
    config = DataConfig(tmp_path, tmp_path / "cache")
    second = write(tmp_path / "Second/raw/x.gz", b"2")
    assert locate(config, ["first", "Second/raw"], "x.gz") == second
    first = write(tmp_path / "first/x.gz", b"1")
    assert locate(config, ["first", "Second/raw"], "x.gz") == first
    assert locate(config, ["first"], "y.gz") is None
    assert locate(DataConfig(None, tmp_path), ["first"], "x.gz") is None


def test_obtain_prefers_the_data_directory(tmp_path: Path) -> None:
    local = write(tmp_path / "data/ds/x.gz", b"payload")
    config = DataConfig(tmp_path / "data", tmp_path / "cache", download=False)
    path, source = obtain(
        config, dataset="ds", layouts=["ds"], filename="x.gz", urls=[], checksum=md5(b"payload")
    )
    assert (path, source) == (local, "local")
    local.write_bytes(b"tampered")
    with pytest.raises(DataError, match="corrupt"):
        obtain(config, dataset="ds", layouts=["ds"], filename="x.gz", urls=[], checksum=md5(b"p"))


def test_obtain_without_data_or_downloads_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    config = DataConfig(tmp_path / "data", tmp_path / "cache", download=False)
    with pytest.raises(DataError) as caught:
        obtain(config, dataset="ds", layouts=["ds"], filename="x.gz", urls=[], checksum=None)
    message = str(caught.value)
    assert "\n" not in message
    assert "ds: x.gz not found under" in message and "downloads are off" in message
    assert "GRADBENCH_DATA" in message


def test_download_from_a_file_url_is_verified_and_atomic(tmp_path: Path) -> None:
    upstream = write(tmp_path / "upstream/x.gz", b"remote bytes")
    dest = tmp_path / "cache/downloads/ds/x.gz"
    unreachable = (tmp_path / "missing.gz").as_uri()
    got = download([unreachable, upstream.as_uri()], dest, md5(b"remote bytes"))
    assert got == dest and dest.read_bytes() == b"remote bytes"
    # A wrong checksum leaves nothing behind: neither the file nor a partial one.
    bad = tmp_path / "cache/downloads/ds/bad.gz"
    with pytest.raises(DataError, match="corrupt"):
        download([upstream.as_uri()], bad, md5(b"something else"))
    assert sorted(p.name for p in dest.parent.iterdir()) == ["x.gz"]
    with pytest.raises(DataError, match="could not download y.gz"):
        download([unreachable], dest.parent / "y.gz", None)


def test_obtain_uses_and_then_reuses_the_download_cache(tmp_path: Path) -> None:
    upstream = write(tmp_path / "upstream/x.gz", b"remote")
    config = DataConfig(None, tmp_path / "cache", download=True)
    kwargs = {"dataset": "ds", "layouts": ["ds"], "filename": "x.gz", "checksum": md5(b"remote")}
    path, source = obtain(config, urls=[upstream.as_uri()], **kwargs)
    assert source == "download" and path == tmp_path / "cache/downloads/ds/x.gz"
    upstream.unlink()  # the cached copy is used from now on, even with downloads off
    offline = DataConfig(None, tmp_path / "cache", download=False)
    assert obtain(offline, urls=[], **kwargs) == (path, "download")


def test_a_failed_download_is_one_line_naming_the_data_flag(tmp_path: Path) -> None:
    config = DataConfig(None, tmp_path / "cache", download=True)
    with pytest.raises(DataError) as caught:
        obtain(
            config,
            dataset="ds",
            layouts=["ds"],
            filename="x.gz",
            urls=[(tmp_path / "nowhere.gz").as_uri()],
            checksum=None,
        )
    assert "\n" not in str(caught.value) and "--data-dir" in str(caught.value)


def test_the_real_mirror_files_are_found_in_place(data_dir: Path, tmp_path: Path) -> None:
    config = DataConfig(data_dir, tmp_path / "cache", download=False)
    found = locate(config, ["fashion-mnist"], "t10k-labels-idx1-ubyte.gz")
    assert found == data_dir / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"


def test_cached_content_hash_reads_bytes_only_when_a_file_changes(tmp_path: Path) -> None:
    import os

    from gradbench.data import cached_content_hash

    files = [tmp_path / f"clip{i}.wav" for i in range(3)]
    for i, path in enumerate(files):
        path.write_bytes(bytes([i]) * 100)
    cache = tmp_path / "cache"
    first = cached_content_hash(files, cache, length=64)
    assert first == content_hash(files, length=64)
    # Same name, size and mtime but other bytes: the stored hash is trusted, unread.
    stat = files[0].stat()
    files[0].write_bytes(b"x" * 100)
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cached_content_hash(files, cache, length=64) == first
    # A new modification time: hashed again, and the new bytes show.
    os.utime(files[0], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = cached_content_hash(files, cache, length=64)
    assert again != first and again == content_hash(files, length=64)
    assert cached_content_hash(files, cache) == again[:12]
    assert not list(cache.rglob("*.part"))
