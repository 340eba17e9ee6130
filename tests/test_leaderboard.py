"""Leaderboard tables from hand-made records: grouping, statistics, replacement, formats."""

from __future__ import annotations

import io
import json
import math

import pandas as pd
import pytest
from rich.console import Console
from scipy import stats

from gradbench import leaderboard as lb
from gradbench.errors import UsageError
from gradbench.records import SCHEMA_VERSION

TRAIN = {"lr": 0.05, "optimizer": "sgd-momentum", "steps": 100, "device": "cpu", "threads": 2}
_clock = iter(range(10_000))


def rec(
    model: str,
    seed: int,
    accuracy: float | None,
    *,
    loss: float | None = 0.5,
    diverged: bool = False,
    version: str = "v1",
    split: str = "train",
    task: str = "image",
    train: dict | None = None,
    parameters: int = 1000,
) -> dict:
    """A minimal valid record; ``created`` increases with every call (later = newer)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"{model}-{seed}-{next(_clock)}",
        "created": f"2026-01-01T00:00:{next(_clock):05d}",
        "task": task,
        "task_options": {},
        "dataset": {"name": "fashion-mnist", "split": split, "version": version, "source": "local"},
        "model": model,
        "model_label": model,
        "model_options": {"depth": int(model.split("-")[1])},
        "train_options": TRAIN | (train or {}),
        "seed": seed,
        "budget": {"kind": "steps", "target": 100, "achieved": 100, "match": None},
        "parameters": parameters,
        "steps": 100,
        "train_seconds": 2.0 + seed,
        "metrics": {"test_accuracy": accuracy, "test_loss": loss},
        "metric_directions": {"test_accuracy": True, "test_loss": False},
        "primary_metric": "test_accuracy",
        "final_train_loss": loss,
        "diverged": diverged,
    }


def only_table(records: list[dict]) -> pd.DataFrame:
    tables = lb.build_tables(records)
    assert len(tables) == 1
    return next(iter(tables.values()))


def test_one_row_per_configuration_with_seed_counts_and_t_intervals() -> None:
    plain = [0.80, 0.82, 0.87]
    resnet = [0.90, 0.91]
    records = [rec("plain-20", s, a) for s, a in enumerate(plain)]
    records += [rec("resnet-20", s, a, parameters=1000) for s, a in enumerate(resnet)]
    frame = only_table(records)
    assert list(frame["model"]) == ["resnet-20", "plain-20"]  # best first
    assert list(frame["seeds"]) == [2, 3]
    for row, values in zip(frame.itertuples(), (resnet, plain), strict=True):
        low, high = stats.t.interval(
            0.95, len(values) - 1, loc=sum(values) / len(values), scale=stats.sem(values)
        )
        assert row.test_accuracy_mean == pytest.approx(sum(values) / len(values))
        assert row.test_accuracy_ci95 == pytest.approx((high - low) / 2)
        assert row.parameters == 1000 and row.steps == 100
    assert frame.loc[1, "train_seconds"] == pytest.approx(3.0)  # mean of 2, 3, 4 seconds


def test_one_seed_has_no_interval() -> None:
    frame = only_table([rec("plain-20", 0, 0.8)])
    assert frame.loc[0, "test_accuracy_mean"] == 0.8
    assert math.isnan(frame.loc[0, "test_accuracy_ci95"])
    assert "±" not in lb.to_markdown({"t": frame})


def test_diverged_seeds_are_counted_and_kept_out_of_the_mean() -> None:
    records = [
        rec("plain-56", 0, 0.6),
        rec("plain-56", 1, None, loss=None, diverged=True),
        rec("plain-56", 2, 0.7),
    ]
    frame = only_table(records)
    assert frame.loc[0, "seeds"] == 3 and frame.loc[0, "diverged"] == 1
    assert frame.loc[0, "test_accuracy_mean"] == pytest.approx(0.65)


def test_a_diverged_seed_with_a_finite_metric_stays_out_of_the_mean() -> None:
    # Weights stayed finite, so the run was evaluated: a huge but finite MSE.
    records = [rec("rnn-1", s, 0.1, loss=0.1) for s in (0, 1)]
    records.append(rec("rnn-1", 2, 1e25, loss=1e25, diverged=True))
    for r in records:
        r["primary_metric"] = "test_loss"
        r["metrics"]["test_loss"] = r["metrics"]["test_accuracy"]
    frame = only_table(records)
    assert frame.loc[0, "test_loss_mean"] == pytest.approx(0.1)
    assert frame.loc[0, "train_loss_mean"] == pytest.approx(0.1)
    assert (frame.loc[0, "seeds"], frame.loc[0, "finished"], frame.loc[0, "diverged"]) == (3, 2, 1)


def test_steps_show_the_budget_and_the_divergence_steps_apart() -> None:
    # The case: four seeds diverged at steps 1, 2, 1, 1 and one ran its 200 steps.
    records = []
    for seed, stopped in enumerate([1, 2, 1, 200, 1]):
        record = rec("irnn-1", seed, 0.5 if stopped == 200 else None, diverged=stopped < 200)
        record["steps"] = stopped
        record["diverged_step"] = stopped if stopped < 200 else None
        records.append(record)
    frame = only_table(records)
    assert frame.loc[0, "steps"] == 200  # not 41, the mean of both kinds
    assert frame.loc[0, "diverged_steps"] == "1, 2, 1, 1"
    shown = lb.display_frame(frame)
    assert shown.loc[0, "steps"] == "200" and shown.loc[0, "diverged at"] == "1, 2, 1, 1"
    assert (shown.loc[0, "seeds"], shown.loc[0, "diverged"]) == (5, 4)
    text = lb.to_markdown({"t": frame})
    assert "diverged seeds are counted apart" in text and "over the seeds that finished" in text
    console = Console(file=io.StringIO(), width=400, record=True)
    lb.render_rich({"t": frame}, console)
    assert "diverged seeds are counted apart" in " ".join(console.export_text().split())


def test_a_finished_seed_without_a_metric_is_counted_not_dropped() -> None:
    records = [rec("plain-8", 0, 0.8), rec("plain-8", 1, float("nan")), rec("plain-8", 2, 0.6)]
    frame = only_table(records)
    assert frame.loc[0, "seeds"] == 3 and frame.loc[0, "diverged"] == 0
    assert frame.loc[0, "test_accuracy_mean"] == pytest.approx(0.7)
    assert frame.loc[0, "test_accuracy_n"] == 2
    shown = lb.display_frame(frame)
    assert shown.loc[0, "in mean"] == 2
    assert "'in mean' counts the finished seeds" in frame.attrs["note"]
    # With every seed in the mean, neither the column nor the note appears.
    clean = only_table([rec("plain-8", 0, 0.8), rec("plain-8", 1, 0.6)])
    assert "in mean" not in lb.display_frame(clean) and clean.attrs["note"] is None


def test_two_total_flops_budgets_are_two_rows() -> None:
    records = []
    for total in (1e12, 2e12):
        for seed in (0, 1):
            record = rec("plain-8", seed, 0.8, train={"steps": None})
            record["budget"] = {
                "kind": "flops",
                "target": total,
                "achieved": total,
                "match": None,
                "flops_budget": total,
            }
            records.append(record)
    frame = only_table(records)
    assert len(frame) == 2 and list(frame["seeds"]) == [2, 2]
    assert frame.attrs["budget"] == "flops=1T, flops=2T"


def test_lower_is_better_primary_metric_sorts_ascending() -> None:
    records = [rec("plain-8", 0, 0.5, loss=0.9), rec("resnet-8", 0, 0.5, loss=0.3)]
    for r in records:
        r["primary_metric"] = "test_loss"
    assert list(only_table(records)["model"]) == ["resnet-8", "plain-8"]


def test_different_data_sets_never_share_a_table() -> None:
    records = [
        rec("plain-20", 0, 0.8, version="v1"),
        rec("plain-20", 1, 0.8, version="v1"),
        rec("plain-20", 0, 0.5, version="v2"),
        rec("plain-20", 0, 0.4, split="train[:512]"),
    ]
    tables = lb.build_tables(records)
    assert len(tables) == 3
    seeds = sorted(int(f.loc[0, "seeds"]) for f in tables.values())
    assert seeds == [1, 1, 2]
    assert {f.attrs["dataset"] for f in tables.values()} == {
        "fashion-mnist train v1 (local)",
        "fashion-mnist train v2 (local)",
        "fashion-mnist train[:512] v1 (local)",
    }


def test_rerunning_a_seed_replaces_its_older_record() -> None:
    records = [rec("plain-20", 0, 0.10), rec("plain-20", 1, 0.80), rec("plain-20", 0, 0.90)]
    frame = only_table(records)
    assert frame.loc[0, "seeds"] == 2
    assert frame.loc[0, "test_accuracy_mean"] == pytest.approx(0.85)


def test_differing_training_options_split_rows_and_show_in_the_label() -> None:
    records = [rec("plain-20", 0, 0.8), rec("plain-20", 0, 0.7, train={"lr": 0.1})]
    # Device and thread count do not change what is measured: no split on them.
    records.append(rec("plain-20", 1, 0.8, train={"threads": 8}))
    frame = only_table(records)
    assert sorted(frame["model"]) == ["plain-20 [lr=0.05]", "plain-20 [lr=0.1]"]
    assert frame.set_index("model").loc["plain-20 [lr=0.05]", "seeds"] == 2


def test_task_filter() -> None:
    records = [rec("plain-8", 0, 0.8), rec("plain-8", 0, 0.8, task="other")]
    assert len(lb.build_tables(records)) == 2
    tables = lb.build_tables(records, task="other")
    assert [f.attrs["task"] for f in tables.values()] == ["other"]
    assert lb.build_tables(records, task="missing") == {}


@pytest.fixture
def two_rows() -> dict[str, pd.DataFrame]:
    records = [rec("plain-20", s, 0.8 + s / 100) for s in range(2)]
    records += [rec("resnet-20", s, 0.9 + s / 100) for s in range(2)]
    return lb.build_tables(records)


def test_markdown_output(two_rows: dict[str, pd.DataFrame]) -> None:
    text = lb.to_markdown(two_rows)
    assert "### image \\| fashion-mnist train v1 (local)" in text
    assert "Budget: steps=100. Primary metric: test_accuracy." in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert rows[0].startswith("| model | test_accuracy | test_loss | train_loss | seeds |")
    assert rows[2].startswith("| resnet-20 | 0.905 ± 0.06")
    assert rows[3].startswith("| plain-20 | 0.805 ± 0.06")


def test_csv_output(two_rows: dict[str, pd.DataFrame]) -> None:
    frame = pd.read_csv(io.StringIO(lb.to_csv(two_rows)))
    assert list(frame["model"]) == ["resnet-20", "plain-20"]
    assert list(frame["task"]) == ["image", "image"]
    assert list(frame["seeds"]) == [2, 2]
    assert frame["test_accuracy_mean"].tolist() == pytest.approx([0.905, 0.805])
    assert lb.to_csv({}) == ""


def test_json_output(two_rows: dict[str, pd.DataFrame]) -> None:
    payload = json.loads(lb.to_json(two_rows))
    assert len(payload) == 1
    table = payload[0]
    assert table["task"] == "image" and table["primary_metric"] == "test_accuracy"
    assert [r["model"] for r in table["rows"]] == ["resnet-20", "plain-20"]
    assert table["rows"][0]["test_accuracy_mean"] == pytest.approx(0.905)


def test_rich_table_shows_labels_with_brackets_verbatim() -> None:
    records = [rec("plain-20", 0, 0.8), rec("plain-20", 0, 0.7, train={"lr": 0.1})]
    console = Console(file=io.StringIO(), width=300, record=True)
    lb.render_rich(lb.build_tables(records), console)
    text = console.export_text()
    assert "plain-20 [lr=0.05]" in text and "plain-20 [lr=0.1]" in text
    assert "fashion-mnist train v1 (local)" in text


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Each table markdown-it (CommonMark + GFM tables) finds: rows of cell texts."""
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    tables: list[list[list[str]]] = []
    row: list[str] = []
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            tables.append([])
        elif token.type == "tr_open":
            row = []
        elif token.type in ("th_open", "td_open"):
            row.append(tokens[i + 1].content)
        elif token.type == "tr_close":
            tables[-1].append(row)
    return tables


def test_markdown_renders_as_a_table_with_pipes_in_labels_and_headers() -> None:
    records = [rec("plain-20", s, 0.8, train={"lr": 0.1}) for s in range(2)]
    records += [rec("resnet-20", s, 0.9) for s in range(2)]
    for r in records:
        r["model_label"] = r["model"] + ":act=a|b"  # a pipe inside a label
        r["probes"] = {"first_last_ratio_log10": -1.5}  # the "log10 |g1|/|gL|" column
    text = lb.to_markdown(lb.build_tables(records))
    (table,) = markdown_tables(text)
    header, *rows = table
    assert header[0] == "model" and "log10 |g1|/|gL|" in header
    assert all(len(row) == len(header) for row in rows)
    assert [row[0] for row in rows] == ["resnet-20:act=a|b [lr=0.05]", "plain-20:act=a|b [lr=0.1]"]


def test_terminal_table_fits_100_columns_with_whole_names_and_numbers() -> None:
    records = []
    for model, accuracy in (("plain-56", 0.2345), ("resnet-56", 0.8765), ("plain-20", 0.6401)):
        for seed in range(3):
            r = rec(model, seed, accuracy + seed / 1000, parameters=853_018)
            r["model_label"] = f"{model}:activation=leaky_relu,init=orthogonal,width=16"
            r["model_options"] |= {"width": 16}
            r["probes"] = {"first_last_ratio_log10": -0.4321}
            r["verdict"] = "healthy"
            records.append(r)
    console = Console(width=100, record=True, file=io.StringIO())
    lb.render_rich(lb.build_tables(records), console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "…" not in text
    for name in ("plain-56", "resnet-56", "plain-20", "853,018", "healthy:3"):
        assert name in text
    # The options every row shares are said once, in the caption.
    assert "every row: activation=leaky_relu, init=orthogonal, width=16" in " ".join(text.split())
    wide = Console(width=300, record=True, file=io.StringIO())
    lb.render_rich(lb.build_tables(records), wide, view=lb.TableView(wide=True))
    wide_text = wide.export_text()
    assert "plain-56:activation=leaky_relu,init=orthogonal,width=16" in wide_text
    assert "train s" in wide_text and "test_loss" in wide_text


def test_chosen_columns_and_unknown_columns() -> None:
    tables = lb.build_tables([rec("plain-20", 0, 0.8)])
    view = lb.TableView(columns=["seeds", "params"])
    shown, _ = view.apply(next(iter(tables.values())))
    assert list(shown.columns) == ["model", "seeds", "params"]
    with pytest.raises(UsageError, match="no column 'nope'"):
        lb.TableView(columns=["nope"]).check(tables)


def test_runs_under_different_budgets_get_a_budget_column_and_both_in_the_caption() -> None:
    short = [rec("plain-20", s, 0.7) for s in range(2)]
    long = [rec("plain-20", s, 0.8, train={"steps": 400}) for s in range(2)]
    for r in long:
        r["budget"] = {"kind": "steps", "target": 400, "achieved": 400, "match": None}
        r["steps"] = 400
    (frame,) = lb.build_tables(short + long).values()
    assert "steps=100" in frame.attrs["budget"] and "steps=400" in frame.attrs["budget"]
    shown, _ = lb.TableView().apply(frame)
    assert list(shown.columns[:2]) == ["model", "budget"]
    assert sorted(shown["budget"]) == ["steps=100", "steps=400"]
