"""Malformed input through the real command line: one clean line, a non-zero exit, nothing written.

Each case runs ``gradbench.cli.main`` in process (a few run the installed ``gradbench``
as a subprocess) against a results directory that already holds a run, and asserts:
exit code != 0, no traceback, at most two lines on stderr, and the results directory
byte-for-byte as it was. Validation happens before any data is read or any model is
trained, so almost every case takes milliseconds.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fake_records import rec

from gradbench.cli import main
from gradbench.records import ResultsStore, new_run_id

RUN_ID = new_run_id()


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A results directory holding one run (record and series)."""
    root = tmp_path / "results"
    record = rec("adding-100", "rnn", 0, 0.2) | {"run_id": RUN_ID}
    ResultsStore(root).append(record, {"loss": [1.0, 0.5, 0.25]})
    return root


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for a folder)."""
    if not root.exists():
        return {}
    if root.is_file():
        return {".": root.read_bytes()}
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def plugin_dir(tmp_path: Path, name: str, body: str) -> Path:
    folder = tmp_path / f"plugins-{name}"
    folder.mkdir()
    (folder / f"{name}.py").write_text(body, encoding="utf-8")
    return folder


def write_sst2(root: Path, train: str, dev: str = "label\tcontent\n1\tgood\n") -> Path:
    folder = root / "sst2"
    folder.mkdir(parents=True)
    (folder / "train.tsv").write_text(train, encoding="utf-8")
    (folder / "dev.tsv").write_text(dev, encoding="utf-8")
    (folder / "test.tsv").write_text("label\tcontent\n0\tbad\n", encoding="utf-8")
    return root


BASE = ["run", "adding-10", "-m", "rnn:width=8"]
RUN = [*BASE, "--steps", "1", "--probes", "off"]

# (id, arguments after `gradbench`, fragment of the one error line)
CASES: list[tuple[str, list[str], str]] = [
    ("unknown-task", ["run", "addingg-10", "-m", "rnn", "--steps", "1"], "unknown task"),
    ("unknown-model", [*BASE[:2], "-m", "rnnn", "--steps", "1"], "unknown model"),
    ("model-option-key", [*BASE[:2], "-m", "rnn:wdth=4", "--steps", "1"], "no option 'wdth'"),
    ("model-option-type", [*BASE[:2], "-m", "rnn:width=abc", "--steps", "1"], "not an integer"),
    ("model-option-form", [*BASE[:2], "-m", "rnn:width", "--steps", "1"], "key=value"),
    ("model-no-name", [*BASE[:2], "-m", ":width=4", "--steps", "1"], "has no name"),
    ("model-option-nan", [*BASE[:2], "-m", "lstm:forget_bias=nan", "--steps", "1"], "finite"),
    ("model-option-inf", [*BASE[:2], "-m", "lstm:forget_bias=inf", "--steps", "1"], "finite"),
    ("seeds-text", [*RUN, "--seeds", "x"], "--seeds 'x'"),
    ("seeds-repeat", [*RUN, "--seeds", "1,1"], "repeats a seed"),
    ("seeds-backwards", [*RUN, "--seeds", "3-1"], "is empty"),
    ("seeds-huge-range", [*RUN, "--seeds", "0-1000000000"], "more than 10000 seeds"),
    ("seeds-too-large", [*RUN, "--seeds", "4294967296"], "between 0 and 4294967295"),
    ("seeds-negative", [*RUN, "--seeds=-1"], "--seeds '-1'"),
    ("seeds-float", [*RUN, "--seeds", "1.5"], "--seeds '1.5'"),
    ("seeds-empty", [*RUN, "--seeds", ","], "names no seed"),
    ("lr-inf", [*RUN, "--lr", "inf"], "--lr must be a finite number"),
    ("lr-nan", [*RUN, "--lr", "nan"], "--lr must be a finite number"),
    ("lr-negative", [*RUN, "--lr", "-1"], "--lr must be > 0"),
    ("lr-zero", [*RUN, "--lr", "0"], "--lr must be > 0"),
    ("lr-text", [*RUN, "--lr", "fast"], "Invalid value for '--lr'"),
    ("weight-decay-nan", [*RUN, "--weight-decay", "nan"], "--weight-decay must be a finite"),
    ("weight-decay-negative", [*RUN, "--weight-decay", "-1"], "must be >= 0"),
    ("momentum-nan", [*RUN, "--momentum", "nan"], "--momentum must be a finite number"),
    ("momentum-negative", [*RUN, "--momentum", "-0.5"], "must be >= 0"),
    ("clip-norm-inf", [*RUN, "--clip-norm", "inf"], "--clip-norm must be a finite"),
    ("clip-value-zero", [*RUN, "--clip-value", "0"], "--clip-value must be > 0"),
    ("clip-both", [*RUN, "--clip-norm", "1", "--clip-value", "1"], "not both"),
    ("steps-zero", [*BASE, "--steps", "0"], "--steps must be > 0"),
    ("steps-text", [*BASE, "--steps", "x"], "Invalid value for '--steps'"),
    ("epochs-nan", [*RUN, "--epochs", "nan"], "--epochs must be a finite number"),
    ("seconds-inf", [*RUN, "--seconds", "inf"], "--seconds must be a finite number"),
    ("batch-size-zero", [*RUN, "--batch-size", "0"], "--batch-size"),
    ("warmup-negative", [*RUN, "--warmup-steps", "-1"], "must be >= 0"),
    ("eval-every-zero", [*RUN, "--eval-every", "0"], "--eval-every must be > 0"),
    ("eval-limit-zero", [*RUN, "--eval-limit", "0"], "--eval-limit must be > 0"),
    ("threads-zero", [*RUN, "--threads", "0"], "--threads"),
    ("optimizer", [*RUN, "--optimizer", "foo"], "'foo' is not one of"),
    ("schedule", [*RUN, "--schedule", "sawtooth"], "'sawtooth' is not one of"),
    ("precision", [*RUN, "--precision", "fp8"], "'fp8' is not one of"),
    ("probes", [*RUN, "--probes", "lots"], "'lots' is not one of"),
    ("device-unknown", [*RUN, "--device", "tpu"], "'tpu' is not one of"),
    ("no-budget", [*BASE], "give a budget"),
    ("target-no-cap", [*BASE, "--target", "test_mse=0.1", "--eval-every", "5"], "a cap too"),
    ("target-form", [*RUN, "--target", "acc"], "METRIC=VALUE"),
    ("target-no-eval-every", [*RUN, "--target", "test_mse=0.1"], "needs --eval-every"),
    ("target-value", [*RUN, "--target", "test_mse=low", "--eval-every", "1"], "not a number"),
    ("target-inf", [*RUN, "--target", "test_mse=inf", "--eval-every", "1"], "finite number"),
    ("match-kind", [*RUN, "--match", "widths"], "'widths' is not one of"),
    ("match-target-alone", [*RUN, "--match-target", "250k"], "needs --match"),
    ("match-target-text", [*RUN, "--match", "params", "--match-target", "lots"], "not a number"),
    ("match-target-negative", [*RUN, "--match", "params", "--match-target=-5"], "must be > 0"),
    ("tolerance-range", [*RUN, "--tolerance", "2"], "--tolerance"),
    ("flops-budget-text", [*BASE, "--flops-budget", "lots"], "not a number"),
    ("flops-budget-zero", [*BASE, "--flops-budget", "0"], "must be > 0"),
    ("flops-budget-and-steps", [*RUN, "--flops-budget", "1e12"], "drop --steps"),
    ("width-zero", [*RUN, "--width", "0"], "--width"),
    ("activation", [*RUN, "--activation", "swish"], "swish"),
    ("init", [*RUN, "--init", "zeros"], "unknown init 'zeros'"),
    ("task-option-form", [*RUN, "-O", "train_size"], "key=value"),
    ("task-option-key", [*RUN, "-O", "nope=1"], "has no option 'nope'"),
    ("task-option-float-int", [*RUN, "-O", "train_size=10.5"], "valid integer"),
    ("task-option-text-int", [*RUN, "-O", "train_size=abc"], "valid integer"),
    ("task-option-inf-int", [*RUN, "-O", "test_size=inf"], "valid integer"),
    ("task-option-range", [*RUN, "-O", "train_size=0"], "greater than or equal to 1"),
    ("task-option-by-name", [*RUN, "-O", "length=5"], "set by the name"),
    ("task-option-seed", [*RUN, "-O", "data_seed=-1"], "greater than or equal to 0"),
    (
        "pixels-maybe",
        ["run", "seq-fashion", "-m", "rnn", "--steps", "1", "-O", "pixels=maybe"],
        "pixels='maybe': input should be a valid boolean",
    ),
    (
        "train-limit-text",
        ["run", "image", "-m", "mlp-3", "--steps", "1", "-O", "train_limit=abc"],
        "train_limit='abc': input should be a valid integer",
    ),
    (
        "stride-without-pixels",
        ["run", "seq-fashion", "-m", "rnn", "--steps", "1", "-O", "stride=2"],
        "stride applies to pixels=true only",
    ),
    (
        "num-symbols",
        ["run", "copy-5", "-m", "rnn", "--steps", "1", "-O", "num_symbols=1"],
        "greater than or equal to 2",
    ),
    (
        "min-freq",
        ["run", "text", "-m", "rnn", "--steps", "1", "-O", "min_freq=0"],
        "greater than or equal to 1",
    ),
    (
        "batch-larger-than-data",
        [*RUN, "-O", "train_size=8", "-O", "test_size=4", "--batch-size", "9"],
        "larger than the training set (8)",
    ),
    (
        "target-metric-unknown",
        [*RUN, "-O", "train_size=8", "--batch-size", "4", "--target", "acc=1", "--eval-every", "1"],
        "--target metric 'acc' is not one of test_mse",
    ),
    (
        "schedule-without-steps",
        [
            *BASE,
            "--seconds",
            "1",
            "--schedule",
            "cosine",
            "-O",
            "train_size=8",
            "--batch-size",
            "4",
        ],
        "needs a --steps or --epochs budget",
    ),
    ("list-what", ["list", "widgets"], "'widgets' is not one of"),
    ("leaderboard-format", ["leaderboard", "-f", "xml"], "'xml' is not one of"),
    ("leaderboard-columns", ["leaderboard", "--columns", "nope"], "--columns: no column 'nope'"),
    ("leaderboard-task", ["leaderboard", "--task", "nope"], "no records for task 'nope'"),
    ("leaderboard-model", ["leaderboard", "--model", "zz*"], "no records for models"),
    ("inspect-unknown", ["inspect", "ffffffffffff"], "no run 'ffffffffffff'"),
    ("inspect-rows", ["inspect", RUN_ID, "--rows", "1"], "--rows and --width"),
    ("budget-target-no-match", ["budget", "adding-10", "-m", "rnn", "--target", "1k"], "--match"),
    ("budget-time-steps", ["budget", "adding-10", "-m", "rnn", "--time-steps", "-1"], "time-steps"),
    ("budget-match", ["budget", "adding-10", "-m", "rnn", "--match", "x"], "'x' is not one of"),
]


@pytest.mark.parametrize("args, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clean_line_and_changes_nothing(
    args: list[str], fragment: str, results: Path, capsys
) -> None:
    # `list` and `budget` write nothing and take no --results.
    takes_results = args[0] in ("run", "leaderboard", "inspect")
    check(args + (["--results", str(results)] if takes_results else []), fragment, results, capsys)


def check(args: list[str], fragment: str, watched: Path, capsys) -> str:
    before = snapshot(watched)
    with pytest.raises(SystemExit) as stopped:
        main(args)
    _, err = capsys.readouterr()
    assert stopped.value.code not in (0, None), err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert 1 <= len(lines) <= 2, err
    assert fragment in err, err
    assert snapshot(watched) == before
    return err


def test_there_are_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here")
def test_cuda_without_cuda_fails_first(results: Path, capsys) -> None:
    check([*RUN, "--device", "cuda", "--results", str(results)], "no CUDA device", results, capsys)


def test_results_that_is_a_file(tmp_path: Path, capsys) -> None:
    target = tmp_path / "results.txt"
    target.write_text("not a folder")
    check([*RUN, "--results", str(target)], "is not a directory", target, capsys)
    check([*RUN, "--results", str(target / "sub")], "is a file", target, capsys)


def test_runs_jsonl_that_is_a_directory(tmp_path: Path, capsys) -> None:
    root = tmp_path / "results"
    (root / "runs.jsonl").mkdir(parents=True)
    check([*RUN, "--results", str(root)], "runs.jsonl' is not a file", root, capsys)
    check(["leaderboard", "--results", str(root)], "runs.jsonl is not a file", root, capsys)
    check(["inspect", "abc", "--results", str(root)], "runs.jsonl is not a file", root, capsys)


def test_leaderboard_output_and_inspect_plot_targets(results: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    args = ["leaderboard", "-f", "markdown", "-o", str(folder), "--results", str(results)]
    check(args, "is a directory", tmp_path, capsys)
    plot_file = tmp_path / "plot.png"
    plot_file.write_bytes(b"x")
    args = ["inspect", RUN_ID, "--plot", str(plot_file), "--results", str(results)]
    check(args, "--plot", tmp_path, capsys)


def test_missing_folders(results: Path, tmp_path: Path, capsys) -> None:
    check(
        [*RUN, "--data-dir", str(tmp_path / "none"), "--results", str(results)],
        "does not exist",
        results,
        capsys,
    )
    args = [*RUN, "--tasks-dir", str(tmp_path / "none"), "--results", str(results)]
    check(args, "tasks directory", results, capsys)


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("import sys\nsys.exit(3)\n", "SystemExit: 3"),
        ("raise KeyboardInterrupt\n", "KeyboardInterrupt"),
        ("raise RuntimeError('boom\\nsecond line')\n", "RuntimeError: boom second line"),
        ("import no_such_module_here\n", "ModuleNotFoundError"),
    ],
    ids=["sys-exit", "keyboard-interrupt", "two-line-message", "import-error"],
)
def test_a_plugin_that_breaks_at_import_is_a_plugin_error(
    body: str, fragment: str, results: Path, tmp_path: Path, capsys, restore_registries
) -> None:
    folder = plugin_dir(tmp_path, "broken", body)
    err = check(
        [*RUN, "--tasks-dir", str(folder), "--results", str(results)], fragment, results, capsys
    )
    assert "broken.py" in err and "failed to load" in err


def test_a_task_missing_a_method_is_named(
    results: Path, tmp_path: Path, capsys, restore_registries
) -> None:
    body = """
from gradbench.registry import TASKS
from gradbench.task import MetricSpec


class HalfTask:
    name = "half"
    metrics = (MetricSpec("test_accuracy", True),)

    def input_spec(self): ...
    def batches(self, split, batch_size, seed): ...
    def evaluate(self, model, device, batch_size): ...
    def fake_batch(self, batch_size=4, seed=0): ...
    def dataset_id(self, split): ...


@TASKS.register("half-task-for-a-test")
def half(data):
    return HalfTask()
"""
    folder = plugin_dir(tmp_path, "half", body)
    args = ["run", "half-task-for-a-test", "-m", "mlp-3", "--steps", "1"]
    err = check(
        args + ["--tasks-dir", str(folder), "--results", str(results)], "'loss'", results, capsys
    )
    assert "has no 'loss'" in err


def test_unknown_task_hints_at_a_plugin_folder(
    results: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    folder = tmp_path / "my-plugins"
    folder.mkdir()
    plugin = "from gradbench.registry import TASKS\n\n@TASKS.register('mine')\ndef mine(d): ...\n"
    (folder / "mine.py").write_text(plugin)
    monkeypatch.chdir(tmp_path)
    err = check(
        ["run", "mine", "-m", "rnn", "--steps", "1", "--results", str(results)],
        "unknown task 'mine'",
        results,
        capsys,
    )
    assert "--tasks-dir my-plugins" in err


@pytest.mark.parametrize(
    "train, dev, fragment",
    [
        ("label\tsentence\n1\tgood\n7\tbad\n", None, "train.tsv:3: label 7 is not 0 or 1"),
        ("label\tsentence\n1\tgood\n0\tbad\tworse\n", None, "train.tsv:3: 3 tab-separated"),
        ("label\tsentence\n1\tgood\nx\tbad\n", None, "train.tsv:3: label 'x' is not an integer"),
        ("label\tsentence\n1\tgood\n", "label\tcontent\n", "dev.tsv has no examples"),
    ],
    ids=["label-outside-classes", "ragged-line", "label-not-a-number", "empty-split"],
)
def test_bad_data_content_is_one_line_naming_file_and_line(
    train: str, dev: str | None, fragment: str, results: Path, tmp_path: Path, capsys
) -> None:
    root = write_sst2(tmp_path / "data", train, *([dev] if dev is not None else []))
    args = ["run", "text", "-m", "rnn:width=4", "--steps", "1", "--threads", "1", "--no-download"]
    args += ["--data-dir", str(root), "--cache-dir", str(tmp_path / "cache")]
    check(args + ["--results", str(results)], fragment, results, capsys)


@pytest.mark.slow  # a fresh process imports torch and every plugin: seconds, not ms
@pytest.mark.parametrize(
    "args, fragment",
    [(["run", "seq-fashion", "-m", "rnn", "--steps", "1", "-O", "pixels=maybe"], "valid boolean")],
    ids=["pixels-maybe"],
)
def test_the_installed_command_fails_the_same_way(
    args: list[str], fragment: str, results: Path
) -> None:
    before = snapshot(results)
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "gradbench.cli", *args, "--results", str(results)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert fragment in done.stderr
    assert snapshot(results) == before
