"""Killing a real sweep with SIGKILL, at several points, loses nothing and duplicates nothing.

A `gradbench run` subprocess (its own process group) is killed while starting, right
after a record lands, and in the middle of a cell; after each kill the store is
checked (every line parses, no cell twice, no finished run lost, every series file
whole), and re-running the same command completes exactly the missing cells. A run
killed mid-way with --checkpoint-every resumes to the uninterrupted run's result.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from gradbench.cli import main

SWEEP = ["run", "adding-20", "-m", "rnn", "-m", "lstm", "--seeds", "0-2", "--steps", "30"]
SWEEP += ["--batch-size", "16", "--threads", "1", "--probes", "off", "--device", "cpu"]
CELLS = 6


def command(args: list[str], results: Path) -> list[str]:
    code = "from gradbench.cli import main; main()"
    return [sys.executable, "-c", code, *args, "--results", str(results)]


def environment() -> dict[str, str]:
    return os.environ | {"OMP_WAIT_POLICY": "PASSIVE", "CI": "1"}


def lines(results: Path) -> list[str]:
    path = results / "runs.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def kill_when(args: list[str], results: Path, ready, log: Path | None = None) -> None:
    """Start the sweep; SIGKILL its whole process group as soon as ``ready()`` holds.

    ``log``: where the sweep's stderr goes (its "training MODEL seed N ..." lines).
    """
    process = subprocess.Popen(
        command(args, results),
        env=environment(),
        stdout=subprocess.DEVNULL,
        stderr=log.open("w") if log else subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not ready() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the sweep finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def check_store(results: Path, finished: dict[str, str]) -> dict[str, str]:
    """Every line parses, each cell once, every finished run kept, every series whole."""
    records = [json.loads(line) for line in lines(results)]  # raises on a torn line
    cells = [r["cell"] for r in records]
    assert len(cells) == len(set(cells)), "a cell was recorded twice"
    now = {r["cell"]: r["run_id"] for r in records}
    assert finished.items() <= now.items(), "a finished run was lost"
    for record in records:
        with np.load(results / record["series_file"], allow_pickle=False) as series:
            assert len(series["loss"]) == record["steps"]
    return now


@pytest.mark.slow
def test_sigkill_at_several_points_then_resume_leaves_one_record_per_cell(tmp_path):
    results = tmp_path / "results"
    finished: dict[str, str] = {}
    # While starting (data, models), right after a record lands, and mid-cell.
    kill_when(SWEEP, results, lambda: (tmp_path / "results").exists() or time.sleep(0.3))
    finished = check_store(results, finished)
    wanted = len(finished) + 1
    kill_when(SWEEP, results, lambda: len(lines(results)) >= wanted)
    finished = check_store(results, finished)
    assert 0 < len(finished) < CELLS
    # Mid-cell: a cell has started ("training ...") and not yet been recorded. (A fixed
    # delay would let the whole sweep finish first on an idle machine.)
    log = tmp_path / "sweep.log"

    def mid_cell() -> bool:
        started = log.read_text().count("training ") if log.exists() else 0
        return started > 0 and len(lines(results)) < len(finished) + started

    kill_when(SWEEP, results, mid_cell, log)
    finished = check_store(results, finished)

    done = subprocess.run(
        command(SWEEP, results), env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    if len(finished) < CELLS:
        assert f"resuming: {len(finished)} of {CELLS} cells" in done.stderr
    final = check_store(results, finished)
    assert len(final) == CELLS == len(lines(results))


@pytest.mark.slow
def test_a_killed_checkpointed_run_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["run", "adding-20", "-m", "rnn", "--steps", "120", "--batch-size", "16"]
    args += ["--threads", "1", "--device", "cpu", "--checkpoint-every", "30"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    checkpoints = killed / "checkpoints"

    def checkpointed() -> bool:
        return checkpoints.is_dir() and any(checkpoints.glob("*.pt"))

    kill_when(args, killed, checkpointed)
    assert lines(killed) == []
    done = subprocess.run(
        command(args, killed), env=environment(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    threads = torch.get_num_threads()  # --threads 1 must not leak into later tests
    try:
        with pytest.raises(SystemExit) as stopped:  # the uninterrupted run, in this process
            main([*args, "--results", str(whole)])
    finally:
        torch.set_num_threads(threads)
    assert stopped.value.code == 0
    [resumed], [uninterrupted] = ([json.loads(x) for x in lines(r)] for r in (killed, whole))
    assert resumed["final_train_loss"] == uninterrupted["final_train_loss"]
    assert resumed["metrics"] == uninterrupted["metrics"]
    with (
        np.load(killed / resumed["series_file"]) as a,
        np.load(whole / uninterrupted["series_file"]) as b,
    ):
        np.testing.assert_array_equal(a["loss"], b["loss"])
        np.testing.assert_array_equal(a["grad_norm"], b["grad_norm"])
    assert not any(checkpoints.glob("*.pt"))  # removed once the record is written
