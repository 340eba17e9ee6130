"""`compare`: status per task, model and metric; regressions, exports, Markdown, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_records import rec, store_with
from typer.testing import CliRunner

from gradbench import compare as cmp
from gradbench.cli import app
from gradbench.errors import UsageError

BASE = {"resnet-20": [0.90, 0.91, 0.92], "plain-20": [0.85, 0.86, 0.84]}


def side(values: dict[str, list[float]], task: str = "image") -> list[dict]:
    return [rec(task, m, s, v) for m, vs in values.items() for s, v in enumerate(vs)]


def status(lines, model: str, metric: str = "test_accuracy") -> str:
    return next(line.status for line in lines if line.model == model and line.metric == metric)


def test_a_planted_regression_is_worse_and_the_rest_unchanged() -> None:
    candidate = {"resnet-20": [0.80, 0.82, 0.81], "plain-20": [0.851, 0.859, 0.842]}
    lines = cmp.compare(side(BASE), side(candidate))
    assert status(lines, "resnet-20") == "worse"
    assert status(lines, "plain-20") == "unchanged"
    worse = next(
        line for line in lines if line.model == "resnet-20" and line.metric == "test_accuracy"
    )
    assert worse.regression and worse.baseline == pytest.approx(0.91)
    assert worse.candidate == pytest.approx(0.81) and worse.stats.n == 3
    assert worse.stats.ci_high < 0  # candidate - baseline


def test_better_new_missing_and_lower_is_better_metrics() -> None:
    base = side({"rnn": [0.17, 0.16, 0.18], "gru": [0.05, 0.06, 0.04]}, "adding-100")
    cand = side({"rnn": [0.10, 0.09, 0.11], "lstm": [0.01, 0.02, 0.01]}, "adding-100")
    lines = cmp.compare(base, cand)
    assert status(lines, "rnn", "test_mse") == "better"  # lower MSE is better
    assert status(lines, "lstm", "test_mse") == "new"
    assert status(lines, "gru", "test_mse") == "missing"
    assert not any(line.regression for line in lines)


def test_a_significant_change_within_the_threshold_is_unchanged() -> None:
    candidate = {"resnet-20": [0.899, 0.909, 0.919], "plain-20": BASE["plain-20"]}
    lines = cmp.compare(side(BASE), side(candidate), threshold=0.02)
    line = next(item for item in lines if item.model == "resnet-20")
    assert line.status == "unchanged" and "within" in line.why


def test_one_seed_uses_the_threshold_alone() -> None:
    lines = cmp.compare(side({"resnet-20": [0.9]}), side({"resnet-20": [0.7]}))
    assert status(lines, "resnet-20") == "worse"
    assert "1 pair" in next(line.why for line in lines if line.model == "resnet-20")


def test_no_common_cell_is_a_usage_error() -> None:
    other = [rec("image", "resnet-20", s, v, train={"lr": 0.1}) for s, v in enumerate([0.9, 0.9])]
    with pytest.raises(UsageError, match="no cell in common"):
        cmp.compare(side(BASE), other)


def test_cli_exit_codes_markdown_and_an_exported_baseline(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    base_dir, cand_dir = tmp_path / "base", tmp_path / "cand"
    store_with(base_dir, side(BASE), with_series=False)
    regressed = {"resnet-20": [0.80, 0.82, 0.81], "plain-20": BASE["plain-20"]}
    store_with(cand_dir, side(regressed), with_series=False)
    runner = CliRunner()
    exported = tmp_path / "baseline.json"
    result = runner.invoke(app, ["compare", str(base_dir), "--export", str(exported)])
    assert result.exit_code == 0, result.output
    payload = json.loads(exported.read_text())
    assert payload["format"] == "gradbench-baseline" and len(payload["records"]) == 6
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = runner.invoke(app, ["compare", str(exported), str(cand_dir), "-f", "markdown"])
    assert result.exit_code == 1
    assert "**1 regression(s)**" in result.stdout
    worse_rows = [line for line in result.stdout.splitlines() if "| worse" in line]
    assert len(worse_rows) == 1 and "resnet-20" in worse_rows[0]
    assert summary.read_text().startswith("## gradbench: baseline vs candidate")
    # The same directory against itself: nothing changed, exit 0.
    result = runner.invoke(app, ["compare", str(base_dir), str(base_dir)])
    assert result.exit_code == 0, result.output


def test_cli_bad_inputs_exit_2_and_write_nothing(tmp_path: Path) -> None:
    base_dir = tmp_path / "base"
    store_with(base_dir, side(BASE), with_series=False)
    other_dir = tmp_path / "other"
    store_with(other_dir, side({"resnet-20": [0.9]}, "adding-100"), with_series=False)
    out = tmp_path / "table.md"
    runner = CliRunner()
    for args in (
        [str(base_dir), str(other_dir)],
        [str(base_dir), str(tmp_path / "nowhere")],
        [str(tmp_path / "table.md"), str(base_dir)],
    ):
        result = runner.invoke(app, ["compare", *args, "-o", str(out)])
        assert result.exit_code == 2, (args, result.output)
        assert not out.exists()


def test_leaderboard_vs_adds_the_paired_difference_to_every_row(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    store_with(folder, side(BASE), with_series=False)
    runner = CliRunner()
    result = runner.invoke(
        app, ["leaderboard", "--results", str(folder), "--vs", "plain-20", "-f", "markdown"]
    )
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if line.startswith("| resnet-20"))
    # resnet - plain over seeds 0..2: 0.05, 0.05, 0.08 -> mean 0.06, three pairs.
    assert row.rstrip(" |").endswith("n=3") and "| 0.06 [" in row
    assert "Δ test_accuracy vs plain-20" in result.stdout
    result = runner.invoke(app, ["leaderboard", "--results", str(folder), "--vs", "lstm"])
    assert result.exit_code == 2
