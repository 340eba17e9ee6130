"""The gradient-health verdict of a run: healthy, vanishing, exploding or diverged.

Rules, applied in this order (the first that fires decides), on the run's probe
summary; docs/probes.md gives the reasons and references:

1. ``diverged``: the loss, a gradient or a weight became NaN/Inf (the run stopped).
2. ``exploding``: the global gradient norm (before clipping) rose to 100x its initial
   level (median of the first 3 steps) or more; or the first weight layer's gradient
   norm is 100x the last one's or more, on average over training (ratio of the mean
   norms over the probe steps) or at the first step (the network as initialised); or
   ∂L/∂h_0 is 100x ∂L/∂h at the end of the sequence or more (median over the sampled
   steps).
3. ``vanishing``: the same ratios 100x or more the other way (first layer or first
   time step 100x smaller).
4. ``healthy`` otherwise.

No verdict (None) when nothing was measured: probes off and the run did not diverge.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    """Orders of magnitude (log10) that decide a verdict; see docs/probes.md."""

    # Two orders of magnitude between the ends of the network. Trainable networks stay
    # well inside (|log10| <= 1.1 for ResNet-20/56, plain-20, ReLU+He MLPs in our runs);
    # a saturated sigmoid stack is 10+ orders out.
    ratio_log10: float = 2.0
    # Two orders between ∂L/∂h at the end of the sequence and at its start.
    timestep_log10: float = 2.0
    # The global gradient norm 100x above its initial level is an explosion in the sense
    # of Pascanu et al. (2013); healthy runs stay within ~3x (log10 <= 0.5) of it.
    growth_log10: float = 2.0


THRESHOLDS = Thresholds()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def decide(
    summary: dict[str, Any],
    *,
    diverged: bool,
    diverged_step: int | None = None,
    divergence: str | None = None,
    thresholds: Thresholds = THRESHOLDS,
) -> tuple[str | None, dict[str, Any]]:
    """(verdict, the figures that decided it, the rule and the thresholds)."""
    event = summary.get("nonfinite")
    if diverged or event:
        figures: dict[str, Any] = {"rule": "a loss, gradient or weight became NaN/Inf"}
        if event:
            figures.update(step=event["step"], what=event["what"], layer=event.get("layer"))
        else:
            figures.update(step=diverged_step, what=divergence, layer=None)
        return "diverged", figures
    if not summary:
        return None, {}
    growth = summary.get("grad_norm_growth_log10")
    ratio = summary.get("first_last_ratio_log10")
    initial = summary.get("first_last_ratio_log10_initial")
    through_time = summary.get("timestep_log10_start_to_end")
    figures = {
        "grad_norm_growth_log10": growth,
        "first_last_ratio_log10": ratio,
        "first_last_ratio_log10_initial": initial,
        "timestep_log10_start_to_end": through_time,
        "thresholds": asdict(thresholds),
    }
    t_growth, t_ratio, t_time = (
        thresholds.growth_log10,
        thresholds.ratio_log10,
        thresholds.timestep_log10,
    )
    # (verdict, fired, rule, step) in order of precedence: exploding before vanishing, as
    # an explosion often ends in a collapsed network whose gradients then vanish.
    rules = [
        (
            "exploding",
            _finite(growth) and growth >= t_growth,
            f"global grad norm >= 10^{t_growth:g} x its initial level",
            summary.get("grad_norm_explosion_step"),
        ),
        (
            "exploding",
            _finite(ratio) and ratio >= t_ratio,
            f"first/last-layer grad norm >= 10^{t_ratio:g} over training",
            None,
        ),
        (
            "exploding",
            _finite(initial) and initial >= t_ratio,
            f"first/last-layer grad norm >= 10^{t_ratio:g} at the first step",
            summary.get("first_capture_step"),
        ),
        (
            "exploding",
            _finite(through_time) and through_time >= t_time,
            f"|dL/dh_0| / |dL/dh_end| >= 10^{t_time:g}",
            None,
        ),
        (
            "vanishing",
            _finite(ratio) and ratio <= -t_ratio,
            f"first/last-layer grad norm <= 10^-{t_ratio:g} over training",
            None,
        ),
        (
            "vanishing",
            _finite(initial) and initial <= -t_ratio,
            f"first/last-layer grad norm <= 10^-{t_ratio:g} at the first step",
            summary.get("first_capture_step"),
        ),
        (
            "vanishing",
            _finite(through_time) and through_time <= -t_time,
            f"|dL/dh_0| / |dL/dh_end| <= 10^-{t_time:g}",
            None,
        ),
    ]
    for verdict, fired, rule, step in rules:
        if fired:
            return verdict, {"rule": rule, "step": step, **figures}
    return "healthy", {"rule": "no threshold crossed", "step": None, **figures}
