"""The run record store: append/load, JSON hygiene, torn lines, concurrency, series files."""

from __future__ import annotations

import json
import os
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
    """A record with every field the read-side schema requires."""
    base = {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(),
        "created": "2026-01-01T00:00:00+00:00",
        "task": "fake",
        "dataset": {"name": "fake", "split": "train", "version": "v1", "source": "synthetic"},
        "model": "mlp-3",
        "model_label": "mlp-3",
        "model_options": {},
        "train_options": {"steps": 1},
        "seed": 0,
        "budget": {"kind": "steps", "target": 1, "achieved": 1},
        "parameters": 10,
        "steps": 1,
        "train_seconds": 0.1,
        "metrics": {"test_accuracy": 0.5},
        "metric_directions": {"test_accuracy": True},
        "primary_metric": "test_accuracy",
        "diverged": False,
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
            metric_directions={"a": True, "b": True, "c": True},
            primary_metric="a",
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


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"run_id": "../../etc/x"}, "is not a generated id"),
        ({"run_id": "ABCDEF123456"}, "is not a generated id"),
        ({"run_id": 12}, "run_id is int"),
        ({"series_file": "/etc/passwd"}, "is not series/<run_id>.npz"),
        ({"series_file": "series/../../x.npz"}, "is not series/<run_id>.npz"),
        ({"series_file": "series/000000000000.npz"}, "is not series/<run_id>.npz"),
        ({"steps": "3"}, "steps is str"),
        ({"steps": True}, "steps is not int"),
        ({"diverged": "no"}, "diverged is str"),
        ({"metrics": {"test_accuracy": "high"}}, "a metric is not a number"),
        ({"dataset": {"name": "x"}}, "dataset lacks one of"),
        ({"primary_metric": "nope"}, "is not in metric_directions"),
        ({"verdict": 3}, "verdict is int"),
    ],
)
def test_a_record_that_breaks_the_schema_is_skipped_with_one_warning(
    tmp_path: Path, change: dict, reason: str
) -> None:
    store = ResultsStore(tmp_path)
    good = record()
    store.append(good)
    with open(store.runs_file, "a") as handle:
        handle.write(json.dumps(record() | change) + "\n")
    with pytest.warns(UserWarning) as caught:
        loaded = store.load()
    assert [r["run_id"] for r in loaded] == [good["run_id"]]
    assert len(caught) == 1 and reason in str(caught[0].message)
    assert "runs.jsonl:2:" in str(caught[0].message)


def test_a_missing_field_is_named(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    broken = record()
    del broken["model_label"]
    store.runs_file.parent.mkdir(exist_ok=True)
    store.runs_file.write_text(json.dumps(broken) + "\n")
    with pytest.warns(UserWarning, match="missing field 'model_label'"):
        assert store.load() == []


def test_series_paths_never_leave_the_series_folder(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    outside = tmp_path / "secret.npz"
    np.savez(outside, x=np.arange(3))
    for name in (str(outside), "series/../../secret.npz", "../secret.npz"):
        with pytest.raises(ValueError, match="outside"):
            store.series({"run_id": "a" * 12, "series_file": name})
    # A link inside series/ that points outside is outside too.
    (tmp_path / "results" / "series").mkdir(parents=True)
    (tmp_path / "results" / "series" / f"{'b' * 12}.npz").symlink_to(outside)
    with pytest.raises(ValueError, match="outside"):
        store.series({"run_id": "b" * 12, "series_file": f"series/{'b' * 12}.npz"})
    with pytest.raises(ValueError, match="cannot name a file"):
        store.append(record(run_id="../escape"), {"loss": np.arange(2)})
    assert not (tmp_path / "escape.npz").exists()


def test_an_interrupted_series_write_leaves_no_partial_file(tmp_path: Path, monkeypatch) -> None:
    store = ResultsStore(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.append(record(), {"loss": np.arange(3)})
    assert list((tmp_path / "series").iterdir()) == []
    assert not store.runs_file.exists()


def test_partial_files_of_dead_writers_are_removed_on_the_next_write(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = series_dir / f".part-{dead.stdout.strip()}-abc.npz"
    stale.write_bytes(b"half")
    alive = series_dir / f".part-{os.getpid()}-def.npz"  # a concurrent writer: kept
    alive.write_bytes(b"in progress")
    rec = record()
    store.append(rec, {"loss": np.arange(3)})
    names = sorted(p.name for p in series_dir.iterdir())
    assert names == sorted([alive.name, f"{rec['run_id']}.npz"])
    assert (series_dir / f"{rec['run_id']}.npz").stat().st_mode & 0o777 == 0o644


def test_two_total_flops_budgets_are_recorded_and_never_share_a_row(
    make_fake_task, tmp_path: Path
) -> None:
    from gradbench.config import TrainConfig
    from gradbench.leaderboard import build_tables
    from gradbench.models.build import parse_model_arg
    from gradbench.runner import Plan, diverged_runs, run_plan

    task = make_fake_task()
    store = ResultsStore(tmp_path)
    for total in (2e5, 6e5):
        plan = Plan(
            task="fake",
            models=[parse_model_arg("mlp-3:width=8")],
            seeds=[0],
            # steps=1 stands in for the step count the total sets, as the CLI passes it.
            train=TrainConfig(steps=1, batch_size=16, device="cpu", probes="off"),
            flops_budget=total,
        )
        records = run_plan(plan, task, store)
        (run,) = records
        assert run["schema_version"] == SCHEMA_VERSION == 2
        assert run["budget"]["flops_budget"] == total and run["budget"]["kind"] == "flops"
        assert run["train_options"]["steps"] is None  # no placeholder recorded
        assert run["steps"] == round(total / run["flops_per_step"]) > 1
        assert run["flops_basis"] == {"batches": "fake", "count": 1, "batch_size": 16}
        assert run["probe_seconds"] < 0.1 and run["verdict"] is None  # probes off
        assert diverged_runs(records) == []
    (table,) = build_tables(store.load()).values()
    assert len(table) == 2 and table.attrs["budget"] == "flops=200k, flops=600k"
    assert sorted(table["steps"]) == sorted(r["steps"] for r in store.load())


def test_diverged_runs_lists_what_diverged() -> None:
    from gradbench.runner import diverged_runs

    fine, nan, weights = {"diverged": False}, {"diverged": True}, {"verdict": "diverged"}
    assert diverged_runs([fine, nan, weights]) == [nan, weights]
    assert diverged_runs([]) == []
