"""Baseline against candidate: the regression table that gates a pull request.

Both sides are results directories, or a baseline exported to one JSON file
(``export_baseline``). A *cell* here is a leaderboard row (task, data set,
configuration); the seeds both sides have are paired (seed i against seed i), and for
each metric the difference candidate - baseline gets a bootstrap interval and a paired
test (``gradbench.stats``). Status, by the metric's direction:

- ``better`` / ``worse``: the difference is significant at the level (two-sided) and
  larger than the threshold (relative to the baseline's mean); with one seed a side no
  test is possible, and the threshold alone decides (the table says "1 pair");
- ``unchanged``: anything else;
- ``new`` / ``missing``: the row exists on one side only.

A ``worse`` status is a regression; the command exits non-zero on one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gradbench.atomic import write_text_atomic
from gradbench.errors import UsageError
from gradbench.leaderboard import fmt
from gradbench.records import SCHEMA_VERSION, ResultsStore, RunRecord, finite_or_none
from gradbench.stats import (
    Paired,
    Row,
    TestName,
    format_p,
    metric_direction,
    paired,
    select_row,
    table_rows,
)

BASELINE_FORMAT = "gradbench-baseline"
# What a baseline keeps of each record: enough to group, pair and compare, no series.
BASELINE_FIELDS = (
    "schema_version",
    "run_id",
    "created",
    "task",
    "task_options",
    "dataset",
    "model",
    "model_label",
    "model_options",
    "train_options",
    "seed",
    "budget",
    "parameters",
    "steps",
    "train_seconds",
    "metrics",
    "metric_directions",
    "primary_metric",
    "final_train_loss",
    "diverged",
    "target",
    "verdict",
    "cell",
)


def load_side(path: Path) -> list[RunRecord]:
    """Records of a results directory or of an exported baseline JSON file."""
    path = Path(path)
    if path.is_dir():
        records = ResultsStore(path).load()
        if not records:
            raise UsageError(f"{path}: no run records (runs.jsonl is missing or empty)")
        return records
    if path.is_file():
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UsageError(f"{path}: not a baseline JSON file ({error})") from None
        if not isinstance(payload, dict) or payload.get("format") != BASELINE_FORMAT:
            raise UsageError(f"{path}: not a baseline exported by `gradbench compare --export`")
        records = [
            r for r in payload.get("records", []) if r.get("schema_version") == SCHEMA_VERSION
        ]
        if not records:
            raise UsageError(f"{path}: the baseline holds no records of schema {SCHEMA_VERSION}")
        return records
    raise UsageError(f"{path}: no such results directory or baseline file")


def export_baseline(records: list[RunRecord], path: Path) -> int:
    """Write the latest record of every cell and seed to one JSON file; how many."""
    from gradbench.leaderboard import latest_per_seed

    kept = [{k: r[k] for k in BASELINE_FIELDS if k in r} for r in latest_per_seed(records)]
    kept.sort(key=lambda r: (r["task"], r["model_label"], r["seed"]))
    payload = {"format": BASELINE_FORMAT, "version": 1, "records": finite_or_none(kept)}
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True, allow_nan=False) + "\n")
    return len(kept)


@dataclass(frozen=True)
class Line:
    task: str
    model: str
    metric: str
    status: str
    baseline: float
    candidate: float
    stats: Paired | None
    why: str

    @property
    def regression(self) -> bool:
        return self.status == "worse"


def compare(
    baseline: list[RunRecord],
    candidate: list[RunRecord],
    *,
    threshold: float = 0.02,
    level: float = 0.05,
    test: TestName = "t",
    confidence: float = 0.95,
) -> list[Line]:
    base_rows = _by_cell(table_rows(baseline))
    cand_rows = _by_cell(table_rows(candidate))
    common = set(base_rows) & set(cand_rows)
    if not common:
        raise UsageError(
            "the baseline and the candidate have no cell in common (same task, data set, "
            "model and training options); nothing to compare"
        )
    lines: list[Line] = []
    for key in sorted(set(base_rows) | set(cand_rows)):
        base, cand = base_rows.get(key), cand_rows.get(key)
        row = cand or base
        assert row is not None
        metrics = _metrics(row)
        if base is None or cand is None:
            status = "new" if base is None else "missing"
            for metric in metrics:
                value = row.mean(metric)
                lines.append(
                    Line(
                        row.task,
                        row.label,
                        metric,
                        status,
                        value if base else math.nan,
                        value if cand else math.nan,
                        None,
                        f"only in the {'candidate' if base is None else 'baseline'}",
                    )
                )
            continue
        for metric in metrics:
            higher = _direction(base, cand, metric)
            result = paired(
                cand.observations(metric),
                base.observations(metric),
                metric,
                test=test,
                confidence=confidence,
            )
            lines.append(_judge(row, metric, higher, result, threshold, level))
    return lines


def _by_cell(tables: dict[str, list[Row]]) -> dict[tuple[str, str], Row]:
    return {(row.title, row.config): row for rows in tables.values() for row in rows}


def _metrics(row: Row) -> list[str]:
    first = next(iter(row.records.values()))
    return list(first["metric_directions"])


def _direction(base: Row, cand: Row, metric: str) -> bool:
    try:
        return bool(metric_direction([*base.records.values(), *cand.records.values()], metric))
    except UsageError as error:  # the sides disagree: say on which row
        raise UsageError(f"{base.title} {base.label}: {error}") from None


def _judge(
    row: Row, metric: str, higher: bool, result: Paired, threshold: float, level: float
) -> Line:
    def line(status: str, why: str) -> Line:
        return Line(row.task, row.label, metric, status, result.mean_b, result.mean_a, result, why)

    if result.n == 0:
        return line("unchanged", "no seed with finite values on both sides")
    gain = result.difference if higher else -result.difference
    scale = abs(result.mean_b) if result.mean_b else 1.0
    relative = gain / scale + 0.0  # + 0.0: no "-0.0%" for an unchanged lower-is-better metric
    beyond = abs(relative) > threshold
    direction = "better" if gain > 0 else "worse"
    if result.n == 1:
        if beyond:
            return line(direction, f"1 pair: no test; {relative:+.1%} beyond ±{threshold:.0%}")
        return line("unchanged", f"1 pair: {relative:+.1%} within ±{threshold:.0%}")
    significant = result.p_value < level
    if significant and beyond:
        return line(direction, f"p={format_p(result.p_value)}, {relative:+.1%}")
    if significant:
        return line(
            "unchanged", f"p={format_p(result.p_value)} but {relative:+.1%} within ±{threshold:.0%}"
        )
    return line("unchanged", f"p={format_p(result.p_value)} >= {level:g}")


def to_frame(lines: list[Line]) -> pd.DataFrame:
    rows = []
    for item in lines:
        stats = item.stats
        rows.append(
            {
                "task": item.task,
                "model": item.model,
                "metric": item.metric,
                "baseline": fmt(item.baseline),
                "candidate": fmt(item.candidate),
                "difference": fmt(stats.difference) if stats and stats.n else "—",
                "95% interval": stats.interval_text() if stats else "—",
                "seeds": stats.n if stats else 0,
                "status": item.status,
                "why": item.why,
            }
        )
    return pd.DataFrame(rows)


def summary(lines: list[Line]) -> str:
    counts = pd.Series([item.status for item in lines]).value_counts()
    parts = [f"{counts.get(s, 0)} {s}" for s in ("worse", "better", "unchanged", "new", "missing")]
    return ", ".join(parts)


def to_markdown(lines: list[Line]) -> str:
    """A Markdown table for a pull request or ``$GITHUB_STEP_SUMMARY``."""
    frame = to_frame(lines)
    regressions = sum(item.regression for item in lines)
    head = "## gradbench: baseline vs candidate\n\n"
    verdict = (
        f"**{regressions} regression(s)**" if regressions else "**No regression**"
    ) + f" ({summary(lines)}).\n\n"
    return head + verdict + frame.to_markdown(index=False) + "\n"


def add_versus(
    tables: dict[str, pd.DataFrame],
    records: list[RunRecord],
    reference: str,
    *,
    test: TestName = "t",
    confidence: float = 0.95,
) -> None:
    """``leaderboard --vs MODEL``: every row's paired difference from the reference row
    on the table's primary metric (row - reference), interval and p, as a column.

    Tables without the reference row get "—"; the column is listed in the frame's
    ``extra_columns`` attribute so the leaderboard's renderings show it.
    """
    rows_by_title = table_rows(records)
    found = False
    for title, frame in tables.items():
        rows = rows_by_title.get(title, [])
        primary = frame.attrs["primary_metric"]
        column = f"Δ {primary} vs {reference}"
        try:
            ref = select_row(rows, reference)
        except UsageError:
            frame[column] = "—"
            frame.attrs["extra_columns"] = [*frame.attrs.get("extra_columns", []), column]
            continue
        found = True
        by_label = {row.label: row for row in rows}
        cells = []
        for label in frame["model"]:
            row = by_label.get(label)
            if row is None or row is ref:
                cells.append("—" if row is None else "reference")
                continue
            result = paired(
                row.observations(primary),
                ref.observations(primary),
                primary,
                test=test,
                confidence=confidence,
            )
            if result.n == 0:
                cells.append("no common seed")
                continue
            text = f"{fmt(result.difference, 3)} {result.interval_text(2)}"
            if result.n > 1:
                text += f" p={format_p(result.p_value)}"
            cells.append(text + f" n={result.n}")
        frame[column] = cells
        frame.attrs["extra_columns"] = [*frame.attrs.get("extra_columns", []), column]
    if not found:
        raise UsageError(f"--vs {reference!r}: no table has a row of that model")
