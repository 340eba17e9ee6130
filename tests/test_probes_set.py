"""The probe set in the training loop: no effect on training, what it stores, determinism."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_probes_toys import ToyRNN, ToyTask, config

from gradbench.leaderboard import build_tables
from gradbench.models.build import ModelSpec
from gradbench.probes import make_probes
from gradbench.records import ResultsStore
from gradbench.runner import Plan, PreparedModel, run_one
from gradbench.train import train


def run(level: str, steps: int = 12, **overrides):
    task = ToyTask((10, 3))
    torch.manual_seed(0)
    model = ToyRNN(3, 8, 4, cell="lstm", dropout=0.3, batch_norm=True)
    cfg = config(steps=steps, optimizer="sgd-momentum", **overrides)
    probes = make_probes(level, model, task, cfg)
    result = train(task, model, cfg, seed=0, hooks=probes)
    return model, result, probes


def test_probes_do_not_change_training():
    runs = {level: run(level) for level in ("off", "default", "full")}
    reference = runs["off"][0].state_dict()
    for level in ("default", "full"):
        model, result, _ = runs[level]
        for key, value in model.state_dict().items():
            assert torch.equal(value, reference[key]), f"{level}: {key} differs"
        np.testing.assert_array_equal(result.losses, runs["off"][1].losses)
        assert result.metrics == runs["off"][1].metrics


def test_default_level_captures_on_schedule_and_stores_series():
    model, result, probes = run("default", steps=60)
    series = probes.series()
    assert series["probe_steps"].tolist() == [0, 10, 20, 30, 40, 50, 59]
    # dL/dh_t every 10th step at least (about 20 per run in longer ones), and the last.
    assert series["timestep_steps"].tolist() == [0, 10, 20, 30, 40, 50, 59]
    layers = len(series["layer_names"])
    assert series["layer_names"].tolist() == ["cell", "norm", "head"]
    assert series["layer_kinds"].tolist() == ["weight", "norm", "weight"]
    assert series["layer_grad_norm"].shape == (7, layers)
    sizes = np.array([sum(p.numel() for p in m.parameters()) for m in model.children()][:1])
    np.testing.assert_allclose(
        series["layer_grad_rms"][:, 0], series["layer_grad_norm"][:, 0] / np.sqrt(sizes[0])
    )
    assert np.all(np.isfinite(series["layer_update_ratio"]))  # every capture had its step
    assert series["timestep_grad_norm_from_end"].shape == (7, 10)
    assert series["timestep_grad_norm_from_start"].shape == (7, 10)
    summary = probes.summary()
    assert summary["captures"] == 7 and summary["timestep_length"] == 10
    assert summary["timestep_captures"] == 7 and summary["timestep_samples"] == 6
    means = series["layer_grad_rms"].mean(axis=0)  # ratio of the mean RMS, cell/head
    assert summary["first_last_ratio_log10"] == pytest.approx(np.log10(means[0] / means[2]))
    assert summary["first_last_ratio_log10_initial"] == series["first_last_ratio_log10"][0]
    assert summary["first_layer"] == "cell" and summary["last_layer"] == "head"
    assert summary["nonfinite"] is None
    # Windows: the first and last 20% of the 60 steps, each with its own evidence.
    start, end = summary["windows"]["start"], summary["windows"]["end"]
    assert start["steps"] == [0, 11] and end["steps"] == [48, 59]
    assert start["layer_probe_steps"] == 2 and end["layer_probe_steps"] == 2
    assert start["timestep_captures"] == 2 and end["timestep_captures"] == 2
    assert 0 < summary["probe_seconds"] < result.probe_seconds + 1e-9


def test_full_level_probes_every_step_and_off_stores_nothing():
    _, result, probes = run("full", steps=5)
    assert probes.series()["probe_steps"].tolist() == [0, 1, 2, 3, 4]
    assert len(probes.series()["timestep_steps"]) == 5
    _, result_off, off = run("off", steps=5)
    assert off.summary() == {} and off.series() == {}
    assert off.verdict(result_off) == (None, {})


def test_same_run_twice_gives_the_same_probes():
    first, second = run("default")[2], run("default")[2]
    a, b = first.summary(), second.summary()
    a.pop("probe_seconds"), b.pop("probe_seconds")
    assert a == b
    for key, value in first.series().items():
        np.testing.assert_array_equal(value, second.series()[key])


def test_series_round_trip_through_the_results_store_without_pickle(tmp_path):
    _, _, probes = run("default", steps=12)
    store = ResultsStore(tmp_path)
    record = {"run_id": "abc123", "schema_version": 1}
    store.append(record, probes.series())
    loaded = store.series(record)  # np.load(allow_pickle=False) inside
    assert loaded["layer_names"].tolist() == ["cell", "norm", "head"]
    np.testing.assert_array_equal(loaded["layer_grad_norm"], probes.series()["layer_grad_norm"])


def test_runner_records_summary_verdict_and_leaderboard_columns(tmp_path):
    task = ToyTask()
    cfg = config(steps=6, clip_norm=0.01)  # clipping every step: hit rate 1
    plan = Plan(task="toy", models=[ModelSpec("mlp-4")], seeds=[0], train=cfg)
    options = {"depth": 4, "width": 16, "activation": "relu", "batch_norm": False}
    item = PreparedModel(ModelSpec("mlp-4"), {**options, "residual": False, "init": "he"})
    record, series = run_one("toy", task, item, 0, plan)
    assert record["verdict"] == "healthy"
    assert math.isfinite(record["probes"]["first_last_ratio_log10"])
    assert record["probes"]["verdict_figures"]["clip_hit_rate"] == 1.0
    assert record["clip_hit_rate"] == 1.0
    assert {"loss", "grad_norm", "layer_grad_norm"} <= set(series)
    assert record["verdict_start"] == "healthy" and record["verdict_end"] == "healthy"
    assert record["verdict_evidence"]["end"]["verdict"] == "healthy"
    assert record["probe_seconds"] > 0
    store = ResultsStore(tmp_path)
    store.append(record, series)
    (table,) = build_tables(store.load()).values()
    assert table.loc[0, "verdicts"] == "healthy:1"
    assert table.loc[0, "first_last_log10"] == record["probes"]["first_last_ratio_log10"]


def test_resuming_arms_the_saturation_hooks_for_the_step_resumed_at():
    """``start`` arms the saturation hooks for step 0; a checkpoint resumed at step k must
    leave them armed only when k is scheduled, as the uninterrupted run would have them."""
    task = ToyTask((10, 3))
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    probes = make_probes("default", model, task, config(steps=30))
    probes.start(model, task, config(steps=30))
    armed = lambda: bool(probes.saturation._handles)  # noqa: E731
    assert armed()  # step 0 is scheduled
    probes.resume(5)
    assert not armed()
    probes.resume(10)
    assert armed()
    probes.resume(29)  # the planned last step
    assert armed()
