"""Plots of a run's gradient-flow evidence (the instruments; the quantities are in probes).

Each function takes the run's series (``ResultsStore.series``) and writes one PNG with
matplotlib's Agg canvas directly (no pyplot state, no display needed):

- ``gradient_flow_heatmap``: log10 RMS gradient per element of each weight layer (rows,
  input at the bottom; comparable across layer sizes) over the probe steps (columns);
- ``timestep_curve``: ||∂L/∂h|| against the distance from each sequence's own end, for
  sampled steps, log scale, axes fitted to the values measured (padding and exact
  zeros are left out, not drawn at a floor);
- ``loss_curve``: training loss and global gradient norm per step, with the non-finite
  event and the gradient-explosion step marked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from gradbench.records import RunRecord

FLOOR = 1e-30  # as in gradbench.probes.layer_norms: exact zeros drawn at the floor


def _title(record: RunRecord) -> str:
    verdict = record.get("verdict") or "no verdict"
    return (
        f"{record.get('model_label', record.get('model', '?'))} on {record.get('task', '?')}, "
        f"seed {record.get('seed', '?')} ({verdict})"
    )


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return path


def weight_layer_rms(series: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(RMS grads as steps x layers, layer names, probe steps), weight layers only.

    RMS per element (``layer_grad_rms``), so a 3x3 stem and a 64-channel block compare;
    series written before it existed fall back to the raw norms.
    """
    kinds = [str(k) for k in series["layer_kinds"]]
    keep = [i for i, kind in enumerate(kinds) if kind == "weight"] or list(range(len(kinds)))
    quantity = "layer_grad_rms" if "layer_grad_rms" in series else "layer_grad_norm"
    norms = np.asarray(series[quantity], dtype=np.float64)[:, keep]
    names = [str(series["layer_names"][i]) for i in keep]
    return norms, names, np.asarray(series["probe_steps"])


def weight_layer_grid(series: dict[str, np.ndarray]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(log10 RMS grads as layers x steps, layer names, steps): ``weight_layer_rms``, log10."""
    norms, names, steps = weight_layer_rms(series)
    with np.errstate(divide="ignore", invalid="ignore"):
        grid = np.log10(np.maximum(norms, FLOOR)).T
    grid[~np.isfinite(norms.T)] = np.nan
    return grid, names, steps


def gradient_flow_heatmap(
    series: dict[str, np.ndarray], path: Path, record: RunRecord | None = None
) -> Path | None:
    figure = gradient_flow_figure(series, record)
    return _save(figure, path) if figure is not None else None


def gradient_flow_figure(
    series: dict[str, np.ndarray], record: RunRecord | None = None
) -> Figure | None:
    """Weight layer x step heatmap of log10 RMS gradients (the HTML report embeds it too)."""
    if "layer_grad_norm" not in series:
        return None
    grid, names, steps = weight_layer_grid(series)
    figure = Figure(figsize=(8, max(3.0, min(10.0, 0.12 * len(names) + 2))))
    axes = figure.add_subplot()
    image = axes.imshow(
        grid, aspect="auto", origin="lower", cmap="viridis", interpolation="nearest"
    )
    figure.colorbar(image, ax=axes, label="log10 RMS grad per element")
    ticks = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 10)).round().astype(int))
    axes.set_xticks(ticks, [str(steps[i]) for i in ticks])
    every = max(1, len(names) // 12)
    axes.set_yticks(range(0, len(names), every), names[::every], fontsize=7)
    axes.set_xlabel("training step")
    axes.set_ylabel("weight layer (input at the bottom)")
    ratio = (record or {}).get("probes", {}).get("first_last_ratio_log10")
    subtitle = f"first/last-layer log10 RMS ratio {ratio:+.2f}" if ratio is not None else ""
    axes.set_title(f"Gradient flow: {_title(record or {})}\n{subtitle}", fontsize=9)
    return figure


def timestep_curve(
    series: dict[str, np.ndarray], path: Path, record: RunRecord | None = None
) -> Path | None:
    """||∂L/∂h|| against the distance from each sequence's end (the loss is at distance 0).

    Only positive, finite values are drawn (padding is nan, an underflowed gradient 0),
    and the y axis spans what was measured, so the curve is never lost under a 1e-30
    floor. A run's whole curve may still span many decades: then that is the finding.
    """
    if "timestep_grad_norm_from_end" not in series:
        return None
    table = np.asarray(series["timestep_grad_norm_from_end"], dtype=np.float64)
    steps = np.asarray(series["timestep_steps"])
    decays = np.asarray(series.get("timestep_decay_per_step", np.full(len(steps), np.nan)))
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    cmap = colormaps["plasma"]
    # Too many curves are unreadable: at most 8, spread over training.
    chosen = np.unique(np.linspace(0, len(steps) - 1, min(len(steps), 8)).round().astype(int))
    drawn = []
    for rank, i in enumerate(chosen):
        values = table[i]
        shown = np.isfinite(values) & (values > 0)
        if not shown.any():
            continue
        label = f"step {steps[i]}"
        if np.isfinite(decays[i]):
            label += f" (slope {decays[i]:+.3f} log10/step)"
        distance = np.arange(len(values))
        axes.plot(
            distance[shown],
            values[shown],
            color=cmap(rank / max(1, len(chosen) - 1) * 0.85),
            label=label,
            linewidth=1.2,
        )
        drawn.append(values[shown])
    if not drawn:
        return None
    measured = np.concatenate(drawn)
    low, high = float(measured.min()), float(measured.max())
    axes.set_yscale("log")
    axes.set_ylim(low / 2, high * 2)
    axes.invert_xaxis()  # time runs left to right: the sequence's end (the loss) on the right
    axes.set_xlabel("steps before each sequence's own end (padding left out)")
    axes.set_ylabel("||dL/dh|| (RMS over sampled sequences)")
    axes.legend(fontsize=7)
    axes.set_title(f"Gradient through time: {_title(record or {})}", fontsize=9)
    return _save(figure, path)


def loss_curve(
    series: dict[str, np.ndarray], path: Path, record: RunRecord | None = None
) -> Path | None:
    if "loss" not in series:
        return None
    record = record or {}
    loss = np.asarray(series["loss"], dtype=np.float64)
    steps = np.arange(len(loss))
    figure = Figure(figsize=(7, 4))
    axes = figure.add_subplot()
    axes.plot(steps, loss, color="tab:blue", linewidth=1, label="training loss")
    axes.set_xlabel("training step")
    axes.set_ylabel("loss", color="tab:blue")
    if "grad_norm" in series and len(series["grad_norm"]):
        norms = np.asarray(series["grad_norm"], dtype=np.float64)
        twin = axes.twinx()
        twin.plot(
            steps[: len(norms)],
            np.maximum(norms, FLOOR),
            color="tab:orange",
            linewidth=0.8,
            alpha=0.8,
            label="grad norm (before clipping)",
        )
        twin.set_yscale("log")
        twin.set_ylabel("global grad norm", color="tab:orange")
    probes: dict[str, Any] = record.get("probes") or {}
    event = probes.get("nonfinite")
    bad = np.flatnonzero(~np.isfinite(loss))
    if event or len(bad):
        step = event["step"] if event else int(bad[0])
        what = event["what"] if event else "loss"
        layer = f" in {event['layer']}" if event and event.get("layer") else ""
        axes.axvline(step, color="red", linestyle="--", linewidth=1)
        axes.annotate(
            f"non-finite {what}{layer}\nat step {step}",
            (step, 0.95),
            xycoords=("data", "axes fraction"),
            color="red",
            fontsize=8,
            va="top",
        )
    explosion = probes.get("grad_norm_explosion_step")
    if explosion is not None:
        from gradbench.probes.verdict import THRESHOLDS

        growth = THRESHOLDS.growth_log10
        axes.axvline(explosion, color="darkorange", linestyle=":", linewidth=1)
        axes.annotate(
            f"grad norm 10^{growth:g}x initial\nat step {explosion}",
            (explosion, 0.75),
            xycoords=("data", "axes fraction"),
            color="darkorange",
            fontsize=8,
            va="top",
        )
    axes.set_title(f"Loss: {_title(record)}", fontsize=9)
    return _save(figure, path)


def write_plots(record: RunRecord, series: dict[str, np.ndarray], directory: Path) -> list[Path]:
    """Every plot the run's series allow, named ``<run_id>-<plot>.png``; the paths written."""
    run_id = record.get("run_id", "run")
    plots = (
        ("gradient-flow", gradient_flow_heatmap),
        ("timesteps", timestep_curve),
        ("loss", loss_curve),
    )
    written = []
    for name, draw in plots:
        path = draw(series, Path(directory) / f"{run_id}-{name}.png", record)
        if path is not None:
            written.append(path)
    return written
