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


def _row(
    group: list[RunRecord], differing: list[str], directions: dict[str, bool]
) -> dict[str, Any]:
    first = group[0]
    label = first["model_label"]
    extras = [f"{k}={first['train_options'].get(k)}" for k in differing]
    if extras:
        label += " [" + ", ".join(extras) + "]"
    row: dict[str, Any] = {"model": label, "seeds": len(group)}
    for metric in directions:
        mean, half = mean_interval([r["metrics"].get(metric) for r in group])
        row[f"{metric}_mean"] = mean
        row[f"{metric}_ci95"] = half
    mean, half = mean_interval([r.get("final_train_loss") for r in group])
    row["train_loss_mean"], row["train_loss_ci95"] = mean, half
    row["diverged"] = sum(bool(r["diverged"]) for r in group)
    verdicts = Counter(r.get("verdict") for r in group if r.get("verdict"))
    row["verdicts"] = ", ".join(f"{k}:{v}" for k, v in sorted(verdicts.items()))
    ratios = [(r.get("probes") or {}).get("first_last_ratio_log10") for r in group]
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
    row["steps"] = sum(r["steps"] for r in group) / len(group)
    row["train_seconds"] = sum(r["train_seconds"] for r in group) / len(group)
    if first.get("target"):
        reached = [r for r in group if r["target"]["reached"]]
        row["target_reached"] = f"{len(reached)}/{len(group)}"
        # AlgoPerf counts a run that never reached the target as infinitely slow.
        row["time_to_target"] = (
            max(r["target"]["seconds"] for r in reached) if len(reached) == len(group) else math.inf
        )
    return row


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
    metrics = [c[: -len("_mean")] for c in frame.columns if c.endswith("_mean")]
    for metric in metrics:
        out[metric] = [
            fmt(m) + ("" if math.isnan(h) else f" ± {fmt(h, 2)}")
            for m, h in zip(frame[f"{metric}_mean"], frame[f"{metric}_ci95"], strict=True)
        ]
    out["seeds"] = frame["seeds"]
    out["diverged"] = frame["diverged"]
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
    return out


def to_markdown(tables: dict[str, pd.DataFrame]) -> str:
    parts = []
    for title, frame in tables.items():
        shown = display_frame(frame)
        parts.append(f"### {title}\n")
        parts.append(
            f"Budget: {frame.attrs['budget']}. Primary metric: {frame.attrs['primary_metric']}."
        )
        if frame.attrs.get("baselines"):
            parts.append(
                "Trivial baselines: "
                + ", ".join(f"{k} {fmt(v)}" for k, v in frame.attrs["baselines"].items())
                + "."
            )
        parts.append("")
        header = "| " + " | ".join(shown.columns) + " |"
        rule = "| " + " | ".join("---" for _ in shown.columns) + " |"
        lines = [header, rule]
        for _, row in shown.iterrows():
            lines.append("| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


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


def render_rich(tables: dict[str, pd.DataFrame], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    # Cells are text, not markup: a label such as "plain-20 [lr=0.1]" would otherwise
    # be read as a rich style tag and vanish from the table.

    for title, frame in tables.items():
        shown = display_frame(frame)
        caption = f"budget: {frame.attrs['budget']}"
        if frame.attrs.get("baselines"):
            caption += "; trivial baselines: " + ", ".join(
                f"{k} {fmt(v)}" for k, v in frame.attrs["baselines"].items()
            )
        table = Table(title=escape(title), caption=escape(caption))
        for column in shown.columns:
            table.add_column(escape(str(column)), justify="left" if column == "model" else "right")
        for _, row in shown.iterrows():
            table.add_row(*(escape(str(v)) for v in row))
        console.print(table)
