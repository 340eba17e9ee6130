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
  step; ∂L/∂h_t on step 0, on about 20 steps spread over the run (every 10th to every
  100th step) and the last; non-finite events always.
- ``full``: everything on every step.

The summary holds whole-run figures and, under ``windows``, the same figures for the
start and the end of the run, from which ``verdict`` decides.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from functools import cached_property
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
from gradbench.probes.layers import gradient_ends, model_layers
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
    aligned,
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


@dataclass
class TimestepCapture:
    """Per-sample ||∂L/∂h_t|| of one scheduled step (0 at padded positions) and the lengths."""

    step: int
    norms: np.ndarray  # (samples, T)
    lengths: np.ndarray  # (samples,)

    # Read by the whole-run and both window summaries and by the series: fit once.
    @cached_property
    def decay(self) -> float:
        return decay_rate(self.norms, self.lengths)

    @cached_property
    def start_to_end(self) -> float:
        return log10_start_to_end(self.norms, self.lengths)


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
        self.ends: tuple[int, int] | None = None
        self.saturation: SaturationProbe | None = None
        self.has_hidden = False
        self.captures: list[Capture] = []
        self.timesteps: list[TimestepCapture] = []
        self.grad_norms: list[float] = []
        self.losses: list[float] = []
        self.event: NonFiniteEvent | None = None
        self.seconds = 0.0
        self._before = None

    # -- training-loop hooks -------------------------------------------------------

    def start(self, model: nn.Module, task: Task, config: TrainConfig) -> None:
        if not self.active:
            return
        began = time.perf_counter()
        self.task = task
        layers = model_layers(model)
        self.index = LayerIndex(layers)
        self.ends = gradient_ends(model, layers)
        self.saturation = SaturationProbe(model)
        self.has_hidden = has_hidden_sequence(model)
        if self.layer_schedule(0):
            self.saturation.arm()
        self.seconds += time.perf_counter() - began

    def resume(self, step: int) -> None:
        """A checkpoint restored this set at ``step``: ``start`` armed the saturation
        hooks for step 0, arm them for ``step`` instead (gradbench.checkpoint)."""
        if self.saturation is not None:
            self.saturation.collect()
            if self.layer_schedule(step):
                self.saturation.arm()

    def after_backward(
        self, step: int, model: nn.Module, batch: Batch, loss: float, grad_norm: float
    ) -> None:
        if not self.active or self.index is None:
            return
        began = time.perf_counter()
        self.grad_norms.append(grad_norm)
        self.losses.append(loss)
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
            norms_t, lengths = timestep_grad_norms(model, self.task, batch, self.samples)
            self.timesteps.append(TimestepCapture(step, norms_t, lengths))
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

    def _rms(self, capture: Capture) -> np.ndarray:
        assert self.index is not None
        return self.index.rms(capture.grad_norms)

    def _ratio(self, captures: list[Capture]) -> float:
        if not captures:
            return math.nan
        return mean_first_last_ratio_log10(np.stack([self._rms(c) for c in captures]), self.ends)

    def summary(self) -> dict[str, Any]:
        """Figures for the run record; empty when probes were off."""
        if not self.active or self.index is None:
            return {}
        kinds = self.kinds
        ratios = [first_last_ratio_log10(self._rms(c), self.ends) for c in self.captures]
        finite_ratios = [r for r in ratios if math.isfinite(r)]
        names = [layer.name for layer in self.index.layers]
        out: dict[str, Any] = {
            "level": self.level,
            "probe_seconds": self.seconds,
            "layers": len(kinds),
            "weight_layers": kinds.count("weight"),
            # Layers are compared by RMS gradient per element (||g|| / sqrt(n)).
            "layer_quantity": "rms_grad_per_element",
            "first_layer": names[self.ends[0]] if self.ends else None,
            "last_layer": names[self.ends[1]] if self.ends else None,
            "captures": len(self.captures),
            "first_capture_step": self.captures[0].step if self.captures else None,
            "first_last_ratio_log10": _none_if_nan(self._ratio(self.captures)),
            "first_last_ratio_log10_initial": finite_ratios[0] if finite_ratios else None,
            "first_last_ratio_log10_final": finite_ratios[-1] if finite_ratios else None,
        }
        out.update(self._grad_norm_figures())
        out.update(self._update_figures())
        out.update(self._saturation_figures())
        out.update(self._timestep_figures(self.timesteps))
        out["windows"] = self._windows()
        out["nonfinite"] = self.event.as_dict() if self.event else None
        return out

    def _initial_norm(self) -> float | None:
        norms = np.asarray(self.grad_norms, dtype=np.float64)
        finite = norms[np.isfinite(norms)]
        return float(np.median(finite[:INITIAL_STEPS])) if len(finite) else None

    def _growth(self, low: int, high: int) -> tuple[float | None, int | None]:
        """(log10 of the largest global grad norm in steps [low, high) over the initial level,
        first step there at or above the explosion threshold)."""
        initial = self._initial_norm()
        norms = np.asarray(self.grad_norms[low:high], dtype=np.float64)
        finite = np.isfinite(norms)
        if not initial or initial <= 0 or not finite.any():
            return None, None
        peak = float(norms[finite].max())
        limit = initial * 10**self.thresholds.growth_log10
        over = np.flatnonzero(finite & (norms >= limit))
        growth = math.log10(peak / initial) if peak > 0 else None
        return growth, (low + int(over[0])) if len(over) else None

    def _grad_norm_figures(self) -> dict[str, Any]:
        norms = np.asarray(self.grad_norms, dtype=np.float64)
        finite = norms[np.isfinite(norms)]
        if len(finite) == 0:
            return {"grad_norm_initial": None, "grad_norm_max": None}
        peak_at = int(np.nanargmax(np.where(np.isfinite(norms), norms, -np.inf)))
        growth, explosion = self._growth(0, len(norms))
        return {
            "grad_norm_initial": self._initial_norm(),
            "grad_norm_max": float(norms[peak_at]),
            "grad_norm_max_step": peak_at,
            "grad_norm_final": float(finite[-1]),
            "grad_norm_growth_log10": growth,
            "grad_norm_explosion_step": explosion,
        }

    def _windows(self) -> dict[str, dict[str, Any]]:
        """Start and end figures: the first and last ``window_fraction`` of the steps run.

        Each window holds at least one probe step (the first, the last) even when its
        share of the run holds none, and says how many backed it.
        """
        steps = len(self.grad_norms)
        span = max(1, math.ceil(self.thresholds.window_fraction * steps))
        bounds = {"start": (0, span), "end": (max(0, steps - span), max(steps, 1))}
        out = {}
        for name, (low, high) in bounds.items():
            layer = [c for c in self.captures if low <= c.step < high]
            timesteps = [c for c in self.timesteps if low <= c.step < high]
            fallback = 0 if name == "start" else -1
            if not layer and self.captures:
                layer = [self.captures[fallback]]
            if not timesteps and self.timesteps:
                timesteps = [self.timesteps[fallback]]
            growth, explosion = self._growth(low, high)
            losses = np.asarray(self.losses[low:high], dtype=np.float64)
            losses = losses[np.isfinite(losses)]
            figures: dict[str, Any] = {
                "steps": [low, high - 1],
                "layer_probe_steps": len(layer),
                "first_step": layer[0].step if layer else None,
                "first_last_ratio_log10": _none_if_nan(self._ratio(layer)),
                "grad_norm_growth_log10": growth,
                "grad_norm_explosion_step": explosion,
                "train_loss": float(losses.mean()) if len(losses) else None,
            }
            if name == "start" and layer:
                figures["first_last_ratio_log10_first"] = _none_if_nan(
                    first_last_ratio_log10(self._rms(layer[0]), self.ends)
                )
            figures.update(self._timestep_figures(timesteps))
            out[name] = figures
        return out

    def _update_figures(self) -> dict[str, Any]:
        rows = [c.update_ratios for c in self.captures if c.update_ratios is not None]
        if not rows or self.ends is None:
            return {"update_ratio_log10_median": None}
        weights = [i for i, kind in enumerate(self.kinds) if kind == "weight"]
        with np.errstate(divide="ignore", invalid="ignore"):
            table = np.log10(np.stack(rows))
        return {
            "update_ratio_log10_median": _nanmedian(table[:, weights]),
            "update_ratio_log10_first_layer": _nanmedian(table[:, self.ends[0]]),
            "update_ratio_log10_last_layer": _nanmedian(table[:, self.ends[1]]),
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

    def _timestep_figures(self, captures: list[TimestepCapture]) -> dict[str, Any]:
        if not captures:
            return {"timestep_captures": 0, "timestep_log10_start_to_end": None}
        lengths = np.concatenate([c.lengths for c in captures])
        return {
            # Loss terms that reach a sequence's states directly (the verdict's allowance).
            "timestep_loss_terms": self._loss_terms(float(lengths.mean()) if len(lengths) else 1),
            # How many sampled training steps, and sequences in each, back the figures.
            "timestep_captures": len(captures),
            "timestep_samples": int(max(len(c.lengths) for c in captures)),
            "timestep_length": int(lengths.max()) if len(lengths) else 0,
            "timestep_mean_length": float(lengths.mean()) if len(lengths) else None,
            "timestep_decay_per_step": _median([c.decay for c in captures]),
            "timestep_log10_start_to_end": _median([c.start_to_end for c in captures]),
        }

    def _loss_terms(self, mean_length: float) -> int:
        """How many loss terms a sequence's hidden states receive directly: one for a label
        per sequence, one per output step (the copy task), one per frame (CTC). With k
        of them, ∂L/∂h_0 sums up to k terms carried back without any growth, so the
        start-to-end ratio of a healthy network can reach about k (docs/probes.md)."""
        spec = self.task.input_spec() if self.task is not None else None
        if spec is None:
            return 1
        if spec.target == "per_step_class":
            return max(1, spec.output_steps or 1)
        if spec.target == "per_frame":
            return max(1, round(mean_length))
        return 1

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

        grad_norms = rows("grad_norms", n_layers)
        weight_norms = rows("weight_norms", n_layers)
        with np.errstate(divide="ignore", invalid="ignore"):
            relative = np.where(weight_norms > 0, grad_norms / weight_norms, np.nan)
        out = {
            "probe_steps": np.array([c.step for c in self.captures], dtype=np.int64),
            "layer_names": np.array([layer.name for layer in self.index.layers], dtype=str),
            "layer_kinds": np.array(self.kinds, dtype=str),
            "layer_sizes": self.index.sizes.astype(np.int64),
            "gradient_ends": np.array(self.ends if self.ends else (-1, -1), dtype=np.int64),
            "layer_grad_norm": grad_norms,
            "layer_grad_rms": grad_norms / np.sqrt(self.index.sizes),
            "layer_grad_to_weight": relative.astype(np.float32),
            "layer_update_ratio": rows("update_ratios", n_layers).astype(np.float32),
            "layer_weight_norm": weight_norms.astype(np.float32),
            "first_last_ratio_log10": np.array(
                [first_last_ratio_log10(self._rms(c), self.ends) for c in self.captures]
            ),
        }
        if self.saturation and self.saturation.names:
            out["activation_names"] = np.array(self.saturation.names, dtype=str)
            out["activation_kinds"] = np.array(self.saturation.kinds, dtype=str)
            out["saturation"] = rows("saturation", len(self.saturation.names)).astype(np.float32)
        if self.timesteps:
            out.update(self._timestep_series())
        return out

    def _timestep_series(self) -> dict[str, np.ndarray]:
        """∂L/∂h per sampled step, aligned at each sequence's end and at its start.

        Column d of ``timestep_grad_norm_from_end`` is the RMS over the sampled sequences
        of ||∂L/∂h|| d steps before each one's own end (``_from_start``: d steps after
        its start); nan where no sampled sequence is that long. Padding is left out.
        """
        length = max(int(c.lengths.max()) if len(c.lengths) else 0 for c in self.timesteps)
        tables = {}
        for key, from_end in (("from_end", True), ("from_start", False)):
            table = np.full((len(self.timesteps), length), np.nan)
            for i, capture in enumerate(self.timesteps):
                curve = aligned(capture.norms, capture.lengths, from_end=from_end)
                table[i, : len(curve)] = curve
            tables[f"timestep_grad_norm_{key}"] = table
        return {
            "timestep_steps": np.array([c.step for c in self.timesteps], dtype=np.int64),
            **tables,
            "timestep_decay_per_step": np.array([c.decay for c in self.timesteps]),
            "timestep_log10_start_to_end": np.array([c.start_to_end for c in self.timesteps]),
            "timestep_samples": np.array([len(c.lengths) for c in self.timesteps]),
        }

    def verdict(
        self, result: Any, summary: dict[str, Any] | None = None
    ) -> tuple[str | None, dict[str, Any]]:
        """(overall verdict, evidence) from the summary and the loop's result (see ``verdict``).

        ``summary``: this set's ``summary()``, when the caller has built it already.
        """
        summary = self.summary() if summary is None else summary
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
        timestep_schedule=schedules.every(schedules.timestep_interval(last), last=last),
    )
