"""One self-contained HTML file of a results directory: a section per task and data set.

Each section holds the leaderboard with its intervals, the paired comparisons of every
row against the best one, the verdict counts, the training loss of every row with a
band over seeds, the ∂L/∂h_t curves of every recurrent row overlaid, and one
gradient-flow heatmap (weight layer x step) per row. Plots are PNGs embedded as data
URIs, so the file opens anywhere, offline; the per-run plots are ``gradbench.report``'s.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gradbench import leaderboard as lb
from gradbench import report
from gradbench.atomic import write_text_atomic
from gradbench.records import ResultsStore, RunRecord
from gradbench.stats import Row, format_p, paired, table_rows

# Heatmaps are one per row; past this many rows a section shows the first ones only.
MAX_HEATMAPS = 12

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1d1d1f; background: #fafafa; }
main { max-width: 1280px; margin: 0 auto; padding: 1.5rem 2rem 4rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.5rem 0 .5rem; padding-top: 1rem; border-top: 2px solid #ddd; }
h3 { font-size: 1.02rem; margin: 1.4rem 0 .4rem; color: #333; }
p.meta, p.caption { color: #555; margin: .2rem 0 .6rem; font-size: .9rem; }
nav a { margin-right: 1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .86rem; background: white; margin: .3rem 0; }
th, td { padding: .3rem .6rem; border-bottom: 1px solid #e3e3e3; text-align: right;
         white-space: nowrap; }
th { background: #f0f0f3; position: sticky; top: 0; }
td:first-child, th:first-child { text-align: left; }
.status-holds, .status-better { color: #0a7a2f; font-weight: 600; }
.status-worse, .status-fails { color: #b3261e; font-weight: 600; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1rem; }
figure { margin: 0; background: white; border: 1px solid #e3e3e3; padding: .5rem; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: .8rem; color: #555; margin-top: .3rem; }
"""


def _png(figure: Figure) -> str:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">{cap}</figure>'
    )


def _table(frame: pd.DataFrame, status_column: str | None = None) -> str:
    if frame.empty:
        return "<p class='caption'>(none)</p>"
    parts = ["<div class='scroll'><table><thead><tr>"]
    parts += [f"<th>{html.escape(str(c))}</th>" for c in frame.columns]
    parts.append("</tr></thead><tbody>")
    for _, row in frame.iterrows():
        parts.append("<tr>")
        for column, value in row.items():
            css = ""
            if column == status_column:
                css = f" class='status-{html.escape(str(value).split()[0])}'"
            parts.append(f"<td{css}>{html.escape(str(value))}</td>")
        parts.append("</tr>")
    parts.append("</tbody></table></div>")
    return "".join(parts)


def comparisons_frame(rows: list[Row], metric: str, higher: bool) -> pd.DataFrame:
    """Every row against the best row on ``metric``, paired over seeds."""
    ranked = sorted(
        rows,
        key=lambda r: (
            (-r.mean(metric) if higher else r.mean(metric))
            if not math.isnan(r.mean(metric))
            else math.inf
        ),
    )
    if len(ranked) < 2:
        return pd.DataFrame()
    best = ranked[0]
    lines = []
    for row in ranked[1:]:
        result = paired(row.observations(metric), best.observations(metric), metric)
        lines.append(
            {
                "row": row.label,
                "against": best.label,
                "metric": metric,
                "mean difference": lb.fmt(result.difference) if result.n else "—",
                "95% interval": result.interval_text(),
                f"p ({result.test} test)": format_p(result.p_value),
                "pairs": result.n,
            }
        )
    return pd.DataFrame(lines)


def verdicts_frame(rows: list[Row]) -> pd.DataFrame:
    counts = []
    for row in rows:
        verdicts = pd.Series([r.get("verdict") or "none" for r in row.records.values()])
        counts.append({"row": row.label, **verdicts.value_counts().to_dict()})
    frame = pd.DataFrame(counts).fillna(0)
    for column in frame.columns[1:]:
        frame[column] = frame[column].astype(int)
    return frame


def loss_band_plot(rows: list[Row], series: dict[str, dict], title: str) -> str | None:
    """Training loss per row: the mean over seeds (smoothed), with the min-max band."""
    figure = Figure(figsize=(7.5, 4))
    axes = figure.add_subplot()
    cmap = colormaps["tab10"]
    drawn = 0
    for index, row in enumerate(rows):
        curves = [
            np.asarray(series[r["run_id"]]["loss"], dtype=np.float64)
            for r in row.records.values()
            if "loss" in series.get(r["run_id"], {})
        ]
        curves = [c for c in curves if len(c)]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        grid = np.full((len(curves), length), np.nan)
        for i, curve in enumerate(curves):
            grid[i, : len(curve)] = np.where(np.isfinite(curve), curve, np.nan)
        window = max(1, length // 50)
        smooth = pd.DataFrame(grid.T).rolling(window, min_periods=1).mean().to_numpy().T
        with warnings.catch_warnings():  # steps no seed reached are all-nan columns
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(smooth, axis=0)
            low, high = np.nanmin(smooth, axis=0), np.nanmax(smooth, axis=0)
        steps = np.arange(length)
        color = cmap(index % 10)
        axes.plot(steps, mean, color=color, linewidth=1.3, label=f"{row.label} ({len(curves)})")
        if len(curves) > 1:
            axes.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        return None
    axes.set_xlabel("training step")
    axes.set_ylabel("training loss (smoothed)")
    axes.legend(fontsize=7, title="row (seeds)", title_fontsize=7)
    axes.set_title(f"Training loss, mean and min-max over seeds: {title}", fontsize=9)
    return _png(figure)


def timestep_overlay_plot(rows: list[Row], series: dict[str, dict], title: str) -> str | None:
    """||∂L/∂h|| against the distance from each sequence's end, at the last sampled step,
    one curve per row (first seed). As in ``report.timestep_curve``: only positive,
    finite values (padding is nan, an underflowed gradient 0), the loss's end on the right.
    """
    figure = Figure(figsize=(7.5, 4))
    axes = figure.add_subplot()
    cmap = colormaps["tab10"]
    drawn = 0
    for index, row in enumerate(rows):
        record = next(iter(row.records.values()))
        data = series.get(record["run_id"], {})
        if not len(data.get("timestep_grad_norm_from_end", ())):
            continue
        values = np.asarray(data["timestep_grad_norm_from_end"], dtype=np.float64)[-1]
        steps = np.asarray(data["timestep_steps"])
        shown = np.isfinite(values) & (values > 0)
        if not shown.any():
            continue
        axes.plot(
            np.arange(len(values))[shown],
            values[shown],
            color=cmap(index % 10),
            linewidth=1.3,
            label=f"{row.label} (step {steps[-1]}, seed {record['seed']})",
        )
        drawn += 1
    if not drawn:
        return None
    axes.set_yscale("log")
    axes.invert_xaxis()
    axes.set_xlabel("steps before each sequence's own end (padding left out)")
    axes.set_ylabel("||dL/dh|| (RMS over sampled sequences)")
    axes.legend(fontsize=7)
    axes.set_title(f"Gradient through time, all rows: {title}", fontsize=9)
    return _png(figure)


def heatmap(record: RunRecord, data: dict) -> str | None:
    figure = report.gradient_flow_figure(data, record)
    return _png(figure) if figure is not None else None


def section(title: str, frame: pd.DataFrame, rows: list[Row], store: ResultsStore) -> str:
    anchor = _anchor(title)
    primary = frame.attrs["primary_metric"]
    first = next(iter(rows[0].records.values()))
    higher = first["metric_directions"].get(primary, True)
    series = {}
    for row in rows:
        for record in row.records.values():
            try:
                series[record["run_id"]] = store.series(record)
            except (OSError, ValueError):
                series[record["run_id"]] = {}  # a missing series file: the plots skip it
    parts = [f"<section id='{anchor}'><h2>{html.escape(title)}</h2>"]
    caption = f"Budget: {frame.attrs['budget']}. Primary metric: {primary}."
    if frame.attrs.get("baselines"):
        caption += " Trivial baselines: " + ", ".join(
            f"{k} {lb.fmt(v)}" for k, v in frame.attrs["baselines"].items()
        )
    parts.append(f"<p class='caption'>{html.escape(caption)}</p>")
    parts.append("<h3>Leaderboard (mean ± 95% interval over seeds)</h3>")
    parts.append(_table(lb.display_frame(frame)))
    parts.append(f"<h3>Paired comparisons against the best row on {html.escape(primary)}</h3>")
    parts.append(
        "<p class='caption'>Seed i against seed i; mean difference (row - best), "
        "paired bootstrap interval, paired t test.</p>"
    )
    parts.append(_table(comparisons_frame(rows, primary, higher)))
    parts.append("<h3>Gradient-health verdicts (runs per verdict)</h3>")
    parts.append(_table(verdicts_frame(rows)))
    plots = []
    loss = loss_band_plot(rows, series, title)
    if loss:
        plots.append(_img(loss, f"loss curves {title}", "Training loss, band over seeds"))
    overlay = timestep_overlay_plot(rows, series, title)
    if overlay:
        plots.append(_img(overlay, f"dL/dh_t {title}", "∂L/∂h_t across rows"))
    for row in rows[:MAX_HEATMAPS]:
        record = next(iter(row.records.values()))
        data = series.get(record["run_id"], {})
        if "layer_grad_norm" in data:
            image = heatmap(record, data)
            if image:
                plots.append(
                    _img(
                        image,
                        f"gradient flow {row.label}",
                        f"Gradient flow (layer x step): {row.label}, seed {record['seed']}",
                    )
                )
    if plots:
        parts.append("<h3>Plots</h3><div class='plots'>" + "".join(plots) + "</div>")
    if len(rows) > MAX_HEATMAPS:
        parts.append(f"<p class='caption'>Heatmaps of the first {MAX_HEATMAPS} rows only.</p>")
    parts.append("</section>")
    return "".join(parts)


def _anchor(title: str) -> str:
    return "t-" + "".join(c if c.isalnum() else "-" for c in title.lower()).strip("-")


def build_html(store: ResultsStore, task: str | None = None) -> str:
    records = store.load()
    if task is not None:
        records = [r for r in records if r["task"] == task]
    if not records:
        from gradbench.errors import UsageError

        where = f" of task {task}" if task else ""
        raise UsageError(f"no run records{where} in {store.runs_file}")
    tables = lb.build_tables(records)
    rows_by_title = table_rows(records)
    created = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    nav = " ".join(f"<a href='#{_anchor(t)}'>{html.escape(t.split(' | ')[0])}</a>" for t in tables)
    sections = []
    for title, frame in tables.items():
        sections.append(section(title, frame, rows_by_title[title], store))
    runs = len(lb.latest_per_seed(records))
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>gradbench report: {html.escape(str(store.root))}</title>"
        f"<style>{STYLE}</style></head><body><main>"
        "<h1>gradbench report</h1>"
        f"<p class='meta'>{html.escape(str(store.runs_file))}: {runs} runs (latest per seed), "
        f"{len(tables)} tables; written {created}.</p>"
        f"<nav>{nav}</nav>" + "".join(sections) + "</main></body></html>\n"
    )


def write_report(store: ResultsStore, output: Path, task: str | None = None) -> Path:
    write_text_atomic(output, build_html(store, task))
    return output
