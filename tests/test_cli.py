"""The command line, in process: one-line errors, listing, an end-to-end run, leaderboards."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import cli

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
        (["run", "image", "-m", "plain-8", "--optimizer", "foo"], 2, "'foo' is not one of"),
        (["run", "image", "-m", "plain-8", "--clip-norm", "1", "--clip-value", "1"], 2, "not both"),
        (["run", "image", "-m", "plain-8", "--activation", "swish"], 2, "activation 'swish'"),
        (["run", "image", "-m", "plain-8", "--init", "zeros"], 2, "unknown init 'zeros'"),
        (["run", "image", "-m", "plain-8", "--steps", "x"], 2, "Invalid value for '--steps'"),
        (["run", "image", "-m", "plain-8", "--bogus"], 2, "No such option: --bogus"),
        (["run", "image"], 2, "Missing option '--model'"),
        (["run", "image", "-m", "plain-8", "-O", "nope=1"], 2, "task image has no option 'nope'"),
        (
            ["run", "image", "-m", "plain-8", "-O", "train_limit=0"],
            2,
            "train_limit='0': input should be greater than or equal to 1",
        ),
        (["run", "image", "-m", "mlp-3", "--batch-norm", "--width", "0"], 2, "'--width'"),
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
    assert_one_line_failure(code, err, 2, "'widgets' is not one of 'tasks', 'models'")


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
        # Other keys (width_multiplier, ...) are the models' own defaults.
        assert {
            "depth": 8,
            "width": 4,
            "activation": "relu",
            "batch_norm": True,
            "norm": "batch",  # settled from the batch_norm shorthand
            "residual": r["model"] == "resnet-8",
            "width_multiplier": 1.0,
            "init": "default",
        }.items() <= r["model_options"].items()
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
    # The option every row shares moves to the caption; the names keep what differs.
    assert "plain-8 " in out and "resnet-8 " in out and "every row: width=4" in out
    assert "train[:512]" in out and "…" not in out
    code, out, _ = cli(["leaderboard", "--wide", "--results", str(end_to_end)], capsys)
    assert "plain-8:width=4" in out and "GFLOP/step" in out and "…" not in out


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
    assert_one_line_failure(code, err, 2, "'xml' is not one of 'table', 'markdown'")
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


def test_run_prepares_the_plan_it_was_asked_for(tmp_path: Path, monkeypatch, capsys) -> None:
    """The plan `run` hands to the runner, checked without training anything."""
    import gradbench.cli as cli_module

    seen = {}

    def fake_execute(plan, task, store, *, as_json, **execution):
        seen.update(plan=plan, task=task, store=store)
        return []

    monkeypatch.setattr(cli_module, "execute_plan", fake_execute)
    args = ["run", "adding-10", "-m", "rnn:width=8", "-m", "gru", "--seeds", "0-2"]
    args += ["--steps", "7", "--lr", "0.003", "--optimizer", "sgd", "--eval-limit", "50"]
    args += ["--clip-norm", "1", "--width", "16", "-O", "train_size=64", "-O", "test_size=100"]
    args += ["--json", "--results", str(tmp_path / "r")]
    code, out, err = cli(args, capsys)
    assert code == 0, err
    plan = seen["plan"]
    assert plan.task == "adding-10" and plan.seeds == [0, 1, 2]
    assert [m.label for m in plan.models] == ["rnn:width=8", "gru"]
    assert plan.task_options == {"train_size": 64, "test_size": 100}  # typed, not text
    assert plan.shared_model_options["width"] == 16
    train = plan.train
    assert (train.steps, train.lr, train.optimizer, train.clip_norm) == (7, 0.003, "sgd", 1.0)
    assert type(train.optimizer) is str  # the enum's value, as records hold it
    assert train.batch_size == 64  # the task's own default, not overridden
    assert train.eval_limit == 50 and seen["task"].eval_limit == 50
    assert seen["task"].dataset_id("test").split == "test[:50]"
    assert not (tmp_path / "r").exists()  # nothing written before the first run


def test_an_alias_is_planned_under_the_task_name(monkeypatch) -> None:
    from gradbench.plan import prepare_plan
    from gradbench.plugins import load_plugins

    load_plugins()
    prepared = prepare_plan(
        "fashion-mnist",
        ["plain-8"],
        seeds="3",
        train_options={"steps": 1},
        task_options={"train_limit": "128"},
    )
    assert prepared.task == "image" and prepared.task_options == {"train_limit": 128}
    assert prepared.seeds == [3] and prepared.train_options == {"steps": 1}


@pytest.mark.parametrize("flag, expected", [([], 0), (["--fail-on-diverged"], 3)])
def test_fail_on_diverged(flag: list[str], expected: int, tmp_path: Path, monkeypatch, capsys):
    import gradbench.cli as cli_module

    def diverging(plan, task, store, *, as_json, **execution):
        return [{"model_label": "rnn", "diverged": True}, {"model_label": "gru", "diverged": False}]

    monkeypatch.setattr(cli_module, "execute_plan", diverging)
    args = ["run", "adding-10", "-m", "rnn", "--steps", "1", "--json", "-O", "train_size=64"]
    code, _, err = cli(args + flag + ["--results", str(tmp_path)], capsys)
    assert code == expected
    if expected:
        assert err.strip().splitlines() == [
            "gradbench: error: 1 of 2 runs diverged (rnn); --fail-on-diverged"
        ]


def test_help_lists_the_choices(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("TERMINAL_WIDTH", "200")
    code, out, _ = cli(["run", "--help"], capsys)
    assert code == 0
    for choice in ("sgd-momentum", "cosine", "bf16", "cuda", "full", "params", "flops"):
        assert choice in out, choice
    assert "--fail-on-diverged" in out and "--eval-limit" in out


def test_list_verbose_shows_options_and_defaults(capsys) -> None:
    code, out, _ = cli(["list", "tasks", "--json", "--verbose", "-p", "adding"], capsys)
    (adding,) = json.loads(out)
    options = {o["name"]: o for o in adding["options"]}
    assert options["train_size"]["default"] == 20_000 and ">= 1" in options["train_size"]["type"]
    assert "length" not in options  # set by the name: adding-T
    code, out, _ = cli(["list", "models", "-v", "-p", "mlp"], capsys)
    assert code == 0 and "width" in out and "128" in out


def test_list_verbose_shows_the_options_a_model_takes_on_other_input_kinds(capsys) -> None:
    code, out, _ = cli(["list", "models", "--json", "-v", "-p", "gru"], capsys)
    (gru,) = json.loads(out)
    assert "attention" not in {o["name"] for o in gru["options"]}
    seq2seq = {o["name"]: o["default"] for o in gru["variants"]["seq2seq"]}
    assert seq2seq["attention"] == "none"


def test_the_command_modules_import_each_other_not(tmp_path: Path) -> None:
    """The command modules import the shared options, never gradbench.cli."""
    import subprocess
    import sys

    modules = ("ablate_cli", "budget_cli", "inspect_cli", "leaderboard_cli", "list_cli")
    modules += ("suite_cli", "sweep_cli", "plan")
    code = (
        "import sys\n"
        + "".join(f"import gradbench.{name}\n" for name in modules)
        + "assert 'gradbench.cli' not in sys.modules, 'cycle'\n"
        "assert 'torch' not in sys.modules, 'torch at import'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_environment_variable_names_agree() -> None:
    """cli_options names the variables its options read; the modules reading them agree."""
    from gradbench import cli_options, data, plugins, records

    assert (cli_options.DATA_ENV, cli_options.CACHE_ENV) == (data.DATA_ENV, data.CACHE_ENV)
    assert cli_options.RESULTS_ENV == records.RESULTS_ENV
    assert cli_options.TASKS_DIR_ENV == plugins.TASKS_DIR_ENV


def test_help_and_builtin_task_modules_do_not_import_torch() -> None:
    """`--help` and every built-in task module (all that `list tasks` imports) stay light."""
    import subprocess
    import sys

    heavy = ("torch", "pandas", "sacrebleu", "tokenizers", "soundfile", "torchmetrics")
    code = (
        "import sys\n"
        "from gradbench.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "import gradbench_tasks.image, gradbench_tasks.text, gradbench_tasks.synthetic\n"
        "from gradbench.plugins import load_plugins\n"
        "from gradbench.registry import TASKS\n"
        "load_plugins(models=False)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('gradbench_tasks.'))\n"
        "assert {'gradbench_tasks.speech', 'gradbench_tasks.translation'} <= set(loaded), loaded\n"
        "assert 'speech-commands' in TASKS, TASKS.list()\n"
        f"heavy = [m for m in {heavy!r} if m in sys.modules]\n"
        "assert not heavy, f'imported at load: {heavy}'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "GRADBENCH_TASKS_DIR"}  # built-ins only
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr


def test_leaderboard_task_alias_and_model_glob(end_to_end: Path, capsys) -> None:
    args = ["leaderboard", "-f", "csv", "--results", str(end_to_end)]
    code, out, err = cli(args + ["--task", "fashion-mnist", "--model", "res*"], capsys)
    assert code == 0, err
    frame = pd.read_csv(io.StringIO(out))
    assert list(frame["model"]) == ["resnet-8:width=4"] and list(frame["task"]) == ["image"]
    code, _, err = cli(args + ["--model", "lstm*"], capsys)
    assert code == 2 and "no records for models matching lstm*" in err
