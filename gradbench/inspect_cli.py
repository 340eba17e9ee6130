"""`gradbench inspect RUN_ID`: one run's gradient-flow evidence in the terminal, or as PNGs.

The terminal summary gives the verdict and the figures behind it, sparklines of the
loss and the global gradient norm over training, and a small heatmap of per-layer
gradient norms (weight layers as rows, input at the bottom; probe steps as columns).
``--plot DIR`` writes the matplotlib versions (``gradbench.report``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from gradbench.cli_options import ResultsDir, friendly_errors
from gradbench.errors import GradbenchError, UsageError

# numpy and the records module are imported where used: `gradbench --help` imports this
# module and must stay fast.
if TYPE_CHECKING:
    import numpy as np

    from gradbench.records import ResultsStore, RunRecord

BARS = "▁▂▃▄▅▆▇█"
# Heatmap cells: blue (small gradient) to yellow (large), with the bar height repeating it.
COLOURS = ("#30123b", "#4145ab", "#4675ed", "#1bcfd4", "#61fc6c", "#d1e834", "#fe9b2d", "#f5e61e")


def resample(values: np.ndarray, width: int) -> np.ndarray:
    """Mean of the finite values in each of ``width`` equal bins (nan where a bin has none)."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if len(values) <= width:
        return values
    bins = np.array_split(values, width)
    out = np.full(width, np.nan)
    for i, chunk in enumerate(bins):
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            out[i] = finite.mean()
        elif chunk.size:
            out[i] = chunk[0]  # keep an inf/nan visible
    return out


def levels(values: np.ndarray, low: float | None = None, high: float | None = None) -> list[int]:
    """Index into BARS for each value (-1 for non-finite), scaled between low and high."""
    import numpy as np

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return [-1] * len(values)
    low = float(finite.min()) if low is None else low
    high = float(finite.max()) if high is None else high
    span = high - low
    out = []
    for value in values:
        if not math.isfinite(value):
            out.append(-1)
        elif span <= 0:
            out.append(len(BARS) // 2)
        else:
            out.append(min(len(BARS) - 1, max(0, int((value - low) / span * len(BARS)))))
    return out


def sparkline(values: np.ndarray, width: int = 60, log: bool = False) -> str:
    """Bars for a series resampled to ``width``; '×' marks a non-finite value."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.where(values > 0, np.log10(values), np.where(values == 0, -np.inf, values))
        values = np.where(np.isneginf(values), np.nan, values)
    binned = resample(values, width)
    return "".join("×" if i < 0 else BARS[i] for i in levels(binned))


def heatmap(series: dict[str, np.ndarray], rows: int = 16, width: int = 60) -> Text | None:
    """Per-weight-layer log10 RMS gradients (per element) over probe steps, as coloured bars."""
    import numpy as np

    if "layer_grad_norm" not in series:
        return None
    from gradbench.report import weight_layer_grid

    grid, names, steps = weight_layer_grid(series)
    if grid.size == 0:
        return None
    chosen = np.unique(np.linspace(0, len(names) - 1, min(rows, len(names))).round().astype(int))
    columns = np.unique(np.linspace(0, len(steps) - 1, min(width, len(steps))).round().astype(int))
    finite = grid[np.isfinite(grid)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    label_width = min(24, max(len(names[i]) for i in chosen))
    text = Text()
    for i in chosen[::-1]:  # input at the bottom
        text.append(f"  {names[i][-label_width:]:>{label_width}} ")
        for level in levels(grid[i, columns], low, high):
            if level < 0:
                text.append("×", style="bold red")
            else:
                text.append(BARS[level], style=COLOURS[level])
        text.append("\n")
    text.append(
        f"  {'':>{label_width}} steps {steps[columns[0]]}..{steps[columns[-1]]}, "
        f"{len(columns)} columns; colour scale log10 RMS grad {low:+.1f} (▁) .. {high:+.1f} (█)\n"
    )
    return text


def timestep_lines(series: dict[str, np.ndarray], width: int = 60) -> list[str]:
    """||dL/dh_t|| over time steps (from the sequence's start on the left to its end, where
    the loss is, on the right) at the first and the last sampled training step, one log-scale
    sparkline each on a shared scale: a vanishing gradient is a ramp rising to the right."""
    import numpy as np

    if "timestep_grad_norm_from_end" not in series or not len(series["timestep_steps"]):
        return []
    table = np.asarray(series["timestep_grad_norm_from_end"], dtype=np.float64)
    steps = np.asarray(series["timestep_steps"])
    lines = ["  dL/dh_t over time steps, aligned at each sequence's end (right; log scale)"]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(table > 0, np.log10(table), np.nan)[:, ::-1]  # from the start
    # Distances no sampled sequence reached are nan in every row: trim them.
    reached = np.isfinite(logs).any(axis=0)
    if not reached.any():
        return []
    logs = logs[:, reached]
    finite = logs[np.isfinite(logs)]
    low, high = float(finite.min()), float(finite.max())
    for i in sorted({0, len(steps) - 1}):
        bars = "".join(
            "·" if level < 0 else BARS[level]
            for level in levels(resample(logs[i], width), low, high)
        )
        lines.append(f"  at training step {int(steps[i]):>6} {bars}")
    lines.append(
        f"  {'':>24} {logs.shape[1]} time steps; scale 10^{low:+.1f} (▁) .. 10^{high:+.1f} (█)"
    )
    return lines


def _fmt(value: Any, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return format(value, spec)


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def summary_lines(record: RunRecord) -> list[str]:
    """The verdict and the probe figures, as plain lines."""
    p: dict[str, Any] = record.get("probes") or {}
    figures = p.get("verdict_figures") or {}
    lines = [f"verdict: {record.get('verdict') or 'none'}  ({figures.get('rule', 'no probes')})"]
    if figures.get("step") is not None:
        lines[-1] += f" at step {figures['step']}"
    # The overall label is derived from these two windows (docs/probes.md).
    for window in ("start", "end"):
        part = figures.get(window) or {}
        if part:
            steps = part.get("steps") or []
            span = f"steps {steps[0]}..{steps[-1]}" if steps else "no probe steps"
            lines.append(
                f"  {window}: {part.get('verdict') or 'none'} ({span}; "
                f"first/last log10 {_fmt(part.get('first_last_ratio_log10'), '+.2f')}, "
                "dL/dh_0 vs dL/dh_end log10 "
                f"{_fmt(part.get('timestep_log10_start_to_end'), '+.2f')}, "
                f"train loss {_fmt(part.get('train_loss'), '.4g')})"
            )
    if not p:
        lines.append("no probe figures (the run used --probes off)")
        return lines
    lines.append(
        f"first/last-layer RMS grad: log10 {_fmt(p.get('first_last_ratio_log10'), '+.2f')} "
        f"(initial {_fmt(p.get('first_last_ratio_log10_initial'), '+.2f')}, final "
        f"{_fmt(p.get('first_last_ratio_log10_final'), '+.2f')}; "
        f"{p.get('first_layer')} vs {p.get('last_layer')}, {p.get('captures')} probe steps)"
    )
    clip = record.get("clip_hit_rate")
    lines.append(
        f"global grad norm: initial {_fmt(p.get('grad_norm_initial'))}, max "
        f"{_fmt(p.get('grad_norm_max'))} at step {p.get('grad_norm_max_step')} "
        f"(log10 growth {_fmt(p.get('grad_norm_growth_log10'), '+.2f')}), final "
        f"{_fmt(p.get('grad_norm_final'))}; clip-hit rate {_pct(clip)}"
    )
    if p.get("update_ratio_log10_median") is not None:
        lines.append(
            f"update/weight ratio: 10^{_fmt(p.get('update_ratio_log10_median'), '.2f')} median "
            f"(first layer 10^{_fmt(p.get('update_ratio_log10_first_layer'), '.2f')}, "
            f"last 10^{_fmt(p.get('update_ratio_log10_last_layer'), '.2f')})"
        )
    if p.get("saturated_fraction") is not None:
        lines.append(f"saturated sigmoid/tanh units: {_pct(p['saturated_fraction'])}")
    if p.get("dead_fraction") is not None:
        lines.append(
            f"dead ReLU units: {_pct(p['dead_fraction'])} (worst layer and step "
            f"{_pct(p.get('dead_fraction_max'))})"
        )
    if p.get("timestep_log10_start_to_end") is not None:
        lines.append(
            f"dL/dh_t over T={p.get('timestep_length')}: log10 |dL/dh_0|/|dL/dh_end| "
            f"{_fmt(p['timestep_log10_start_to_end'], '+.2f')}, decay "
            f"{_fmt(p.get('timestep_decay_per_step'), '+.4f')} log10/step "
            f"({p.get('timestep_captures')} sampled steps)"
        )
    event = p.get("nonfinite")
    if event:
        where = f" in {event['layer']}" if event.get("layer") else ""
        lines.append(f"non-finite: {event['what']}{where} at step {event['step']}")
    else:
        lines.append("non-finite: none")
    return lines


def find_run(store: ResultsStore, run_id: str) -> RunRecord:
    """The record whose id is ``run_id`` or starts with it; unknown or ambiguous ids raise."""
    records = store.load()
    if not records:
        raise GradbenchError(f"no run records in {store.runs_file}; run `gradbench run` first")
    exact = [r for r in records if r["run_id"] == run_id]
    if exact:
        return exact[-1]
    ids = sorted({r["run_id"] for r in records if r["run_id"].startswith(run_id)})
    if not ids:
        raise UsageError(f"no run {run_id!r} in {store.runs_file}")
    if len(ids) > 1:
        shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
        raise UsageError(f"run id {run_id!r} is ambiguous: it starts {shown}")
    return store.find(ids[0]) or next(r for r in records if r["run_id"] == ids[0])


def inspect_command(
    run_id: Annotated[str, typer.Argument(help="Run id, or a unique prefix of one.")],
    plot: Annotated[
        Path | None,
        typer.Option("--plot", help="Also write PNG plots (gradient flow, dL/dh_t, loss) here."),
    ] = None,
    results: ResultsDir = Path("results"),
    rows: Annotated[int, typer.Option(help="Most weight layers shown in the heatmap.")] = 16,
    width: Annotated[int, typer.Option(help="Most columns of sparklines and heatmap.")] = 60,
) -> None:
    """Show one run's gradient-flow evidence: verdict, ratios, per-layer norms over steps."""
    from gradbench.records import ResultsStore

    console = Console(soft_wrap=True)
    with friendly_errors():
        if rows < 2 or width < 2:
            raise UsageError("--rows and --width must be at least 2")
        if plot is not None:
            from gradbench.plan import check_output_dir

            check_output_dir(plot, "--plot")
        store = ResultsStore(results)
        record = find_run(store, run_id)
        try:
            series = store.series(record)
        except (OSError, ValueError) as error:
            raise GradbenchError(
                f"cannot read the series of run {record['run_id']}: {error}"
            ) from None
        status = (
            f"DIVERGED at step {record.get('diverged_step')} ({record.get('divergence')})"
            if record.get("diverged")
            else f"{record.get('steps')} steps"
        )
        console.print(
            f"[bold]run {record['run_id']}[/]: {record.get('model_label')} on "
            f"{record.get('task')}, seed {record.get('seed')}, {status}, "
            f"{_fmt(record.get('train_seconds'), '.1f')} s training",
            highlight=False,
        )
        for line in summary_lines(record):
            console.print("  " + line, highlight=False)
        if "loss" in series and len(series["loss"]):
            console.print(f"  loss      {sparkline(series['loss'], width)}", highlight=False)
        if "grad_norm" in series and len(series["grad_norm"]):
            console.print(
                f"  grad norm {sparkline(series['grad_norm'], width, log=True)} (log scale)",
                highlight=False,
            )
        for line in timestep_lines(series, width):
            console.print(line, highlight=False)
        grid = heatmap(series, rows, width)
        if grid is not None:
            console.print("  per-layer gradient norms (rows: weight layers, input at the bottom)")
            console.print(grid, end="")
        if plot is not None:
            from gradbench.report import write_plots

            for path in write_plots(record, series, plot):
                console.print(f"  wrote {path}", highlight=False)
