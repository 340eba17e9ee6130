"""Gradient-flow probes: the evidence of why a run trained or failed, on by default.

``make_probes(level, model, task, config)`` returns a ``ProbeSet``, which is the
training loop's hooks (``gradbench.train.TrainHooks``) and afterwards gives
``summary()`` (JSON-able, stored as the record's ``probes``), ``series()`` (numpy
arrays, stored in ``series/<run_id>.npz``) and ``verdict(result)``.

Each quantity lives in its own module (``layer_norms``, ``update_ratio``,
``saturation``, ``timestep``, ``nonfinite``), when to take it in ``schedule``, and the
verdict rule in ``verdict``; plots are elsewhere (``gradbench.report``). Levels:

- ``off``: nothing is measured; the verdict is only ``diverged`` or none.
- ``default``: per-layer quantities on step 0, every 10th step and the planned last
  step; ∂L/∂h_t on step 0, every 100th step and the last; non-finite events always.
- ``full``: everything on every step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from gradbench.config import TrainConfig
from gradbench.probes import schedule as schedules
from gradbench.probes.layer_norms import (
    LayerIndex,
    first_last_ratio_log10,
    layer_grad_norms,
    mean_first_last_ratio_log10,
)
from gradbench.probes.layers import model_layers
from gradbench.probes.nonfinite import (
    NonFiniteEvent,
    first_nonfinite_module,
    nonfinite_grad_layers,
    nonfinite_weight_layers,
)
from gradbench.probes.saturation import SaturationProbe
from gradbench.probes.schedule import Schedule
from gradbench.probes.timestep import (
    DEFAULT_SAMPLES,
    decay_rate,
    has_hidden_sequence,
    log10_start_to_end,
    timestep_grad_norms,
)
from gradbench.probes.update_ratio import snapshot, update_ratios
from gradbench.probes.verdict import THRESHOLDS, Thresholds, decide
from gradbench.task import Batch, Task

# The initial gradient-norm level is the median over this many first steps: enough that
# one unlucky first batch does not set it, few enough that an explosion starting at
# step 2 (a learning rate far too high) does not raise it.
INITIAL_STEPS = 3


@dataclass
class Capture:
    """Per-layer quantities of one scheduled step."""

    step: int
    grad_norms: np.ndarray
    saturation: list[float] | None = None
    update_ratios: np.ndarray | None = None
    weight_norms: np.ndarray | None = None


class ProbeSet:
    """The hooks of one run; ``level`` "off", "default" or "full"."""

    def __init__(
        self,
        level: str,
        *,
        layer_schedule: Schedule = schedules.never,
        timestep_schedule: Schedule = schedules.never,
        samples: int = DEFAULT_SAMPLES,
        thresholds: Thresholds = THRESHOLDS,
    ):
        self.level = level
        self.layer_schedule = layer_schedule
        self.timestep_schedule = timestep_schedule
        self.samples = samples
        self.thresholds = thresholds
        self.active = level != "off"
        self.task: Task | None = None
        self.index: LayerIndex | None = None
        self.saturation: SaturationProbe | None = None
        self.has_hidden = False
        self.captures: list[Capture] = []
        self.timestep_steps: list[int] = []
        self.timestep_norms: list[np.ndarray] = []
        self.grad_norms: list[float] = []
        self.event: NonFiniteEvent | None = None
        self.seconds = 0.0
        self._before = None

    # -- training-loop hooks -------------------------------------------------------

    def start(self, model: nn.Module, task: Task, config: TrainConfig) -> None:
        if not self.active:
            return
        began = time.perf_counter()
        self.task = task
        self.index = LayerIndex(model_layers(model))
        self.saturation = SaturationProbe(model)
        self.has_hidden = has_hidden_sequence(model)
        if self.layer_schedule(0):
            self.saturation.arm()
        self.seconds += time.perf_counter() - began

    def after_backward(
        self, step: int, model: nn.Module, batch: Batch, loss: float, grad_norm: float
    ) -> None:
        if not self.active or self.index is None:
            return
        began = time.perf_counter()
        self.grad_norms.append(grad_norm)
        saturation = self.saturation.collect() if self.saturation else None
        bad = not (math.isfinite(loss) and math.isfinite(grad_norm))
        if self.layer_schedule(step) or bad:
            norms = layer_grad_norms(self.index)
            self.captures.append(Capture(step, norms, saturation))
            if not bad:
                self._before = (self.captures[-1], snapshot(self.index))
            elif self.event is None:
                self.event = self._diagnose(step, model, batch, loss, norms)
        if not bad and self.has_hidden and self.timestep_schedule(step):
            norms_t = timestep_grad_norms(model, self.task, batch, self.samples)
            self.timestep_steps.append(step)
            self.timestep_norms.append(norms_t)
        self.seconds += time.perf_counter() - began

    def after_step(self, step: int, model: nn.Module) -> None:
        if not self.active or self.index is None:
            return
        began = time.perf_counter()
        if self._before is not None:
            capture, before = self._before
            capture.update_ratios, capture.weight_norms = update_ratios(self.index, before)
            self._before = None
            self._check_weights(step)
        if self.layer_schedule(step + 1) and self.saturation:
            self.saturation.arm()
        self.seconds += time.perf_counter() - began

    def finish(self, model: nn.Module, last_step: int) -> None:
        if not self.active or self.index is None:
            return
        if self.saturation:
            self.saturation.collect()  # armed for a step that never came
        self._check_weights(max(0, last_step - 1))

    # -- diagnosis -----------------------------------------------------------------

    def _check_weights(self, step: int) -> None:
        if self.event is None:
            broken = nonfinite_weight_layers(self.index)
            if broken:
                self.event = NonFiniteEvent(step, "weight", broken[0], broken[:10])

    def _diagnose(
        self, step: int, model: nn.Module, batch: Batch, loss: float, norms: np.ndarray
    ) -> NonFiniteEvent:
        broken = nonfinite_weight_layers(self.index)
        if broken:  # the previous update broke the weights; this step only shows it
            return NonFiniteEvent(max(0, step - 1), "weight", broken[0], broken[:10])
        if not math.isfinite(loss):
            return NonFiniteEvent(step, "loss", first_nonfinite_module(model, batch))
        layers = nonfinite_grad_layers(norms, self.index)
        return NonFiniteEvent(step, "gradient", layers[-1] if layers else None, layers[:10])

    # -- results -------------------------------------------------------------------

    @property
    def kinds(self) -> list[str]:
        return [layer.kind for layer in self.index.layers] if self.index else []

    def summary(self) -> dict[str, Any]:
        """Figures for the run record; empty when probes were off."""
        if not self.active or self.index is None:
            return {}
        kinds = self.kinds
        weights = [i for i, kind in enumerate(kinds) if kind == "weight"]
        ratios = [first_last_ratio_log10(c.grad_norms, kinds) for c in self.captures]
        finite_ratios = [r for r in ratios if math.isfinite(r)]
        out: dict[str, Any] = {
            "level": self.level,
            "probe_seconds": self.seconds,
            "layers": len(kinds),
            "weight_layers": len(weights),
            "first_layer": self.index.layers[weights[0]].name if weights else None,
            "last_layer": self.index.layers[weights[-1]].name if weights else None,
            "captures": len(self.captures),
            "first_capture_step": self.captures[0].step if self.captures else None,
            "first_last_ratio_log10": _none_if_nan(
                mean_first_last_ratio_log10(np.stack([c.grad_norms for c in self.captures]), kinds)
                if self.captures
                else math.nan
            ),
            "first_last_ratio_log10_initial": finite_ratios[0] if finite_ratios else None,
            "first_last_ratio_log10_final": finite_ratios[-1] if finite_ratios else None,
        }
        out.update(self._grad_norm_figures())
        out.update(self._update_figures(weights))
        out.update(self._saturation_figures())
        out.update(self._timestep_figures())
        out["nonfinite"] = self.event.as_dict() if self.event else None
        return out

    def _grad_norm_figures(self) -> dict[str, Any]:
        norms = np.asarray(self.grad_norms, dtype=np.float64)
        finite = norms[np.isfinite(norms)]
        if len(finite) == 0:
            return {"grad_norm_initial": None, "grad_norm_max": None}
        initial = float(np.median(finite[:INITIAL_STEPS]))
        peak_at = int(np.nanargmax(np.where(np.isfinite(norms), norms, -np.inf)))
        figures: dict[str, Any] = {
            "grad_norm_initial": initial,
            "grad_norm_max": float(norms[peak_at]),
            "grad_norm_max_step": peak_at,
            "grad_norm_final": float(finite[-1]),
            "grad_norm_growth_log10": None,
            "grad_norm_explosion_step": None,
        }
        if initial > 0:
            figures["grad_norm_growth_log10"] = math.log10(float(norms[peak_at]) / initial)
            limit = initial * 10**self.thresholds.growth_log10
            over = np.flatnonzero(np.isfinite(norms) & (norms >= limit))
            figures["grad_norm_explosion_step"] = int(over[0]) if len(over) else None
        return figures

    def _update_figures(self, weights: list[int]) -> dict[str, Any]:
        rows = [c.update_ratios for c in self.captures if c.update_ratios is not None]
        if not rows or not weights:
            return {"update_ratio_log10_median": None}
        with np.errstate(divide="ignore", invalid="ignore"):
            table = np.log10(np.stack(rows)[:, weights])
        return {
            "update_ratio_log10_median": _nanmedian(table),
            "update_ratio_log10_first_layer": _nanmedian(table[:, 0]),
            "update_ratio_log10_last_layer": _nanmedian(table[:, -1]),
        }

    def _saturation_figures(self) -> dict[str, Any]:
        kinds = self.saturation.kinds if self.saturation else []
        rows = [c.saturation for c in self.captures if c.saturation is not None]
        if not rows or not kinds:
            return {"saturated_fraction": None, "dead_fraction": None}
        table = np.asarray(rows, dtype=np.float64)
        squashing = [i for i, k in enumerate(kinds) if k in ("sigmoid", "tanh")]
        rectifying = [i for i, k in enumerate(kinds) if k in ("relu", "leaky_relu")]
        return {
            # At the last capture: the state the run ended in.
            "saturated_fraction": _nanmean(table[-1, squashing]) if squashing else None,
            "dead_fraction": _nanmean(table[-1, rectifying]) if rectifying else None,
            "dead_fraction_max": _nanmax(table[:, rectifying]) if rectifying else None,
        }

    def _timestep_figures(self) -> dict[str, Any]:
        if not self.timestep_norms:
            return {"timestep_log10_start_to_end": None}
        return {
            "timestep_captures": len(self.timestep_norms),
            "timestep_length": max(len(n) for n in self.timestep_norms),
            "timestep_decay_per_step": _median([decay_rate(n) for n in self.timestep_norms]),
            "timestep_log10_start_to_end": _median(
                [log10_start_to_end(n) for n in self.timestep_norms]
            ),
        }

    def series(self) -> dict[str, np.ndarray]:
        """Arrays for the run's .npz: rows are probe steps, columns layers (or time steps)."""
        if not self.active or self.index is None or not self.captures:
            return {}
        n_layers = len(self.index.layers)

        def rows(attribute: str, width: int) -> np.ndarray:
            empty = np.full(width, np.nan)
            return np.stack(
                [
                    np.asarray(value if value is not None else empty, dtype=np.float64)
                    for value in (getattr(c, attribute) for c in self.captures)
                ]
            )

        kinds = self.kinds
        out = {
            "probe_steps": np.array([c.step for c in self.captures], dtype=np.int64),
            "layer_names": np.array([layer.name for layer in self.index.layers], dtype=str),
            "layer_kinds": np.array(kinds, dtype=str),
            "layer_grad_norm": rows("grad_norms", n_layers),
            "layer_update_ratio": rows("update_ratios", n_layers).astype(np.float32),
            "layer_weight_norm": rows("weight_norms", n_layers).astype(np.float32),
            "first_last_ratio_log10": np.array(
                [first_last_ratio_log10(c.grad_norms, kinds) for c in self.captures]
            ),
        }
        if self.saturation and self.saturation.names:
            out["activation_names"] = np.array(self.saturation.names, dtype=str)
            out["activation_kinds"] = np.array(self.saturation.kinds, dtype=str)
            out["saturation"] = rows("saturation", len(self.saturation.names)).astype(np.float32)
        if self.timestep_norms:
            length = max(len(n) for n in self.timestep_norms)
            table = np.full((len(self.timestep_norms), length), np.nan)
            for i, norms in enumerate(self.timestep_norms):
                table[i, : len(norms)] = norms
            out["timestep_steps"] = np.array(self.timestep_steps, dtype=np.int64)
            out["timestep_grad_norm"] = table
            out["timestep_decay_per_step"] = np.array([decay_rate(n) for n in self.timestep_norms])
        return out

    def verdict(self, result: Any) -> tuple[str | None, dict[str, Any]]:
        """(verdict, figures) from the summary and the loop's result (see ``verdict``)."""
        summary = self.summary()
        verdict, figures = decide(
            summary,
            diverged=bool(result.diverged),
            diverged_step=result.diverged_step,
            divergence=result.divergence,
            thresholds=self.thresholds,
        )
        if verdict is not None and result.steps:
            figures["clip_hit_rate"] = result.clip_hits / max(1, result.steps)
        return verdict, figures


def _none_if_nan(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _median(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(finite)) if finite else None


def _nanmedian(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _nanmean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.mean(finite)) if finite.size else None


def _nanmax(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.max(finite)) if finite.size else None


def make_probes(level: str, model: nn.Module, task: Task, config: TrainConfig) -> ProbeSet:
    """The probe set of a level ("off", "default" or "full") for one run."""
    if level == "off":
        return ProbeSet("off")
    if level == "full":
        return ProbeSet("full", layer_schedule=schedules.always, timestep_schedule=schedules.always)
    if level != "default":
        raise ValueError(f"probe level {level!r} is not off, default or full")
    last = schedules.planned_last_step(task, config)
    return ProbeSet(
        "default",
        layer_schedule=schedules.every(schedules.DEFAULT_EVERY, last=last),
        timestep_schedule=schedules.every(schedules.DEFAULT_TIMESTEP_EVERY, last=last),
    )
