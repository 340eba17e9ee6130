"""The command line, in process: one-line errors, listing, an end-to-end run, leaderboards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from gradbench.cli import main
from gradbench.errors import UsageError
from gradbench.records import SCHEMA_VERSION, ResultsStore
from gradbench.runner import parse_seeds

TINY = [
    "run",
    "image",
    "-O",
    "train_limit=512",
    "--steps",
    "3",
    "--batch-size",
    "32",
    "--probes",
    "off",
    "--device",
    "cpu",
    "--no-download",
]


def cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``gradbench ARGS``."""
    with pytest.raises(SystemExit) as stopped:
        main(args)
    out, err = capsys.readouterr()
    return stopped.value.code, out, err


@pytest.fixture(scope="module")
def end_to_end(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """plain-8 and resnet-8 (width 4), seeds 0 and 1, three steps on 512 images."""
    results = tmp_path_factory.mktemp("e2e")
    args = TINY + ["-m", "plain-8:width=4", "-m", "resnet-8:width=4", "--seeds", "0,1"]
    with pytest.raises(SystemExit) as stopped:
        main(args + ["--data-dir", str(data_dir), "--results", str(results)])
    assert stopped.value.code == 0
    return results


def assert_one_line_failure(code: int, err: str, expected_code: int, fragment: str) -> None:
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("gradbench: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["run", "imagee", "-m", "plain-8"], 2, "unknown task 'imagee'; did you mean image?"),
        (["run", "image", "-m", "resnet-7"], 2, "6n+2"),
        (["run", "image", "-m", "resnt-8"], 2, "did you mean resnet-8"),
        (["run", "image", "-m", "plain-8:wdth=4"], 2, "has no option 'wdth'"),
        (["run", "image", "-m", "plain-8", "--seeds", "x"], 2, "--seeds 'x'"),
        (["run", "image", "-m", "plain-8", "--seeds", "1,1"], 2, "repeats a seed"),
        (["run", "image", "-m", "plain-8", "--seeds", "3-1"], 2, "the range '3-1' is empty"),
        (["run", "image", "-m", "plain-8", "--optimizer", "foo"], 2, "--optimizer 'foo'"),
        (["run", "image", "-m", "plain-8", "--clip-norm", "1", "--clip-value", "1"], 2, "not both"),
        (["run", "image", "-m", "plain-8", "--activation", "swish"], 2, "activation 'swish'"),
        (["run", "image", "-m", "plain-8", "--init", "zeros"], 2, "unknown init 'zeros'"),
        (["run", "image", "-m", "plain-8", "--steps", "x"], 2, "Invalid value for '--steps'"),
        (["run", "image", "-m", "plain-8", "--bogus"], 2, "No such option: --bogus"),
        (["run", "image"], 2, "Missing option '--model'"),
        (["run", "image", "-m", "plain-8", "-O", "nope=1"], 2, "task image has no option 'nope'"),
        (["run", "image", "-m", "plain-8", "-O", "train_limit=0"], 2, "train_limit must be >= 1"),
        (["run", "image", "-m", "mlp-3", "--batch-norm", "--width", "0"], 2, "width must be >= 1"),
        (["run", "image", "-m", "plain-8", "--target", "acc"], 2, "METRIC=VALUE"),
        (
            ["run", "image", "-m", "plain-8:width=4", "--target", "acc=1", "--eval-every", "1"],
            2,
            "--target metric 'acc' is not one of test_accuracy, test_loss",
        ),
        (
            ["run", "image", "-m", "plain-8:width=4", "-O", "train_limit=64", "--batch-size", "65"],
            2,
            "--batch-size 65 is larger than the training set (64)",
        ),
        (["run", "image", "-m", "plain-8:width=4[x]"], 2, "width='4[x]' is not an integer"),
    ],
)
def test_bad_input_is_one_line_and_writes_no_record(
    args: list[str], code: int, fragment: str, capsys, tmp_path: Path, data_dir: Path
) -> None:
    results = tmp_path / "res"
    budget = [] if "--steps" in args else ["--steps", "1"]
    got, out, err = cli(
        args + budget + ["--no-download", "--data-dir", str(data_dir), "--results", str(results)],
        capsys,
    )
    assert_one_line_failure(got, err, code, fragment)
    assert not (results / "runs.jsonl").exists()


def test_a_missing_data_directory_fails_in_one_line(capsys, tmp_path: Path) -> None:
    results = tmp_path / "res"
    code, _, err = cli(
        ["run", "image", "-m", "plain-8", "--steps", "1", "--data-dir", str(tmp_path / "none")]
        + ["--results", str(results)],
        capsys,
    )
    assert_one_line_failure(code, err, 1, "does not exist")
    assert not results.exists()


def test_corrupt_data_fails_in_one_line_and_writes_no_record(
    capsys, tmp_path: Path, mirror_copy
) -> None:
    root = mirror_copy(copy=("t10k-labels-idx1-ubyte.gz",))
    damaged = root / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    results = tmp_path / "res"
    code, _, err = cli(
        TINY + ["-m", "plain-8:width=4", "--data-dir", str(root), "--results", str(results)],
        capsys,
    )
    assert_one_line_failure(code, err, 1, "t10k-labels-idx1-ubyte.gz is corrupt")
    assert not (results / "runs.jsonl").exists()


def test_no_data_and_no_download_fails_in_one_line(capsys, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cold_cache = ["--cache-dir", str(tmp_path / "cache")]  # a warm cache would be used
    code, _, err = cli(
        TINY
        + ["-m", "plain-8", "--data-dir", str(empty), "--results", str(tmp_path / "r")]
        + cold_cache,
        capsys,
    )
    assert_one_line_failure(code, err, 1, "downloads are off")
    assert not (tmp_path / "r").exists()


def test_list_tasks_json(capsys) -> None:
    code, out, _ = cli(["list", "tasks", "--json"], capsys)
    assert code == 0
    tasks = {t["name"]: t for t in json.loads(out)}
    assert tasks["image"]["aliases"] == ["fashion-mnist"]
    assert "Fashion-MNIST" in tasks["image"]["description"]


def test_list_models_with_a_pattern(capsys) -> None:
    code, out, _ = cli(["list", "models", "-p", "res*"], capsys)
    assert code == 0
    assert "resnet[-depth]" in out and "plain" not in out
    code, out, _ = cli(["list", "models", "--json", "-p", "*-*"], capsys)
    families = {m["name"]: m["family"] for m in json.loads(out)}
    assert families["resnet"] == "resnet-{depth}" and families["plain"] == "plain-{depth}"


def test_list_something_else_is_a_usage_error(capsys) -> None:
    code, _, err = cli(["list", "widgets"], capsys)
    assert_one_line_failure(code, err, 2, "'widgets' is not 'tasks' or 'models'")


REQUIRED = {
    "schema_version",
    "run_id",
    "created",
    "task",
    "dataset",
    "model",
    "model_label",
    "model_options",
    "train_options",
    "seed",
    "init_seed",
    "data_seed",
    "budget",
    "parameters",
    "steps",
    "epochs",
    "train_seconds",
    "eval_seconds",
    "metrics",
    "final_train_loss",
    "diverged",
    "diverged_step",
    "environment",
}


def test_end_to_end_run_writes_complete_records(end_to_end: Path) -> None:
    records = ResultsStore(end_to_end).load()
    assert [(r["model_label"], r["seed"]) for r in records] == [
        ("plain-8:width=4", 0),
        ("plain-8:width=4", 1),
        ("resnet-8:width=4", 0),
        ("resnet-8:width=4", 1),
    ]
    for r in records:
        assert REQUIRED <= set(r), REQUIRED - set(r)
        assert r["schema_version"] == SCHEMA_VERSION and r["task"] == "image"
        ds = r["dataset"]
        assert (ds["name"], ds["split"], ds["source"]) == ("fashion-mnist", "train[:512]", "local")
        assert ds["version"].startswith("md5:") and ds["num_examples"] == 512
        assert ds["eval"][0]["split"] == "test" and ds["eval"][0]["num_examples"] == 10000
        assert r["model_options"] == {
            "depth": 8,
            "width": 4,
            "activation": "relu",
            "batch_norm": True,
            "init": "default",
        }
        assert r["init_seed"] == r["data_seed"] == r["seed"]
        assert r["budget"]["kind"] == "steps"
        assert r["budget"]["target"] == r["budget"]["achieved"] == 3 == r["steps"]
        assert r["epochs"] == pytest.approx(3 / 16)  # 512 / 32 = 16 steps per epoch
        assert r["parameters"] == 4934  # same for both: the shortcuts have no parameters
        assert r["train_seconds"] > 0 and r["eval_seconds"] > 0
        assert set(r["metrics"]) >= {"test_accuracy", "test_loss"}
        assert 0 <= r["metrics"]["test_accuracy"] <= 1
        assert r["final_train_loss"] > 0
        assert r["diverged"] is False and r["diverged_step"] is None
        env = r["environment"]
        assert env["torch"] and env["device"] == "cpu" and "git_revision" in env
        assert r["train_options"]["lr"] == 0.05 and r["train_options"]["batch_size"] == 32
        assert len(ResultsStore(end_to_end).series(r)["loss"]) == 3


def test_repeating_a_run_gives_identical_metrics(
    end_to_end: Path, data_dir: Path, tmp_path: Path, capsys
) -> None:
    args = TINY + ["-m", "resnet-8:width=4", "--seeds", "1", "--data-dir", str(data_dir)]
    code, _, _ = cli(args + ["--results", str(tmp_path)], capsys)
    assert code == 0
    again = ResultsStore(tmp_path).load()[0]
    first = [r for r in ResultsStore(end_to_end).load() if r["model"] == "resnet-8"][1]
    assert again["seed"] == first["seed"] == 1
    assert again["metrics"] == first["metrics"]
    assert again["final_train_loss"] == first["final_train_loss"]
    assert again["run_id"] != first["run_id"]


@pytest.mark.parametrize("fmt", ["markdown", "csv", "json"])
def test_leaderboard_formats_show_both_models(end_to_end: Path, fmt: str, capsys) -> None:
    code, out, _ = cli(["leaderboard", "--format", fmt, "--results", str(end_to_end)], capsys)
    assert code == 0
    if fmt == "markdown":
        rows = [line for line in out.splitlines() if line.startswith("| ") and "width=4" in line]
        assert sorted(row.split(" | ")[0] for row in rows) == [
            "| plain-8:width=4",
            "| resnet-8:width=4",
        ]
        assert all(" | 2 | 0 | " in row for row in rows)  # two seeds, none diverged
    elif fmt == "csv":
        frame = pd.read_csv(io.StringIO(out))
        assert sorted(frame["model"]) == ["plain-8:width=4", "resnet-8:width=4"]
        assert list(frame["seeds"]) == [2, 2] and list(frame["parameters"]) == [4934, 4934]
    else:
        (table,) = json.loads(out)
        assert table["dataset"] == "fashion-mnist train[:512] md5:f4a8712d7a06 (local)"
        assert sorted(r["model"] for r in table["rows"]) == ["plain-8:width=4", "resnet-8:width=4"]


def test_leaderboard_table_is_not_truncated_when_piped(end_to_end: Path, capsys) -> None:
    code, out, _ = cli(["leaderboard", "--results", str(end_to_end)], capsys)
    assert code == 0
    assert "plain-8:width=4" in out and "resnet-8:width=4" in out
    assert "train[:512]" in out and "…" not in out


def test_leaderboard_to_a_file(end_to_end: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "out" / "board.md"
    code, out, err = cli(
        ["leaderboard", "-f", "markdown", "-o", str(target), "--results", str(end_to_end)], capsys
    )
    assert code == 0 and out == "" and f"wrote {target}" in err
    assert "| resnet-8:width=4 |" in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["board.md"]  # no partial file left


def test_leaderboard_errors(tmp_path: Path, end_to_end: Path, capsys) -> None:
    code, _, err = cli(["leaderboard", "--results", str(tmp_path)], capsys)
    assert_one_line_failure(code, err, 1, "no run records in")
    code, _, err = cli(["leaderboard", "--format", "xml", "--results", str(end_to_end)], capsys)
    assert_one_line_failure(code, err, 2, "--format 'xml'")
    code, _, err = cli(["leaderboard", "--task", "nope", "--results", str(end_to_end)], capsys)
    assert_one_line_failure(code, err, 2, "no records for task 'nope'")


def test_leaderboard_warns_in_one_line_about_a_torn_record(
    end_to_end: Path, tmp_path: Path, capsys
) -> None:
    copy = tmp_path / "runs.jsonl"
    copy.write_text((end_to_end / "runs.jsonl").read_text() + '{"schema_version": 1, "run')
    code, out, err = cli(["leaderboard", "-f", "csv", "--results", str(tmp_path)], capsys)
    assert code == 0 and len(pd.read_csv(io.StringIO(out))) == 2
    assert err.strip().splitlines() == [
        f"gradbench: warning: {copy}:5: skipping a torn or corrupt record"
    ]


def test_json_lines_and_the_results_environment_variable(
    data_dir: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setenv("GRADBENCH_RESULTS", str(tmp_path / "from-env"))
    monkeypatch.setenv("GRADBENCH_DATA", str(data_dir))
    args = ["run", "fashion-mnist"] + TINY[2:]  # the alias, recorded as "image"
    code, out, err = cli(args + ["-m", "mlp-3:width=8", "--seeds", "0,1", "--json"], capsys)
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 2
    printed = [json.loads(line) for line in lines]
    assert [r["seed"] for r in printed] == [0, 1]
    stored = ResultsStore(tmp_path / "from-env").load()
    assert [r["run_id"] for r in stored] == [r["run_id"] for r in printed]
    assert stored[0]["metrics"] == printed[0]["metrics"]
    assert {r["task"] for r in stored} == {"image"}
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text, seeds", [("0", [0]), ("0,1,2", [0, 1, 2]), ("0-3", [0, 1, 2, 3]), ("5, 0-1,", [5, 0, 1])]
)
def test_seed_lists(text: str, seeds: list[int]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", ",", "a", "1.5", "-1", "0-", "2,0-2"])
def test_bad_seed_lists(text: str) -> None:
    with pytest.raises(UsageError, match="--seeds"):
        parse_seeds(text)
