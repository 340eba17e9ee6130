"""TensorBoard export of the per-step series (``gradbench report --tensorboard DIR``).

One event directory per run, ``DIR/<task>/<row label>/seed<k>`` (the row label as the
leaderboard prints it, so two configurations of one model stay apart), holding the
training loss and global gradient norm per step, each weight layer's RMS gradient per
element at the probe steps (``layers/<name>``, the quantity the reports' heatmaps
show), and the final evaluation metrics at the last step. Written with
``torch.utils.tensorboard.SummaryWriter``; needs the ``tensorboard`` package
(``pip install gradbench[tensorboard]``).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from gradbench.errors import UsageError
from gradbench.records import ResultsStore
from gradbench.report import weight_layer_rms
from gradbench.stats import table_rows


def _safe(name: str) -> str:
    """A label as one path component: brackets, colons and commas kept readable."""
    return re.sub(r"[^A-Za-z0-9._=,:\[\]+-]+", "_", name).strip("_") or "run"


def export_tensorboard(store: ResultsStore, directory: Path, task: str | None = None) -> int:
    """Write every run's series (latest record per seed) under ``directory``; runs written."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError(
            "--tensorboard needs the tensorboard package: pip install 'gradbench[tensorboard]'"
        ) from None
    records = [r for r in store.load() if task is None or r["task"] == task]
    if not records:
        raise UsageError(f"no run records to export in {store.runs_file}")
    written = 0
    for rows in table_rows(records).values():
        for row in rows:
            for seed, record in row.records.items():
                series = store.series(record)
                folder = directory / _safe(record["task"]) / _safe(row.label) / f"seed{seed}"
                with SummaryWriter(log_dir=str(folder)) as writer:
                    _write_run(writer, record, series)
                written += 1
    return written


def _scalars(writer, tag: str, values, steps=None) -> None:
    values = np.asarray(values, dtype=np.float64)
    steps = np.arange(len(values)) if steps is None else np.asarray(steps)
    for step, value in zip(steps, values, strict=False):
        if math.isfinite(value):  # a diverged run's NaN/Inf would break the charts' scale
            writer.add_scalar(tag, float(value), int(step))


def _write_run(writer, record, series: dict[str, np.ndarray]) -> None:
    if "loss" in series:
        _scalars(writer, "train/loss", series["loss"])
    if "grad_norm" in series:
        _scalars(writer, "train/grad_norm", series["grad_norm"])
    if "layer_grad_norm" in series and "probe_steps" in series:
        # The quantity the reports' heatmaps show: RMS gradient per element.
        rms, names, steps = weight_layer_rms(series)
        for index, name in enumerate(names):
            _scalars(writer, f"layers/{name}", rms[:, index], steps)
    for metric, value in (record.get("metrics") or {}).items():
        if value is not None and math.isfinite(value):
            writer.add_scalar(f"eval/{metric}", float(value), int(record["steps"]))
