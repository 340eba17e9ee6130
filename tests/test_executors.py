"""Executors: cells in this process, in --jobs worker processes and on Ray; retries, resume,
and bad input (one line, non-zero exit, nothing written).

The sweeps here are tiny (the adding problem at T=20, a few steps) and a plugin model,
``crashy``, fails its first attempt on purpose: it raises, or kills its worker process.
"""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import cli

from gradbench.errors import UsageError
from gradbench.executors import Execution

CRASHY = textwrap.dedent(
    '''
    """A flat linear model that fails once, in training (its third forward call, after the
    FLOP count's), on the first attempt that finds no marker file."""
    import os
    from pathlib import Path

    from torch import nn

    from gradbench.errors import DataError
    from gradbench.registry import MODELS


    class Crashy(nn.Module):
        def __init__(self, features, outputs, mode, marker):
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(features, outputs))
            self.mode, self.marker = mode, Path(marker)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls < 3:
                return self.net(x)
            if self.mode == "usage":
                raise DataError("the data went away (a user's problem, not retried)")
            if not self.marker.exists():
                self.marker.write_text("failed once")
                if self.mode == "exit":
                    os._exit(3)  # the worker process dies, as under the OOM killer
                raise RuntimeError("boom")
            return self.net(x)


    @MODELS.register("crashy", description="fails its first attempt (executor tests)")
    def crashy(spec, *, mode: str = "raise", marker: str = ""):
        features = 1
        for size in spec.shape:
            features *= size
        return Crashy(features, spec.num_outputs, mode, marker)
    '''
)

SWEEP = ["run", "adding-20", "--steps", "4", "--batch-size", "16", "--threads", "1"]
SWEEP += ["--probes", "off", "--device", "cpu"]


@pytest.fixture
def plugins(tmp_path: Path, restore_registries) -> Path:
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "crashy.py").write_text(CRASHY)
    return folder


def records(results: Path) -> list[dict]:
    path = results / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def failures(results: Path) -> list[dict]:
    path = results / "failures.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def one_line(code: int, err: str, fragment: str) -> None:
    assert code != 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gradbench: error: ") and fragment in lines[0], err


# --- in this process ----------------------------------------------------------------------


def test_a_failed_cell_is_logged_and_retried_and_the_sweep_goes_on(plugins, tmp_path, capsys):
    results, marker = tmp_path / "results", tmp_path / "marker"
    args = SWEEP + ["-m", f"crashy:marker={marker}", "-m", "rnn", "--seeds", "0"]
    args += ["--tasks-dir", str(plugins), "--results", str(results), "--retries", "1"]
    code, _, err = cli(args, capsys)
    assert code == 0, err
    assert sorted(r["model"] for r in records(results)) == ["crashy", "rnn"]
    [failure] = failures(results)
    assert failure["reason"] == "RuntimeError: boom"
    assert failure["attempt"] == 1 and failure["final"] is False
    assert "retry 1" in err


def test_a_cell_that_fails_every_attempt_fails_the_sweep_after_the_others(
    plugins, tmp_path, capsys
):
    results, marker = tmp_path / "results", tmp_path / "marker"
    args = SWEEP + ["-m", f"crashy:marker={marker}", "-m", "rnn", "--seeds", "0"]
    code, _, err = cli(args + ["--tasks-dir", str(plugins), "--results", str(results)], capsys)
    assert code == 1
    assert "1 of 2 cells failed after 1 attempt(s) (crashy" in err
    assert [r["model"] for r in records(results)] == ["rnn"]
    assert [f["final"] for f in failures(results)] == [True]


def test_a_users_error_in_a_cell_stops_the_sweep_without_retrying(plugins, tmp_path, capsys):
    results = tmp_path / "results"
    args = SWEEP + ["-m", "crashy:mode=usage", "--tasks-dir", str(plugins), "--retries", "3"]
    code, _, err = cli(args + ["--results", str(results)], capsys)
    one_line(code, err.split("\n", 1)[-1] if err.startswith("training") else err, "went away")
    assert records(results) == [] and failures(results) == []


def test_rerunning_runs_only_missing_cells_and_force_reruns(tmp_path, capsys):
    results = tmp_path / "results"
    args = SWEEP + ["-m", "rnn", "--seeds", "0,1", "--results", str(results)]
    assert cli(args, capsys)[0] == 0
    first = records(results)
    assert len(first) == 2 and len({r["cell"] for r in first}) == 2

    code, _, err = cli(args[:-4] + ["--seeds", "0-2", "--results", str(results)], capsys)
    assert code == 0
    assert "resuming: 2 of 3 cells already have a complete record" in err
    assert [r["seed"] for r in records(results)] == [0, 1, 2]

    code, _, err = cli(args, capsys)
    assert code == 0 and "all 2 cells already have a complete record" in err
    assert len(records(results)) == 3

    assert cli(args + ["--force"], capsys)[0] == 0
    assert [r["seed"] for r in records(results)] == [0, 1, 2, 0, 1]


def test_what_makes_a_cell(tmp_path):
    """Seed and training options are part of a cell; threads and the executor are not."""
    from gradbench.cells import cell_key
    from gradbench.config import TrainConfig
    from gradbench.models.build import parse_model_arg
    from gradbench.runner import Plan, PreparedModel

    item = PreparedModel(parse_model_arg("rnn"), {"width": 8})

    def key(seed=0, **train):
        config = TrainConfig(**({"steps": 4} | train))
        return cell_key(Plan("adding-20", [item.spec], [seed], config), item, seed)

    assert key() == key(threads=3) == key()
    assert len({key(), key(seed=1), key(lr=0.1), key(fast=True), key(steps=5)}) == 5


# --- bad input: one line, non-zero exit, nothing written ----------------------------------


def test_bad_sweep_options_fail_before_anything_is_written(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    base = SWEEP + ["-m", "rnn", "--results", str(results)]
    code, _, err = cli(base + ["--jobs", "0"], capsys)
    one_line(code, err, "--jobs")
    code, _, err = cli(base + ["--address", "127.0.0.1:6379"], capsys)
    one_line(code, err, "--address needs --executor ray")
    code, _, err = cli(base + ["--executor", "ray", "--address", "127.0.0.1:9"], capsys)
    one_line(code, err, "no Ray cluster answers there")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = cli(base + ["--executor", "ray"], capsys)
    one_line(code, err, "needs Ray, which is not installed: pip install 'gradbench[ray]'")
    assert not results.exists()
    with pytest.raises(UsageError, match="--retries"):
        Execution(retries=-1)


def test_a_corrupt_checkpoint_is_one_line_and_writes_nothing(tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    args = SWEEP + ["-m", "rnn", "--checkpoint-every", "2"]
    assert cli(args + ["--results", str(first)], capsys)[0] == 0
    [record] = records(first)
    assert not (first / "checkpoints" / f"{record['cell']}.pt").exists()  # removed when done
    damaged = second / "checkpoints" / f"{record['cell']}.pt"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"\x80\x04 half a checkpoint")
    code, _, err = cli(args + ["--results", str(second)], capsys)
    one_line(code, err, "is corrupt or unreadable")
    assert sorted(p.name for p in second.rglob("*")) == sorted(["checkpoints", damaged.name])


# --- worker processes and Ray -------------------------------------------------------------


@pytest.mark.slow
def test_worker_processes_survive_a_dying_worker_and_match_in_process_runs(
    plugins, tmp_path, capsys
):
    here, there = tmp_path / "here", tmp_path / "there"
    crashy = f"crashy:mode=exit,marker={tmp_path / 'marker'}"
    models = ["-m", crashy, "-m", "rnn", "--seeds", "0"]
    # --eval-limit too: a worker loads the task itself and must apply it as the driver does.
    args = SWEEP + models + ["--tasks-dir", str(plugins), "--retries", "1", "--eval-limit", "64"]
    (tmp_path / "marker").write_text("already failed")  # in this process: no failure
    assert cli(args + ["--results", str(here)], capsys)[0] == 0
    (tmp_path / "marker").unlink()
    # One worker process: its death breaks the pool, which is rebuilt for the retry.
    code, _, err = cli(args + ["--results", str(there), "--jobs", "1"], capsys)
    assert code == 0, err
    assert any("worker process died" in f["reason"] for f in failures(there))
    loss = {r["cell"]: r["final_train_loss"] for r in records(here)}
    assert {r["cell"]: r["final_train_loss"] for r in records(there)} == loss
    evaluated = {r["cell"]: (r["metrics"], r["dataset"]) for r in records(here)}
    assert {r["cell"]: (r["metrics"], r["dataset"]) for r in records(there)} == evaluated
    assert "[:64]" in json.dumps(next(iter(evaluated.values()))[1])


@pytest.mark.slow
def test_ray_runs_each_cell_as_a_task_with_the_same_results(tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")
    here, there = tmp_path / "here", tmp_path / "there"
    args = SWEEP + ["-m", "rnn", "--seeds", "0,1"]
    assert cli(args + ["--results", str(here)], capsys)[0] == 0
    code, _, err = cli(args + ["--results", str(there), "--executor", "ray"], capsys)
    assert code == 0, err
    assert "sweep 2/2 done" in err
    loss = {r["cell"]: r["final_train_loss"] for r in records(here)}
    assert {r["cell"]: r["final_train_loss"] for r in records(there)} == loss


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _kill_cluster(head, temp_dir: str) -> None:
    """SIGKILL the `ray start` process group and any Ray process of this temp dir."""
    import os
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if temp_dir.encode() in (proc / "cmdline").read_bytes():
                    os.kill(int(proc.name), signal.SIGKILL)


@pytest.mark.slow
def test_ray_joins_an_existing_cluster_with_token_authentication(tmp_path):
    """`ray start --head` with token authentication, then `gradbench run --address`: the
    token is found (RAY_AUTH_TOKEN) without the user setting RAY_AUTH_MODE, the workers
    run the driver's gradbench shipped as py_modules, and the driver writes every record.
    Without the token mode, every RPC to such a cluster is refused."""
    import os
    import secrets
    import subprocess
    import tempfile
    import time

    pytest.importorskip("ray", reason="Ray is in the dev extra: pip install -e '.[dev]'")
    ray_cli = Path(sys.executable).parent / "ray"
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="gbray")  # short: Ray's socket paths have a limit
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env |= {"OMP_WAIT_POLICY": "PASSIVE", "RAY_AUTH_TOKEN": token, "HOME": str(tmp_path)}
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--port", str(port), "--num-cpus", "2"]
        + ["--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir],
        env=env | {"RAY_AUTH_MODE": "token"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(Path(temp_dir).glob("session_*/sockets/raylet")):
            assert head.poll() is None and time.monotonic() < deadline, "ray start failed"
            time.sleep(0.2)
        results = tmp_path / "results"
        args = SWEEP + ["-m", "rnn", "-m", "lstm", "--seeds", "0,1", "--executor", "ray"]
        args += ["--address", f"127.0.0.1:{port}", "--results", str(results)]
        code = "from gradbench.cli import main; main()"
        done = subprocess.run(
            [sys.executable, "-c", code, *args],
            env=env | {"CI": "1"},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert "sweep 4/4 done" in done.stderr
        written = records(results)
        assert sorted((r["model_label"], r["seed"]) for r in written) == [
            ("lstm", 0),
            ("lstm", 1),
            ("rnn", 0),
            ("rnn", 1),
        ]
        shipped = list(Path(temp_dir).glob("session_*/runtime_resources/py_modules_files/*"))
        assert shipped, "gradbench was not shipped to the cluster as py_modules"
    finally:
        _kill_cluster(head, temp_dir)
