"""Leaderboard tables from run records (pandas): one table per task and data set.

A row is one configuration (model, its options, the training options that differ),
aggregated over seeds: mean and 95% Student-t interval of each metric, seeds, diverged
seeds, parameters, steps and training seconds. Re-running a seed replaces its earlier
record (the latest wins), so repeating a command does not inflate the seed count.
Records from different data sets (name, version, split, source) never share a table.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import pandas as pd
from scipy import stats

from gradbench.records import RunRecord

# Training options that do not change what is measured.
IGNORED_TRAIN_OPTIONS = {"device", "threads", "eval_batch_size", "probes", "eval_every"}


def config_key(record: RunRecord) -> str:
    train = {k: v for k, v in record["train_options"].items() if k not in IGNORED_TRAIN_OPTIONS}
    match = {
        k: v
        for k, v in record["budget"].items()
        if k.startswith("match") and k != "match_achieved" and k != "match_rel_error"
    }
    # Two total-FLOPs budgets are two configurations, even though each model's steps
    # (not a training option) are what the total set.
    match["flops_budget"] = record["budget"].get("flops_budget")
    return json.dumps(
        [record["model"], record["model_options"], train, match, record.get("task_options", {})],
        sort_keys=True,
        default=str,
    )


def dataset_key(record: RunRecord) -> str:
    ds = record["dataset"]
    return f"{ds['name']} {ds['split']} {ds['version']} ({ds['source']})"


def mean_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (nan for one value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return float("nan"), float("nan")
    mean = sum(finite) / len(finite)
    if len(finite) < 2:
        return mean, float("nan")
    sem = stats.sem(finite)
    return mean, float(sem * stats.t.ppf(0.975, len(finite) - 1))


def latest_per_seed(records: list[RunRecord]) -> list[RunRecord]:
    latest: dict[tuple[str, str, str, int], RunRecord] = {}
    for record in sorted(records, key=lambda r: r["created"]):
        latest[(record["task"], dataset_key(record), config_key(record), record["seed"])] = record
    return list(latest.values())


def _differing_train_options(group_records: list[list[RunRecord]]) -> list[str]:
    keys = set()
    for records in group_records:
        keys |= set(records[0]["train_options"])
    differing = []
    for key in sorted(keys - IGNORED_TRAIN_OPTIONS):
        values = {json.dumps(rs[0]["train_options"].get(key), default=str) for rs in group_records}
        if len(values) > 1:
            differing.append(key)
    return differing


def row_label(first: RunRecord, differing: list[str]) -> str:
    """A row's label: the model label, then the training options that differ in its table."""
    extras = [f"{k}={first['train_options'].get(k)}" for k in differing]
    return first["model_label"] + (" [" + ", ".join(extras) + "]" if extras else "")


def build_tables(records: list[RunRecord], task: str | None = None) -> dict[str, pd.DataFrame]:
    """One DataFrame per (task, data set), rows sorted best-first on the primary metric."""
    records = [r for r in records if task is None or r["task"] == task]
    tables: dict[str, pd.DataFrame] = {}
    by_table: dict[tuple[str, str], list[RunRecord]] = {}
    for record in latest_per_seed(records):
        by_table.setdefault((record["task"], dataset_key(record)), []).append(record)
    for (task_name, ds_key), table_records in sorted(by_table.items()):
        groups: dict[str, list[RunRecord]] = {}
        for record in table_records:
            groups.setdefault(config_key(record), []).append(record)
        differing = _differing_train_options(list(groups.values()))
        primary = table_records[0]["primary_metric"]
        directions = table_records[0]["metric_directions"]
        rows = []
        for group in groups.values():
            rows.append(_row(group, differing, directions))
        frame = pd.DataFrame(rows)
        ascending = not directions.get(primary, True)
        frame = frame.sort_values(
            f"{primary}_mean", ascending=ascending, na_position="last", kind="stable"
        ).reset_index(drop=True)
        frame.attrs.update(
            task=task_name,
            dataset=ds_key,
            primary_metric=primary,
            budget=_budget_text(table_records),
            baselines=table_records[0].get("baselines") or {},
        )
        frame.attrs["note"] = aggregation_note(frame)
        tables[f"{task_name} | {ds_key}"] = frame
    return tables


def _compact(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        from gradbench.budget import si_number

        return si_number(float(value))
    return str(value)


def _budget_text(records: list[RunRecord]) -> str:
    kinds = Counter(f"{r['budget']['kind']}={_compact(r['budget']['target'])}" for r in records)
    matches = Counter(
        f"{r['budget'].get('match')}={_compact(r['budget'].get('match_target'))}"
        for r in records
        if r["budget"].get("match")
    )
    text = ", ".join(kinds)
    if matches:
        text += "; matched on " + ", ".join(matches)
    return text


def is_diverged(record: RunRecord) -> bool:
    """A seed whose loss, gradient or weights became NaN/Inf: a result, kept apart."""
    return bool(record.get("diverged")) or record.get("verdict") == "diverged"


def _row(
    group: list[RunRecord], differing: list[str], directions: dict[str, bool]
) -> dict[str, Any]:
    """One configuration's aggregate. Seeds that finished and seeds that diverged are
    kept apart: means, intervals and steps are over the finished seeds only (a diverged
    run that stayed finite may still have been evaluated, at MSE 1e25, say), the
    diverged ones are counted with the step each stopped at, and each metric says over
    how many seeds its mean was taken (``{metric}_n``), so nothing drops out unseen.
    """
    first = group[0]
    label = row_label(first, differing)
    finished = [r for r in group if not is_diverged(r)]
    diverged = sorted((r for r in group if is_diverged(r)), key=lambda r: r["seed"])
    row: dict[str, Any] = {"model": label, "seeds": len(group), "finished": len(finished)}
    row["budget"] = _budget_text(group)  # a column when a table holds several budgets
    for metric in directions:
        values = [r["metrics"].get(metric) for r in finished]
        mean, half = mean_interval(values)
        row[f"{metric}_mean"] = mean
        row[f"{metric}_ci95"] = half
        row[f"{metric}_n"] = sum(_finite(v) for v in values)
    mean, half = mean_interval([r.get("final_train_loss") for r in finished])
    row["train_loss_mean"], row["train_loss_ci95"] = mean, half
    row["diverged"] = len(diverged)
    row["diverged_steps"] = ", ".join(str(r.get("diverged_step")) for r in diverged)
    verdicts = Counter(r.get("verdict") for r in group if r.get("verdict"))
    row["verdicts"] = ", ".join(f"{k}:{v}" for k, v in sorted(verdicts.items()))
    ratios = [(r.get("probes") or {}).get("first_last_ratio_log10") for r in finished]
    row["first_last_log10"] = mean_interval([x for x in ratios if x is not None])[0]
    row["parameters"] = int(first["parameters"])
    flops = [r.get("flops_per_step") for r in group if r.get("flops_per_step")]
    row["flops_per_step"] = flops[0] if flops else float("nan")
    match_errors = [r["budget"].get("match_rel_error") for r in group]
    tolerance = first["budget"].get("match_tolerance")
    row["budget_ok"] = (
        all(e is not None and abs(e) <= tolerance for e in match_errors)
        if first["budget"].get("match") and tolerance is not None
        else None
    )
    # The budget's steps (finished seeds) apart from the divergence steps: a mean of
    # both (41 for 1, 2, 1, 200, 1) would describe neither.
    row["steps"] = sum(r["steps"] for r in finished) / len(finished) if finished else float("nan")
    timed = finished or group  # a run cut short at step 1 did not spend the budget's time
    row["train_seconds"] = sum(r["train_seconds"] for r in timed) / len(timed)
    if first.get("target"):
        reached = [r for r in group if r["target"]["reached"]]
        row["target_reached"] = f"{len(reached)}/{len(group)}"
        # AlgoPerf counts a run that never reached the target as infinitely slow.
        row["time_to_target"] = (
            max(r["target"]["seconds"] for r in reached) if len(reached) == len(group) else math.inf
        )
    return row


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aggregation_note(frame: pd.DataFrame) -> str | None:
    """The caption's word on diverged seeds and means over fewer seeds; None if neither."""
    if frame.empty:
        return None
    notes = []
    if frame["diverged"].sum():
        notes.append(
            "means, intervals and steps are over the seeds that finished; diverged seeds "
            "are counted apart, with the step each stopped at under 'diverged at'"
        )
    primary = frame.attrs.get("primary_metric")
    counts = frame.get(f"{primary}_n") if primary else None
    if counts is not None and (counts != frame["finished"]).any():
        notes.append("'in mean' counts the finished seeds whose metric entered the mean")
    return "; ".join(notes) or None


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞"
        if abs(value) >= 1e5:
            return f"{value:.3g}"
        return f"{value:.{digits}g}"
    return str(value)


def display_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Human columns: 'mean ± ci' strings, compact numbers, empty columns dropped."""
    out = pd.DataFrame()
    out["model"] = frame["model"]
    if "budget" in frame and frame["budget"].nunique() > 1:
        out["budget"] = frame["budget"]
    metrics = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")]
    for metric in metrics:
        out[metric] = [
            fmt(m) + ("" if math.isnan(h) else f" ± {fmt(h, 2)}")
            for m, h in zip(frame[f"{metric}_mean"], frame[f"{metric}_ci95"], strict=True)
        ]
    out["seeds"] = frame["seeds"]
    out["diverged"] = frame["diverged"]
    if frame["diverged"].any():
        out["diverged at"] = frame["diverged_steps"].map(lambda v: v or "—")
    primary = frame.attrs.get("primary_metric")
    if primary and (frame[f"{primary}_n"] != frame["finished"]).any():
        out["in mean"] = frame[f"{primary}_n"]
    if frame["verdicts"].astype(bool).any():
        out["verdicts"] = frame["verdicts"]
    if frame["first_last_log10"].notna().any():
        out["log10 |g1|/|gL|"] = frame["first_last_log10"].map(lambda v: fmt(v, 3))
    out["params"] = frame["parameters"].map(lambda v: f"{v:,}")
    if frame["flops_per_step"].notna().any():
        out["GFLOP/step"] = frame["flops_per_step"].map(lambda v: fmt(v / 1e9, 3))
    if frame["budget_ok"].notna().any():
        out["budget ok"] = frame["budget_ok"].map(
            lambda v: "—" if v is None else ("yes" if v else "NO")
        )
    out["steps"] = frame["steps"].map(lambda v: fmt(float(v), 6))
    out["train s"] = frame["train_seconds"].map(lambda v: f"{v:.1f}")
    for extra in ("target_reached", "time_to_target"):
        if extra in frame:
            out[extra] = frame[extra].map(fmt)
    # Columns a caller added (`leaderboard --vs`: the paired difference from a reference).
    for extra in frame.attrs.get("extra_columns", ()):
        out[extra] = frame[extra]
    return out


def to_markdown(tables: dict[str, pd.DataFrame], view: TableView | None = None) -> str:
    """GitHub-flavoured Markdown: a heading, the caption as a paragraph, then the table.

    Every ``|`` in a title, header or cell is escaped (``log10 |g1|/|gL|`` would
    otherwise split a column), and so are the characters that would start emphasis,
    code or HTML; all columns unless ``view`` chooses.
    """
    view = view or TableView(wide=True)
    parts = []
    for title, frame in tables.items():
        shown, common = view.apply(frame)
        parts.append(f"### {markdown_text(title)}\n")
        paragraph = [
            f"Budget: {markdown_text(frame.attrs['budget'])}. "
            f"Primary metric: {markdown_text(frame.attrs['primary_metric'])}."
        ]
        if common:
            paragraph.append(f"Every row: {markdown_text(common)}.")
        if frame.attrs.get("note"):
            note = frame.attrs["note"]
            paragraph.append(markdown_text(note[0].upper() + note[1:]) + ".")
        if frame.attrs.get("baselines"):
            paragraph.append(
                "Trivial baselines: "
                + markdown_text(
                    ", ".join(f"{k} {fmt(v)}" for k, v in frame.attrs["baselines"].items())
                )
                + "."
            )
        parts.append("\n".join(paragraph))
        parts.append("")
        header = "| " + " | ".join(markdown_text(str(c)) for c in shown.columns) + " |"
        rule = (
            "|" + "|".join(" --- " if i == 0 else " ---: " for i in range(len(shown.columns))) + "|"
        )
        lines = [header, rule]
        for _, row in shown.iterrows():
            lines.append("| " + " | ".join(markdown_text(str(v)) for v in row) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown inline text: ``|`` and the characters that would start
    emphasis, code or HTML escaped."""
    escaped = str(text).replace("\\", "\\\\")
    # Underscores stay: inside a word (test_accuracy, leaky_relu) they start no emphasis.
    for char in "|*`<":
        escaped = escaped.replace(char, "\\" + char)
    return " ".join(escaped.split())  # a newline would end the table row


# Terminal tables: a default that fits 100 columns, and the rest on request.
COMPACT_COLUMNS = (
    "model",
    "budget",
    "{primary}",
    "seeds",
    "diverged",
    "verdicts",
    "log10 |g1|/|gL|",
    "params",
    "steps",
)


class TableView:
    """Which columns a rendering shows, and labels shortened to what differs.

    ``columns``: names to show (``model`` is always first); ``wide``: every column.
    Otherwise the compact default (COMPACT_COLUMNS, the primary metric in its place).
    """

    def __init__(self, columns: list[str] | None = None, wide: bool = False):
        self.columns = columns
        self.wide = wide

    def check(self, tables: dict[str, pd.DataFrame]) -> None:
        """Unknown ``--columns`` names are one usage error listing the known ones."""
        if not self.columns:
            return
        from gradbench.errors import UsageError

        known: list[str] = []
        for frame in tables.values():
            known += [c for c in display_frame(frame).columns if c not in known]
        unknown = [c for c in self.columns if c not in known and c != "budget"]
        if unknown:
            raise UsageError(f"--columns: no column {unknown[0]!r}; there are {', '.join(known)}")

    def apply(self, frame: pd.DataFrame) -> tuple[pd.DataFrame, str]:
        """The shown columns, and the label parts common to every row (for the caption)."""
        shown = display_frame(frame)
        if "budget" in shown:  # rows under one budget together, best first within it
            shown = shown.sort_values("budget", kind="stable").reset_index(drop=True)
        common = ""
        if not self.wide and len(shown) > 1:
            shown["model"], common = shorten_labels(list(shown["model"]))
        if self.wide and not self.columns:
            return shown, common
        primary = frame.attrs.get("primary_metric", "")
        wanted = self.columns or [c.format(primary=primary) for c in COMPACT_COLUMNS]
        if "diverged" in wanted and not self.columns and not frame["diverged"].any():
            wanted = [c for c in wanted if c != "diverged"]
        chosen = ["model"] + [c for c in wanted if c in shown.columns and c != "model"]
        chosen += [c for c in frame.attrs.get("extra_columns", ()) if c not in chosen]
        return shown[chosen], common


def _label_parts(label: str) -> tuple[str, list[str]]:
    """'plain-20:width=16,init=he [lr=0.1]' -> ('plain-20', ['width=16', 'init=he', 'lr=0.1'])."""
    head, _, extras = label.partition(" [")
    name, _, options = head.partition(":")
    parts = [p for p in options.split(",") if p]
    parts += [p.strip() for p in extras.rstrip("]").split(",") if p.strip()]
    return name, parts


def shorten_labels(labels: list[str]) -> tuple[list[str], str]:
    """Drop the option parts every label shares; they are returned once, for the caption."""
    parsed = [_label_parts(label) for label in labels]
    shared = set(parsed[0][1]).intersection(*(set(p) for _, p in parsed[1:]))
    if not shared:
        return labels, ""
    short = []
    for name, parts in parsed:
        rest = [p for p in parts if p not in shared]
        short.append(name + (":" + ",".join(rest) if rest else ""))
    if len(set(short)) < len(short):  # shortening must not merge two rows' names
        return labels, ""
    ordered = [p for p in parsed[0][1] if p in shared]
    return short, ", ".join(ordered)


def to_csv(tables: dict[str, pd.DataFrame]) -> str:
    frames = []
    for frame in tables.values():
        frame = frame.copy()
        frame.insert(0, "dataset", frame.attrs["dataset"])
        frame.insert(0, "task", frame.attrs["task"])
        frames.append(frame)
    if not frames:
        return ""
    return pd.concat(frames, ignore_index=True).to_csv(index=False)


def to_json(tables: dict[str, pd.DataFrame]) -> str:
    payload = []
    for frame in tables.values():
        rows = json.loads(frame.to_json(orient="records"))
        payload.append({**frame.attrs, "rows": rows})
    return json.dumps(payload, indent=2, default=str)


def render_rich(tables: dict[str, pd.DataFrame], console, view: TableView | None = None) -> None:
    """Rich tables for the terminal: compact by default (see TableView), numbers never
    wrapped or cut; the caption names every budget, the shared options, the notes."""
    from rich.markup import escape
    from rich.table import Table

    view = view or TableView()
    # Cells are text, not markup: a label such as "plain-20 [lr=0.1]" would otherwise
    # be read as a rich style tag and vanish from the table.
    for title, frame in tables.items():
        shown, common = view.apply(frame)
        caption = f"budget: {frame.attrs['budget']}"
        if common:
            caption += f"; every row: {common}"
        if frame.attrs.get("note"):
            caption += f"; {frame.attrs['note']}"
        if frame.attrs.get("baselines"):
            caption += "; trivial baselines: " + ", ".join(
                f"{k} {fmt(v)}" for k, v in frame.attrs["baselines"].items()
            )
        if not view.wide and not view.columns:
            caption += "; --wide for every column"
        table = Table(title=escape(title), caption=escape(caption), padding=(0, 1))
        for column in shown.columns:
            if column == "model":
                table.add_column("model", justify="left", overflow="fold")
            else:
                header = escape(str(column))
                table.add_column(header, justify="right", no_wrap=True)
        for _, row in shown.iterrows():
            table.add_row(*(escape(str(v)) for v in row))
        console.print(table)
