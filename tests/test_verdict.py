"""The verdict rule on constructed summaries, and on constructed training runs."""

from __future__ import annotations

import torch
from test_probes_toys import ToyTask, config

from gradbench.models.build import build_model, model_options
from gradbench.probes import make_probes
from gradbench.probes.verdict import THRESHOLDS, decide, window_verdict
from gradbench.train import train

T = THRESHOLDS


def summary(start: dict | None = None, end: dict | None = None, **whole) -> dict:
    """A probe summary with the given start and end window figures."""
    return {**whole, "windows": {"start": start or {}, "end": end or {}}}


def test_diverged_comes_first_and_carries_the_event():
    event = {"step": 7, "what": "gradient", "layer": "blocks.3", "layers": ["blocks.3"]}
    verdict, figures = decide(
        summary({"first_last_ratio_log10": -9.0}, nonfinite=event), diverged=True
    )
    assert verdict == "diverged" and figures["step"] == 7 and figures["layer"] == "blocks.3"
    assert figures["start"]["verdict"] == "vanishing"  # the windows are still judged
    assert decide({}, diverged=True, diverged_step=3, divergence="loss")[1]["step"] == 3
    assert decide({}, diverged=False) == (None, {})


def test_each_threshold_decides_a_window_at_its_boundary():
    below = 0.99
    cases = [
        ({"grad_norm_growth_log10": T.growth_log10, "grad_norm_explosion_step": 4}, "exploding"),
        ({"grad_norm_growth_log10": T.growth_log10 * below}, "healthy"),
        ({"first_last_ratio_log10": T.ratio_log10}, "exploding"),
        ({"first_last_ratio_log10": -T.ratio_log10}, "vanishing"),
        ({"first_last_ratio_log10": -T.ratio_log10 * below}, "healthy"),
        ({"first_last_ratio_log10_first": T.ratio_log10}, "exploding"),
        ({"first_last_ratio_log10_first": -T.ratio_log10}, "vanishing"),
        ({"first_last_ratio_log10_first": T.ratio_log10 * below}, "healthy"),
        ({"timestep_log10_start_to_end": T.timestep_log10}, "exploding"),
        ({"timestep_log10_start_to_end": -T.timestep_log10}, "vanishing"),
        ({"timestep_log10_start_to_end": -T.timestep_log10 * below}, "healthy"),
        ({"first_last_ratio_log10": None, "timestep_log10_start_to_end": None}, None),
    ]
    for window, expected in cases:
        assert window_verdict(window)[0] == expected, window
        assert decide(summary(end=window), diverged=False)[0] == expected, window
    _, why = window_verdict(cases[0][0])
    assert why["step"] == 4


def test_a_loss_on_every_step_raises_the_through_time_bar_by_its_terms():
    """CTC puts a loss on every frame: ∂L/∂h_0 sums T terms with no growth at all, so a
    start/end ratio of 10^2.18 over 480 frames (the quick suite's CTC GRU) is not an
    explosion; 100x beyond the 480 terms is. A single loss keeps the plain 100x bar."""
    window = {"timestep_log10_start_to_end": 2.18}
    assert window_verdict(window)[0] == "exploding"
    assert window_verdict(window | {"timestep_loss_terms": 1})[0] == "exploding"
    assert window_verdict(window | {"timestep_loss_terms": 480})[0] == "healthy"
    verdict, why = window_verdict({"timestep_log10_start_to_end": 4.8, "timestep_loss_terms": 480})
    assert verdict == "exploding" and "x 480 loss terms" in why["rule"]
    # The allowance is for explosions only: vanishing through time keeps its bar.
    vanishing = {"timestep_log10_start_to_end": -2.5, "timestep_loss_terms": 480}
    assert window_verdict(vanishing)[0] == "vanishing"


def test_the_probe_counts_the_loss_terms_a_sequence_receives():
    from gradbench.probes import ProbeSet
    from gradbench.task import InputSpec

    class Task:
        def __init__(self, spec):
            self.spec = spec

        def input_spec(self):
            return self.spec

    probes = ProbeSet("default")
    per_step = {"target": "per_step_class", "vocab_size": 6, "output_steps": 10}
    cases = [
        (InputSpec(kind="sequence", shape=(50, 2), num_outputs=1, target="regression"), 1),
        (InputSpec(kind="tokens", shape=(40,), num_outputs=4, **per_step), 10),
        (InputSpec(kind="sequence", shape=(500, 40), num_outputs=11, target="per_frame"), 123),
    ]
    for spec, terms in cases:
        probes.task = Task(spec)
        assert probes._loss_terms(mean_length=123.4) == terms, spec.target


def test_the_end_decides_unless_something_exploded():
    vanishing, healthy = {"timestep_log10_start_to_end": -29.7}, {"timestep_log10_start_to_end": 0}
    exploding = {"first_last_ratio_log10_first": 3.0, "first_step": 0}
    # The GRU: thirty orders at step 0, about none once it solved the task.
    verdict, evidence = decide(summary(vanishing, healthy), diverged=False)
    assert verdict == "healthy" and evidence["rule"].startswith("end window")
    assert (evidence["start"]["verdict"], evidence["end"]["verdict"]) == ("vanishing", "healthy")
    # The tanh RNN that never learned: vanishing at both ends.
    assert decide(summary(vanishing, vanishing), diverged=False)[0] == "vanishing"
    # An explosion at the start (plain-56 with batch norm) is not forgiven by a calm end.
    verdict, evidence = decide(summary(exploding, healthy), diverged=False)
    assert verdict == "exploding" and evidence["step"] == 0
    assert evidence["rule"].startswith("start window") and "first probe step" in evidence["rule"]
    # Nor is one in the middle, which neither window saw.
    mid = summary(healthy, healthy, grad_norm_growth_log10=2.5, grad_norm_explosion_step=40)
    verdict, evidence = decide(mid, diverged=False)
    assert verdict == "exploding" and evidence["step"] == 40
    assert evidence["thresholds"]["growth_log10"] == T.growth_log10


def test_exploding_is_checked_before_vanishing_within_a_window():
    window = {"first_last_ratio_log10_first": T.ratio_log10 + 0.5, "first_step": 0}
    window["first_last_ratio_log10"] = -T.ratio_log10 - 1
    verdict, why = window_verdict(window)
    assert verdict == "exploding" and why["step"] == 0 and "first probe step" in why["rule"]


def run_model(name: str, steps: int = 12, **options):
    task = ToyTask()
    torch.manual_seed(0)
    train_options = {k: options.pop(k) for k in list(options) if k in ("lr", "optimizer")}
    model = build_model(name, task.input_spec(), {**model_options(name), **options})
    cfg = config(steps=steps, **train_options)
    probes = make_probes("default", model, task, cfg)
    result = train(task, model, cfg, seed=0, hooks=probes)
    return probes.verdict(result), probes.summary()


def test_deep_sigmoid_mlp_with_small_init_vanishes():
    (verdict, figures), summary = run_model(
        "mlp-20", activation="sigmoid", width=16, init="normal:0.01"
    )
    assert verdict == "vanishing"
    assert figures["end"]["first_last_ratio_log10"] <= -T.ratio_log10
    assert 0.0 <= summary["saturated_fraction"] <= 1.0  # a fraction, not NaN


def test_large_init_and_high_learning_rate_explodes_or_diverges_with_its_step():
    (verdict, figures), _ = run_model(
        "mlp-8", activation="relu", width=32, init="normal:1.0", lr=0.5
    )
    assert verdict in ("exploding", "diverged")
    assert figures["step"] is not None and 0 <= figures["step"] < 12


def test_relu_he_mlp_is_healthy():
    (verdict, figures), _ = run_model("mlp-20", activation="relu", width=16, init="he")
    assert verdict == "healthy", figures
    assert abs(figures["end"]["first_last_ratio_log10"]) < T.ratio_log10


def test_small_resnet_is_healthy():
    (verdict, figures), summary = run_model("resnet-8", width=4, steps=6)
    assert verdict == "healthy", figures
    assert summary["dead_fraction"] is not None  # its ReLUs were watched
