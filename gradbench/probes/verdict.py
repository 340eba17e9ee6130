"""The gradient-health verdict of a run: at its start, at its end, and overall.

A run changes as it trains: a GRU that starts with ∂L/∂h_0 thirty orders below
∂L/∂h_end can learn to carry the gradient across the sequence, and a network that
starts well can blow up. So the evidence is read in two **windows** of probe steps,
the start (the first 20% of the steps run) and the end (the last 20%), and each gets a
verdict by the same rules (the first that fires decides):

1. ``exploding``: in the window, the global gradient norm (before clipping) reached
   100x its initial level (median of the first 3 steps) or more; or the first weight
   layer's RMS gradient is 100x the last one's or more (ratio of the window's mean
   RMS gradients; in the start window also at the first probe step alone: the network
   as initialised); or ∂L/∂h at each sequence's start is 100x that at its end or more
   (median over the window's sampled steps), times the number of loss terms that reach
   the sequence directly (one per output step or CTC frame: k terms can add up to k
   times the end's gradient with no growth at all).
2. ``vanishing``: the same ratios 100x or more the other way.
3. ``healthy`` otherwise.

The overall verdict, in order:

1. ``diverged``: the loss, a gradient or a weight became NaN/Inf (the run stopped).
2. ``exploding``: either window is exploding, or the global gradient norm reached 100x
   its initial level at any step: an explosion damages training wherever it happens.
3. otherwise the **end** verdict: what the gradients look like once training is done.
   A network that started vanishing and learned to pass its gradient is ``healthy``;
   one that never did is ``vanishing``.

No verdict (None) when nothing was measured: probes off and the run did not diverge.
docs/probes.md gives the reasons, the references and the measured cases.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Thresholds:
    """Orders of magnitude (log10) that decide a verdict; see docs/probes.md."""

    # Two orders of magnitude between the RMS gradients at the ends of the network.
    # Trainable networks stay well inside (see the case table in docs/probes.md); a
    # saturated sigmoid stack is many orders out.
    ratio_log10: float = 2.0
    # Two orders between ∂L/∂h at a sequence's end and at its start.
    timestep_log10: float = 2.0
    # The global gradient norm 100x above its initial level is an explosion in the sense
    # of Pascanu et al. (2013); healthy runs stay within ~3x (log10 <= 0.5) of it.
    growth_log10: float = 2.0
    # The fraction of the run's steps each window covers (at least one probe step each).
    window_fraction: float = 0.2


THRESHOLDS = Thresholds()
WINDOWS = ("start", "end")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def window_verdict(
    window: dict[str, Any], thresholds: Thresholds = THRESHOLDS
) -> tuple[str | None, dict[str, Any]]:
    """(verdict, rule and step) of one window's figures; None if it holds no measurement."""
    growth = window.get("grad_norm_growth_log10")
    ratio = window.get("first_last_ratio_log10")
    first = window.get("first_last_ratio_log10_first")
    through_time = window.get("timestep_log10_start_to_end")
    # A loss on k steps (per-step targets, CTC's frames) lets ∂L/∂h_0 sum k terms with no
    # growth at all: an explosion through time must exceed that, by the same 100x.
    terms = window.get("timestep_loss_terms") or 1
    allowance = math.log10(terms) if _finite(terms) and terms > 1 else 0.0
    if not any(_finite(v) for v in (growth, ratio, first, through_time)):
        return None, {"rule": "nothing measured in this window", "step": None}
    t_growth, t_ratio, t_time = (
        thresholds.growth_log10,
        thresholds.ratio_log10,
        thresholds.timestep_log10,
    )
    # Exploding before vanishing, as an explosion often ends in a collapsed network
    # whose gradients then vanish: the cause is the explosion.
    rules = [
        (
            "exploding",
            _finite(growth) and growth >= t_growth,
            f"global grad norm >= 10^{t_growth:g} x its initial level",
            window.get("grad_norm_explosion_step"),
        ),
        (
            "exploding",
            _finite(ratio) and ratio >= t_ratio,
            f"first/last-layer RMS grad >= 10^{t_ratio:g}",
            None,
        ),
        (
            "exploding",
            _finite(first) and first >= t_ratio,
            f"first/last-layer RMS grad >= 10^{t_ratio:g} at the first probe step",
            window.get("first_step"),
        ),
        (
            "exploding",
            _finite(through_time) and through_time >= t_time + allowance,
            f"|dL/dh_start| / |dL/dh_end| >= 10^{t_time:g}"
            + (f" x {terms:g} loss terms" if allowance else ""),
            None,
        ),
        (
            "vanishing",
            _finite(ratio) and ratio <= -t_ratio,
            f"first/last-layer RMS grad <= 10^-{t_ratio:g}",
            None,
        ),
        (
            "vanishing",
            _finite(first) and first <= -t_ratio,
            f"first/last-layer RMS grad <= 10^-{t_ratio:g} at the first probe step",
            window.get("first_step"),
        ),
        (
            "vanishing",
            _finite(through_time) and through_time <= -t_time,
            f"|dL/dh_start| / |dL/dh_end| <= 10^-{t_time:g}",
            None,
        ),
    ]
    for verdict, fired, rule, step in rules:
        if fired:
            return verdict, {"rule": rule, "step": step}
    return "healthy", {"rule": "no threshold crossed", "step": None}


def decide(
    summary: dict[str, Any],
    *,
    diverged: bool,
    diverged_step: int | None = None,
    divergence: str | None = None,
    thresholds: Thresholds = THRESHOLDS,
) -> tuple[str | None, dict[str, Any]]:
    """(overall verdict, evidence): the rule that decided, and each window's verdict and figures.

    ``summary`` is a probe summary (``ProbeSet.summary``) with ``windows`` holding the
    start and end figures.
    """
    windows = summary.get("windows") or {}
    evidence: dict[str, Any] = {"thresholds": asdict(thresholds)}
    for name in WINDOWS:
        figures = dict(windows.get(name) or {})
        verdict, why = window_verdict(figures, thresholds)
        evidence[name] = {"verdict": verdict, **why, **figures}
    event = summary.get("nonfinite")
    if diverged or event:
        evidence["rule"] = "a loss, gradient or weight became NaN/Inf"
        if event:
            evidence.update(step=event["step"], what=event["what"], layer=event.get("layer"))
        else:
            evidence.update(step=diverged_step, what=divergence, layer=None)
        return "diverged", evidence
    if not summary:
        return None, {}
    start, end = evidence["start"], evidence["end"]
    growth = summary.get("grad_norm_growth_log10")
    if start["verdict"] == "exploding":
        verdict, rule, step = "exploding", f"start window: {start['rule']}", start["step"]
    elif end["verdict"] == "exploding":
        verdict, rule, step = "exploding", f"end window: {end['rule']}", end["step"]
    elif _finite(growth) and growth >= thresholds.growth_log10:
        verdict, rule, step = (
            "exploding",
            f"global grad norm >= 10^{thresholds.growth_log10:g} x its initial level "
            "during training",
            summary.get("grad_norm_explosion_step"),
        )
    elif end["verdict"] is not None:
        verdict, rule, step = end["verdict"], f"end window: {end['rule']}", end["step"]
    else:
        verdict, rule, step = None, "nothing measured", None
    evidence.update(rule=rule, step=step)
    return verdict, evidence
