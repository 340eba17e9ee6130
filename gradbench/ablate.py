"""Ablation grids: the cross product of mitigation switches, and what each switch changed.

``--over activation=sigmoid,relu --over init=xavier,he`` names switches (a model option
such as ``activation``, ``init``, ``residual``, ``norm``, or a training option such as
``clip_norm``, ``optimizer``, ``schedule``) and the values to try. Every combination is
a *cell*: an ordinary run configuration (its model options in the model's label, its
training options in the record), run under the same budget and seeds as the others.

Two views answer "which of these fixes this model, and do they add up?":

- the cell table: one row per cell, best first on the metric, with the gradient verdict
  and the first/last-layer gradient ratio;
- the main effects: for each switch and each value after the first, the change of the
  metric against the switch's first value (the reference), averaged over every setting
  of the other switches. It is computed per seed (cells of one seed share their data
  order and, per model, their initialisation seed), and the 95% Student-t interval is
  over those per-seed effects (scipy). One seed gives the effect without an interval.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.leaderboard import fmt, mean_interval
from gradbench.mitigations import parse_activation, parse_init, pick_norm
from gradbench.models.build import ModelSpec, any_kind_options, convert
from gradbench.records import RunRecord

# More cells than this need --yes: at one minute a run, 16 cells x 3 seeds is most of an hour.
MAX_CELLS = 16
# Training options that cannot be a switch: the budget is the same for every cell, and
# these change where or how a run is measured, not what is trained.
NOT_SWITCHES = {
    "steps",
    "epochs",
    "seconds",
    "target_metric",
    "target_value",
    "device",
    "threads",
    "probes",
    "eval_batch_size",
    "eval_limit",
    "eval_every",
}
# Values checked by name before any data is read; the rest are checked when every cell's
# model is built once on the task, still before the first run.
VALUE_CHECKS: dict[str, Callable[[Any], Any]] = {
    "activation": parse_activation,
    "init": parse_init,
    "norm": lambda value: pick_norm(value, True),
}
# A metric name for the training loss (the mean of the last steps' losses, in the record).
TRAIN_LOSS = "train_loss"


@dataclass(frozen=True)
class Switch:
    name: str
    values: tuple[str, ...]  # as written; the first is the reference of the main effects
    kind: str  # "model" or "train"


@dataclass
class Cell:
    index: int
    spec: ModelSpec  # the model with its own options and the cell's model switches
    setting: dict[str, str]  # switch -> value as written ("none", "1", "true")
    train: dict[str, Any] = field(default_factory=dict)  # training switches, typed

    @property
    def label(self) -> str:
        return self.spec.label


def parse_over(items: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """``["activation=sigmoid,relu", ...]`` -> [("activation", ("sigmoid", "relu")), ...]."""
    parsed: list[tuple[str, tuple[str, ...]]] = []
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise UsageError(f"--over {item!r} must be SWITCH=VALUE,VALUE (e.g. init=xavier,he)")
        values = tuple(v.strip() for v in text.split(","))
        if not any(values):
            raise UsageError(f"--over {item!r} lists no value")
        if "" in values:
            raise UsageError(f"--over {item!r} has an empty value")
        if len(set(values)) != len(values):
            raise UsageError(f"--over {item!r} repeats a value")
        if any(name == seen for seen, _ in parsed):
            raise UsageError(f"--over {name} is given twice; list all its values in one --over")
        parsed.append((name, values))
    if not parsed:
        raise UsageError("give at least one --over SWITCH=VALUE,VALUE")
    return parsed


def train_switches() -> dict[str, Any]:
    """Training options a grid may vary, with their defaults (for typing values)."""
    return {
        f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name not in NOT_SWITCHES
    }


def classify(
    over: list[tuple[str, tuple[str, ...]]],
    models: list[ModelSpec],
    *,
    shared_model_options: dict[str, Any],
    train_options: dict[str, Any],
) -> list[Switch]:
    """Decide whether each switch is a model or a training option; reject the impossible.

    A model switch must be taken by at least one model of the command (models that do not
    take it run once for all its values); a switch may not also be set elsewhere.
    """
    from gradbench.registry import MODELS

    trainable = train_switches()
    switches = []
    for name, values in over:
        takers = [spec for spec in models if name in any_kind_options(spec.name)]
        if takers:
            for spec in takers:
                entry, implied = MODELS.resolve(spec.name)
                if name == entry.suffix_param and name in implied:
                    raise UsageError(
                        f"--over {name}: {spec.name} sets {name} by its name; "
                        f"compare {entry.name}-N models with -m instead"
                    )
                if name in spec.options:
                    raise UsageError(
                        f"--over {name} and -m {spec.label} both set {name}; give it once"
                    )
            if shared_model_options.get(name) is not None:
                raise UsageError(f"--over {name} and --{name.replace('_', '-')} both set it")
            for spec in takers:  # type errors now, before any data is read
                known = any_kind_options(spec.name)
                for value in values:
                    typed = convert(spec.name, name, value, known[name])
                    if name in VALUE_CHECKS and typed is not None:
                        VALUE_CHECKS[name](typed)
            switches.append(Switch(name, values, "model"))
        elif name in trainable:
            if train_options.get(name) is not None:
                raise UsageError(f"--over {name} and --{name.replace('_', '-')} both set it")
            switches.append(Switch(name, values, "train"))
        else:
            raise UsageError(unknown_switch_message(name, models))
    return switches


def unknown_switch_message(name: str, models: list[ModelSpec]) -> str:
    from gradbench.registry import MODELS

    names = ", ".join(spec.name for spec in models)
    if name in NOT_SWITCHES:
        return f"--over {name}: not a switch (every cell shares the budget and the device)"
    elsewhere = [entry.name for entry in MODELS.entries() if name in any_kind_options(entry.name)]
    if elsewhere:
        return (
            f"--over {name}: no model in this command has it ({names}); "
            f"models with {name}: {', '.join(elsewhere[:5])}"
        )
    takes = sorted(
        {k for spec in models for k in any_kind_options(spec.name)} | set(train_switches())
    )
    return f"unknown switch {name!r}; switches for {names}: {', '.join(takes)}"


def typed_train_value(name: str, value: str) -> Any:
    return convert("training", name, value, train_switches()[name])


def expand(models: list[ModelSpec], switches: list[Switch]) -> list[Cell]:
    """The cross product, per model; a model that lacks a switch runs once for its values."""
    cells: list[Cell] = []
    seen: set[str] = set()
    for spec in models:
        known = any_kind_options(spec.name)
        for combination in itertools.product(*(s.values for s in switches)):
            setting: dict[str, str] = {}
            options = dict(spec.options)
            train: dict[str, Any] = {}
            for switch, value in zip(switches, combination, strict=True):
                if switch.kind == "train":
                    train[switch.name] = typed_train_value(switch.name, value)
                elif switch.name in known:
                    options[switch.name] = convert(
                        spec.name, switch.name, value, known[switch.name]
                    )
                else:
                    continue
                setting[switch.name] = value
            cell_spec = ModelSpec(spec.name, options)
            key = json.dumps([cell_spec.label, train], sort_keys=True, default=str)
            if key in seen:
                continue
            seen.add(key)
            cells.append(Cell(len(cells) + 1, cell_spec, setting, train))
    return cells


def check_size(cells: list[Cell], yes: bool) -> None:
    if len(cells) > MAX_CELLS and not yes:
        raise UsageError(
            f"the grid has {len(cells)} cells, more than {MAX_CELLS}: pass --yes to run them "
            "all (or --dry-run to list them)"
        )


# --- tables -----------------------------------------------------------------------------


def metric_value(record: RunRecord, metric: str) -> float:
    value = (
        record.get("final_train_loss") if metric == TRAIN_LOSS else record["metrics"].get(metric)
    )
    return float("nan") if value is None else float(value)


def higher_is_better(records: list[RunRecord], metric: str) -> bool:
    if metric == TRAIN_LOSS:
        return False
    return bool(records[0]["metric_directions"].get(metric, True))


def check_metric(records: list[RunRecord], metric: str) -> None:
    names = list(records[0]["metrics"]) + [TRAIN_LOSS]
    if metric not in names:
        raise UsageError(f"--metric {metric!r} is not one of {', '.join(names)}")


def interval(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, half-width of the 95% Student-t interval (nan below two values), count.

    Identical values (a switch that changes nothing) have a zero-width interval.
    """
    mean, half = mean_interval(list(values))
    return mean, half, sum(1 for v in values if math.isfinite(v))


def cell_table(
    cells: list[Cell], switches: list[Switch], records: dict[int, list[RunRecord]], metric: str
) -> pd.DataFrame:
    """One row per cell (mean and interval over seeds), best first on ``metric``."""
    several_models = len({cell.spec.name for cell in cells}) > 1
    rows = []
    for cell in cells:
        runs = records.get(cell.index, [])
        row: dict[str, Any] = {"cell": cell.index}
        if several_models:
            row["model"] = cell.spec.name
        for switch in switches:
            row[switch.name] = cell.setting.get(switch.name, "—")
        mean, half, _ = interval([metric_value(r, metric) for r in runs])
        row[f"{metric}_mean"], row[f"{metric}_ci95"] = mean, half
        if metric != TRAIN_LOSS:
            loss, loss_half, _ = interval([metric_value(r, TRAIN_LOSS) for r in runs])
            row["train_loss_mean"], row["train_loss_ci95"] = loss, loss_half
        row["seeds"] = len(runs)
        row["diverged"] = sum(bool(r.get("diverged")) for r in runs)
        verdicts: dict[str, int] = {}
        for r in runs:
            if r.get("verdict"):
                verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
        row["verdict"] = ", ".join(f"{k}:{v}" for k, v in sorted(verdicts.items()))
        ratios = [(r.get("probes") or {}).get("first_last_ratio_log10") for r in runs]
        row["grad_ratio_log10"] = interval([x for x in ratios if x is not None])[0]
        row["parameters"] = int(runs[0]["parameters"]) if runs else None
        row["train_seconds"] = sum(r["train_seconds"] for r in runs) / len(runs) if runs else None
        row["model_label"] = cell.label
        row["run_ids"] = " ".join(r["run_id"] for r in runs)
        rows.append(row)
    frame = pd.DataFrame(rows)
    ascending = not (higher_is_better(_flat(records), metric) if _flat(records) else True)
    return frame.sort_values(
        f"{metric}_mean", ascending=ascending, na_position="last", kind="stable"
    ).reset_index(drop=True)


def main_effects(
    cells: list[Cell], switches: list[Switch], records: dict[int, list[RunRecord]], metric: str
) -> pd.DataFrame:
    """For each switch and value after the first: the metric's change against the first
    value, averaged over the other switches' settings, with a 95% interval over seeds."""
    value_of: dict[tuple[int, int], float] = {}
    for cell in cells:
        for r in records.get(cell.index, []):
            value_of[(cell.index, r["seed"])] = metric_value(r, metric)
    seeds = sorted({seed for _, seed in value_of})
    rows = []
    for switch in switches:
        # A context: the model and every other switch's value; cells differing only here.
        by_context: dict[str, dict[str, Cell]] = {}
        for cell in cells:
            if switch.name not in cell.setting:
                continue
            others = {k: v for k, v in cell.setting.items() if k != switch.name}
            context = json.dumps([cell.spec.name, others], sort_keys=True)
            by_context.setdefault(context, {})[cell.setting[switch.name]] = cell
        reference = switch.values[0]
        for value in switch.values[1:]:
            per_seed = []
            pairs = 0
            for seed in seeds:
                differences = []
                for group in by_context.values():
                    if reference not in group or value not in group:
                        continue
                    on = value_of.get((group[value].index, seed), float("nan"))
                    off = value_of.get((group[reference].index, seed), float("nan"))
                    if math.isfinite(on) and math.isfinite(off):
                        differences.append(on - off)
                if differences:
                    per_seed.append(sum(differences) / len(differences))
                    pairs += len(differences)
            mean, half, n_seeds = interval(per_seed)
            rows.append(
                {
                    "switch": switch.name,
                    "change": f"{reference} -> {value}",
                    f"delta_{metric}": mean,
                    "ci95": half,
                    "seeds": n_seeds,
                    "pairs": pairs,
                    "effect": judge(mean, half, higher_is_better(_flat(records), metric))
                    if _flat(records)
                    else "—",
                }
            )
    return pd.DataFrame(rows)


def judge(mean: float, half: float, higher: bool) -> str:
    """'helps' or 'hurts' when the interval excludes zero; 'unclear' when it does not."""
    if math.isnan(mean):
        return "—"
    if math.isnan(half):
        return "one seed"
    if abs(mean) <= half:
        return "unclear"
    return "helps" if (mean > 0) == higher else "hurts"


def _flat(records: dict[int, list[RunRecord]]) -> list[RunRecord]:
    return [r for runs in records.values() for r in runs]


# --- rendering --------------------------------------------------------------------------


def _with_interval(mean: float, half: float) -> str:
    return fmt(mean) + ("" if math.isnan(half) else f" ± {fmt(half, 2)}")


def display_cells(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    shown = frame.drop(columns=["run_ids", "model_label"]).copy()
    columns = list(shown.columns)
    shown[metric] = [
        _with_interval(m, h)
        for m, h in zip(frame[f"{metric}_mean"], frame[f"{metric}_ci95"], strict=True)
    ]
    columns = [c for c in columns if c not in (f"{metric}_mean", f"{metric}_ci95")]
    if "train_loss_mean" in frame:
        shown["train loss"] = [
            _with_interval(m, h)
            for m, h in zip(frame["train_loss_mean"], frame["train_loss_ci95"], strict=True)
        ]
        columns = [c for c in columns if c not in ("train_loss_mean", "train_loss_ci95")]
    shown["log10 |g1|/|gL|"] = frame["grad_ratio_log10"].map(lambda v: fmt(v, 3))
    shown["params"] = frame["parameters"].map(lambda v: "—" if v is None else f"{int(v):,}")
    shown["train s"] = frame["train_seconds"].map(lambda v: "—" if v is None else f"{v:.1f}")
    lead = [c for c in columns if c not in ("seeds", "diverged", "verdict")]
    lead = [c for c in lead if c not in ("grad_ratio_log10", "parameters", "train_seconds")]
    order = lead + [metric]
    if "train loss" in shown:
        order.append("train loss")
    order += ["verdict", "log10 |g1|/|gL|", "seeds", "diverged", "params", "train s"]
    return shown[order]


def display_effects(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    if frame.empty:
        return frame
    shown = frame.copy()
    shown[f"Δ {metric}"] = [
        _with_interval(m, h) for m, h in zip(frame[f"delta_{metric}"], frame["ci95"], strict=True)
    ]
    return shown[["switch", "change", f"Δ {metric}", "effect", "seeds", "pairs"]]


def to_markdown(cells: pd.DataFrame, effects: pd.DataFrame, meta: dict[str, Any]) -> str:
    metric = meta["metric"]
    parts = [
        f"### Ablation: {meta['task']} ({meta['budget']}, seeds {meta['seeds']})",
        "",
        f"Cells, best first on {metric}:",
        "",
        display_cells(cells, metric).to_markdown(index=False),
        "",
        f"Main effects on {metric} (each value against the first one listed, averaged over "
        "the other switches; 95% interval over seeds):",
        "",
        display_effects(effects, metric).to_markdown(index=False)
        if not effects.empty
        else "(no switch has two values)",
        "",
    ]
    return "\n".join(parts)


def to_csv(cells: pd.DataFrame, effects: pd.DataFrame, meta: dict[str, Any]) -> str:
    """Both views in one long CSV; the ``view`` column says which a row belongs to."""
    frames = [cells.assign(view="cell"), effects.assign(view="main_effect")]
    joined = pd.concat(frames, ignore_index=True)
    joined.insert(0, "view", joined.pop("view"))
    joined.insert(1, "task", meta["task"])
    return joined.to_csv(index=False)


def to_json(cells: pd.DataFrame, effects: pd.DataFrame, meta: dict[str, Any]) -> str:
    payload = {
        **meta,
        "cells": json.loads(cells.to_json(orient="records")),
        "main_effects": json.loads(effects.to_json(orient="records")),
    }
    return json.dumps(payload, indent=2, default=str)


def render_rich(cells: pd.DataFrame, effects: pd.DataFrame, meta: dict[str, Any], console) -> None:
    from rich.markup import escape
    from rich.table import Table

    metric = meta["metric"]
    title = f"ablation: {meta['task']} ({meta['budget']}, seeds {meta['seeds']})"
    for frame, heading in (
        (display_cells(cells, metric), f"{title}; best first on {metric}"),
        (
            display_effects(effects, metric),
            f"main effects on {metric}: each value against the first listed, "
            "averaged over the other switches, 95% interval over seeds",
        ),
    ):
        if frame.empty:
            continue
        table = Table(title=escape(heading))
        for column in frame.columns:
            table.add_column(escape(str(column)), justify="right" if column != "switch" else "left")
        for _, row in frame.iterrows():
            table.add_row(*(escape(str(v)) for v in row))
        console.print(table)
