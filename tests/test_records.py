"""The run record store: append/load, JSON hygiene, torn lines, concurrency, series files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gradbench.records import (
    SCHEMA_VERSION,
    ResultsStore,
    environment,
    finite_or_none,
    new_run_id,
    results_dir,
)


def record(**fields) -> dict:
    base = {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(),
        "task": "fake",
        "metrics": {"test_accuracy": 0.5},
        "seed": 0,
    }
    return base | fields


def test_append_then_load_round_trip(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "res")
    first, second = record(seed=0), record(seed=1, metrics={"test_accuracy": 0.75})
    store.append(first)
    store.append(second)
    loaded = store.load()
    assert [r["run_id"] for r in loaded] == [first["run_id"], second["run_id"]]
    assert loaded[1]["metrics"] == {"test_accuracy": 0.75}
    assert loaded[0]["series_file"] is None
    lines = store.runs_file.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line) for line in lines)


def test_non_finite_numbers_become_null(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(
        record(
            metrics={"a": float("nan"), "b": float("inf"), "c": np.float32(0.5)},
            final_train_loss=float("-inf"),
            history=[1.0, float("nan"), np.float64(2.0)],
            array=np.array([1.0, np.nan]),
        )
    )
    text = store.runs_file.read_text()
    assert "NaN" not in text and "Infinity" not in text
    json.loads(text)  # strict JSON
    loaded = store.load()[0]
    assert loaded["metrics"] == {"a": None, "b": None, "c": 0.5}
    assert loaded["final_train_loss"] is None
    assert loaded["history"] == [1.0, None, 2.0]
    assert loaded["array"] == [1.0, None]


def test_finite_or_none_leaves_other_values_alone() -> None:
    value = {"x": [1, "a", True, None, {"y": 2.5}], "z": (3.0,)}
    assert finite_or_none(value) == {"x": [1, "a", True, None, {"y": 2.5}], "z": [3.0]}


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    kept = record()
    store.append(kept)
    full = json.dumps(record())
    with open(store.runs_file, "a") as handle:  # a crash mid-write: no newline, half a record
        handle.write(full[: len(full) // 2])
    with pytest.warns(UserWarning, match="runs.jsonl:2: skipping a torn or corrupt record"):
        assert [r["run_id"] for r in store.load()] == [kept["run_id"]]


def test_the_append_after_a_torn_line_is_whole(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(record())
    with open(store.runs_file, "ab") as handle:
        handle.write(b'{"schema_version": 1, "run_id": "torn\xe2\x82')  # half a UTF-8 char
    after = record()
    store.append(after)
    with pytest.warns(UserWarning, match="torn or corrupt"):
        loaded = store.load()
    assert len(loaded) == 2 and loaded[-1]["run_id"] == after["run_id"]
    assert store.runs_file.read_bytes().endswith(b"\n")


def test_schema_version_mismatch_and_non_objects_are_skipped(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(record(schema_version=SCHEMA_VERSION + 1))
    store.append(record())
    with open(store.runs_file, "a") as handle:
        handle.write("[1, 2, 3]\n\n")
    with pytest.warns(UserWarning) as caught:
        loaded = store.load()
    assert len(loaded) == 1 and loaded[0]["schema_version"] == SCHEMA_VERSION
    messages = [str(w.message) for w in caught]
    assert any(
        f"schema version {SCHEMA_VERSION + 1} is not {SCHEMA_VERSION}" in m for m in messages
    )
    assert any("runs.jsonl:3: skipping" in m for m in messages)


def test_missing_store_loads_empty(tmp_path: Path) -> None:
    assert ResultsStore(tmp_path / "nothing-here").load() == []


WRITER = textwrap.dedent(
    """
    import sys
    from gradbench.records import SCHEMA_VERSION, ResultsStore
    store = ResultsStore(sys.argv[1])
    for i in range(int(sys.argv[3])):
        store.append({"schema_version": SCHEMA_VERSION, "run_id": f"{sys.argv[2]}-{i}",
                      "payload": sys.argv[2] * 20000})
    """
)


def test_concurrent_appends_from_two_processes_stay_whole(tmp_path: Path) -> None:
    count = 60
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), name, str(count)])
        for name in ("a", "b")
    ]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 2 * count
    records = [json.loads(line) for line in lines]  # every line parses: none interleaved
    for name in ("a", "b"):
        ids = [r["run_id"] for r in records if r["run_id"].startswith(name)]
        assert ids == [f"{name}-{i}" for i in range(count)]
        assert all(r["payload"] == name * 20000 for r in records if r["run_id"].startswith(name))


def test_series_round_trip_without_pickle(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    series = {
        "loss": np.linspace(2.0, 0.5, 7, dtype=np.float32),
        "grad_norm_per_layer": np.arange(12, dtype=np.float64).reshape(3, 4),
        "steps": np.arange(5),
    }
    rec = record()
    store.append(rec, series)
    loaded = store.load()[0]
    assert loaded["series_file"] == f"series/{rec['run_id']}.npz"
    back = store.series(loaded)
    assert set(back) == set(series)
    for key, value in series.items():
        np.testing.assert_array_equal(back[key], value)
        assert back[key].dtype == value.dtype
    # No temporary files are left beside the series.
    assert [p.name for p in (tmp_path / "series").iterdir()] == [f"{rec['run_id']}.npz"]


def test_series_with_objects_is_refused_on_load(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    rec = record()
    store.append(rec, {"bad": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError, match="allow_pickle"):
        store.series(store.load()[0])


def test_find_by_run_id_prefix(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    store.append(record(run_id="abc123def456"))
    store.append(record(run_id="abd000000000"))
    assert store.find("abc")["run_id"] == "abc123def456"
    assert store.find("ab") is None  # ambiguous
    assert store.find("zzz") is None


def test_results_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRADBENCH_RESULTS", str(tmp_path / "env"))
    assert results_dir() == tmp_path / "env"
    assert results_dir(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("GRADBENCH_RESULTS")
    assert results_dir() == Path("results")


def test_environment_names_versions_device_and_git() -> None:
    env = environment("cpu", 2)
    import torch

    assert env["torch"] == torch.__version__
    assert env["device"] == "cpu" and env["threads"] == 2 and env["device_name"] is None
    assert "git_revision" in env
    if env["git_revision"] is not None:  # a checkout: a 40-hex sha, maybe marked dirty
        sha = env["git_revision"].removesuffix("-dirty")
        assert len(sha) == 40 and int(sha, 16) >= 0
