"""Suites: the built-in files are valid, bad files are one line with file:line, runs resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gradbench.cli import app
from gradbench.data import data_config
from gradbench.errors import UsageError
from gradbench.records import ResultsStore
from gradbench.suite import builtin_suites, load_suite, plan_comparisons, run_suite

TINY = """\
description = "two tiny models on the adding problem"
seeds = "0-1"
train = {{ threads = 1 }}
claims = ["adding-20: gru < rnn on test_mse"]

[[comparison]]
task = "adding-20"
models = ["rnn", "gru"]
model_options = {{ width = 8 }}
train = {{ steps = {steps}, batch_size = 16, eval_limit = 64, lr = {lr} }}
"""


def tiny_suite(tmp_path: Path, steps: int = 5, lr: float = 0.01, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(steps=steps, lr=lr))
    return path


@pytest.mark.parametrize("name", ["quick", "standard", "full"])
def test_builtin_suites_are_valid_against_the_registries(name: str) -> None:
    suite = load_suite(name)
    assert suite.comparisons and suite.cells >= len(suite.comparisons)
    if name != "quick":
        assert all(len(c.seeds) >= 3 for c in suite.comparisons)
    if name == "standard":
        # The article's claims, every one on a model the suite runs.
        assert len(suite.claims) >= 6
        assert {c.task for c in suite.claims} == {"image", "adding-100", "translation"}


def test_quick_covers_every_family_core_pair() -> None:
    suite = load_suite("quick")
    models = {c.task: set(c.models) for c in suite.comparisons}
    assert {"plain-20", "resnet-20"} <= models["image"]
    assert {"rnn", "lstm", "gru"} <= models["adding-50"]
    assert {"rnn", "transformer"} <= models["text"]


BAD = [
    ("[[comparison]]\ntask = 'imag'\nmodels = ['rnn']\ntrain = { steps = 5 }\n", 2, "unknown task"),
    ("[[comparison]]\ntask = 'adding-20'\nmodels = ['rnn', 'lstn']\n", 3, "unknown model 'lstn'"),
    ("[[comparison]]\ntask = 'adding-20'\nmodels = ['rnn']\nsteps = 5\n", 4, "unknown key 'steps'"),
    ("[[comparison]]\ntask = 'adding-20'\nmodels = ['rnn']\ntrain = { stepz = 5 }\n", 4, "stepz"),
    ("[[comparison]]\ntask = 'adding-20'\nmodels = ['rnn']\ntrain = { lr = 1 }\n", 1, "budget"),
    ("[[comparison]\ntask = 'adding-20'\n", 1, "line 1"),
    (
        "claims = ['adding-20: gru < rnn on test_mse']\n[[comparison]]\ntask = 'adding-20'\n"
        "models = ['rnn', 'lstm']\ntrain = { steps = 5 }\n",
        1,
        "'gru' is not a model of the suite",
    ),
    (
        "claims = ['adding-20: lstm < rnn on test_accuracy']\n[[comparison]]\n"
        "task = 'adding-20'\nmodels = ['rnn', 'lstm']\ntrain = { steps = 5 }\n",
        1,
        "no metric 'test_accuracy'",
    ),
]


@pytest.mark.parametrize(("text", "line", "message"), BAD)
def test_malformed_suites_are_one_line_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as caught:
        load_suite(path)
    assert str(caught.value).startswith(f"{path}:{line}") or f"line {line}" in str(caught.value)
    results = tmp_path / "results"
    result = CliRunner().invoke(app, ["suite", str(path), "--results", str(results)])
    assert result.exit_code == 2
    assert not results.exists()


def cells_of(path: Path) -> list[str]:
    return [json.loads(line)["cell"] for line in path.read_text().splitlines() if line.strip()]


def test_cell_keys_change_with_what_is_measured_only(tmp_path: Path) -> None:
    data = data_config(None, None, False)
    store = ResultsStore(tmp_path / "r")
    planned: list[str] = []
    for lr in (0.01, 0.02):
        suite = load_suite(tiny_suite(tmp_path, lr=lr, name=f"lr{lr}"))
        run_suite(suite, store, data, dry_run=True, on_cell=lambda c, s: planned.append(c.key))
    assert len(planned) == 8 and len(set(planned)) == 8  # model x seed x lr
    text = tiny_suite(tmp_path).read_text().replace("threads = 1", "threads = 2")
    (tmp_path / "threads.toml").write_text(text)
    again: list[str] = []
    run_suite(
        load_suite(tmp_path / "threads.toml"),
        store,
        data,
        dry_run=True,
        on_cell=lambda c, s: again.append(c.key),
    )
    assert again == planned[:4]  # threads do not change what is measured


def test_a_suite_loads_its_task_as_run_does(tmp_path: Path) -> None:
    # eval_limit is set on the task (it was once only recorded, not applied).
    suite = load_suite(tiny_suite(tmp_path))
    [(comparison, task, plan, prepared)] = plan_comparisons(suite, data_config(None, None, False))
    assert plan.train.eval_limit == 64 and task.eval_limit == 64
    assert [p.spec.name for p in prepared] == comparison.models == ["rnn", "gru"]


@pytest.mark.slow
def test_a_killed_suite_resumes_without_duplicates_or_losses(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path, steps=10)
    results = tmp_path / "results"
    runs = results / "runs.jsonl"
    command = [
        sys.executable,
        "-m",
        "gradbench.cli",
        "suite",
        str(suite),
        "--results",
        str(results),
    ]
    env = os.environ | {"OMP_WAIT_POLICY": "PASSIVE"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if runs.exists() and runs.read_text().count("\n") >= 1:
            break
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)  # mid-suite: at least one cell done, not all
    first.wait()
    done_before = cells_of(runs)
    assert 1 <= len(done_before) < 4
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"skipped {len(done_before)} done" in second.stderr
    cells = cells_of(runs)
    assert len(cells) == 4 and len(set(cells)) == 4 and cells[: len(done_before)] == done_before
    # A third run trains nothing; --force plans every cell again.
    data = data_config(None, None, False)
    counts = run_suite(load_suite(suite), ResultsStore(results), data, dry_run=True)
    assert counts == {"ran": 0, "skipped": 4, "planned": 0}
    counts = run_suite(load_suite(suite), ResultsStore(results), data, dry_run=True, force=True)
    assert counts["planned"] == 4


def test_builtin_names_are_listed() -> None:
    assert {"quick", "standard", "full"} <= set(builtin_suites())
    with pytest.raises(UsageError, match="no suite 'nope'"):
        load_suite("nope")


@pytest.mark.slow
def test_a_suite_runs_its_cells_in_worker_processes_like_run_does(tmp_path: Path) -> None:
    suite = tiny_suite(tmp_path, steps=3)
    results = tmp_path / "results"
    runner = CliRunner()
    args = ["suite", str(suite), "--results", str(results), "--jobs", "2"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    records = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert len(records) == 4 and len({r["cell"] for r in records}) == 4
    assert {r["suite"] for r in records} == {"tiny"}
    assert sorted((r["model"], r["seed"]) for r in records) == [
        ("gru", 0),
        ("gru", 1),
        ("rnn", 0),
        ("rnn", 1),
    ]
    # The same cells as an in-process suite run: re-running that skips all four.
    data = data_config(None, None, False)
    counts = run_suite(load_suite(suite), ResultsStore(results), data, dry_run=True)
    assert counts == {"ran": 0, "skipped": 4, "planned": 0}
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "ran 0, skipped 4 done" in again.output
