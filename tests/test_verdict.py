"""The verdict rule on constructed summaries, and on constructed training runs."""

from __future__ import annotations

import torch
from test_probes_toys import ToyTask, config

from gradbench.models.build import build_model, model_options
from gradbench.probes import make_probes
from gradbench.probes.verdict import THRESHOLDS, decide
from gradbench.train import train

T = THRESHOLDS


def test_diverged_comes_first_and_carries_the_event():
    event = {"step": 7, "what": "gradient", "layer": "blocks.3", "layers": ["blocks.3"]}
    verdict, figures = decide({"nonfinite": event, "first_last_ratio_log10": -9.0}, diverged=True)
    assert verdict == "diverged" and figures["step"] == 7 and figures["layer"] == "blocks.3"
    assert decide({}, diverged=True, diverged_step=3, divergence="loss")[1]["step"] == 3
    assert decide({}, diverged=False) == (None, {})


def test_each_threshold_decides_at_its_boundary():
    below = 0.99
    cases = [
        ({"grad_norm_growth_log10": T.growth_log10, "grad_norm_explosion_step": 4}, "exploding"),
        ({"grad_norm_growth_log10": T.growth_log10 * below}, "healthy"),
        ({"first_last_ratio_log10": T.ratio_log10}, "exploding"),
        ({"first_last_ratio_log10": -T.ratio_log10}, "vanishing"),
        ({"first_last_ratio_log10": -T.ratio_log10 * below}, "healthy"),
        ({"first_last_ratio_log10_initial": T.ratio_log10}, "exploding"),
        ({"first_last_ratio_log10_initial": -T.ratio_log10}, "vanishing"),
        ({"first_last_ratio_log10_initial": T.ratio_log10 * below}, "healthy"),
        ({"timestep_log10_start_to_end": T.timestep_log10}, "exploding"),
        ({"timestep_log10_start_to_end": -T.timestep_log10}, "vanishing"),
        ({"timestep_log10_start_to_end": -T.timestep_log10 * below}, "healthy"),
        ({"first_last_ratio_log10": None, "timestep_log10_start_to_end": None}, "healthy"),
    ]
    for summary, expected in cases:
        assert decide(summary, diverged=False)[0] == expected, summary
    _, figures = decide(cases[0][0], diverged=False)
    assert figures["step"] == 4 and figures["thresholds"]["growth_log10"] == T.growth_log10


def test_exploding_is_checked_before_vanishing_and_figures_are_always_given():
    # An explosion at initialisation that collapsed the network (as plain-56 does).
    summary = {
        "first_last_ratio_log10_initial": T.ratio_log10 + 0.5,
        "first_capture_step": 0,
        "first_last_ratio_log10": -T.ratio_log10 - 1,
    }
    verdict, figures = decide(summary, diverged=False)
    assert verdict == "exploding" and figures["step"] == 0
    assert "at the first step" in figures["rule"]
    assert figures["first_last_ratio_log10"] == -T.ratio_log10 - 1


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
    assert figures["first_last_ratio_log10"] <= -T.ratio_log10
    assert summary["saturated_fraction"] is not None


def test_large_init_and_high_learning_rate_explodes_or_diverges_with_its_step():
    (verdict, figures), _ = run_model(
        "mlp-8", activation="relu", width=32, init="normal:1.0", lr=0.5
    )
    assert verdict in ("exploding", "diverged")
    assert figures["step"] is not None and 0 <= figures["step"] < 12


def test_relu_he_mlp_is_healthy():
    (verdict, figures), _ = run_model("mlp-20", activation="relu", width=16, init="he")
    assert verdict == "healthy", figures
    assert abs(figures["first_last_ratio_log10"]) < T.ratio_log10


def test_small_resnet_is_healthy():
    (verdict, figures), summary = run_model("resnet-8", width=4, steps=6)
    assert verdict == "healthy", figures
    assert summary["dead_fraction"] is not None  # its ReLUs were watched
