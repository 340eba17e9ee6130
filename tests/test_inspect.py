"""`gradbench inspect`: terminal summary, PNG plots, run-id prefixes and errors."""

from __future__ import annotations

import pytest
import torch
from test_probes_toys import ToyRNN, ToyTask, config
from typer.testing import CliRunner

from gradbench.cli import app
from gradbench.inspect_cli import levels, resample, sparkline
from gradbench.models.build import ModelSpec
from gradbench.probes import make_probes
from gradbench.records import SCHEMA_VERSION, ResultsStore
from gradbench.runner import Plan, PreparedModel, run_one
from gradbench.train import train

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"


def mlp_record(tmp_path, run_id: str, **train_overrides) -> dict:
    """A real run of a small registered MLP through the runner, stored under ``run_id``."""
    task = ToyTask()
    cfg = config(steps=12, **train_overrides)
    plan = Plan(task="toy", models=[ModelSpec("mlp-4")], seeds=[0], train=cfg)
    options = {"depth": 4, "width": 16, "activation": "relu", "batch_norm": False}
    item = PreparedModel(ModelSpec("mlp-4"), {**options, "residual": False, "init": "he"})
    record, series = run_one("toy", task, item, 0, plan)
    record["run_id"] = run_id
    ResultsStore(tmp_path).append(record, series)
    return record


def rnn_record(tmp_path, run_id: str) -> dict:
    """A toy RNN run with the per-timestep probe, stored with the runner's record fields."""
    task = ToyTask((16, 3))
    torch.manual_seed(0)
    model = ToyRNN(3, 8, 4, cell="rnn")
    cfg = config(steps=8)
    probes = make_probes("full", model, task, cfg)
    result = train(task, model, cfg, seed=0, hooks=probes)
    verdict, figures = probes.verdict(result)
    record = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "created": "2026-01-01T00:00:00+00:00",
        "task": "toy",
        "task_options": {},
        "dataset": {"name": "toy", "split": "train", "version": "v1", "source": "synthetic"},
        "model": "toy-rnn",
        "model_label": "toy-rnn",
        "model_options": {"width": 8},
        "train_options": {"steps": 8},
        "budget": {"kind": "steps", "target": 8, "achieved": result.steps},
        "parameters": sum(p.numel() for p in model.parameters()),
        "metrics": result.metrics,
        "metric_directions": {m.name: m.higher_is_better for m in task.metrics},
        "primary_metric": task.metrics[0].name,
        "seed": 0,
        "steps": result.steps,
        "train_seconds": result.train_seconds,
        "diverged": result.diverged,
        "probes": {**probes.summary(), "verdict_figures": figures},
        "verdict": verdict,
    }
    series = {"loss": result.losses, "grad_norm": result.grad_norms, **probes.series()}
    ResultsStore(tmp_path).append(record, series)
    return record


def test_terminal_summary_by_unique_prefix(tmp_path):
    record = mlp_record(tmp_path, "aaaa11112222")
    rnn_record(tmp_path, "bbbb11112222")
    result = runner.invoke(app, ["inspect", "aaaa", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "run aaaa11112222" in result.output
    assert f"verdict: {record['verdict']}" in result.output
    ratio = record["probes"]["first_last_ratio_log10"]
    assert f"log10 {ratio:+.2f}" in result.output
    assert "per-layer gradient norms" in result.output
    for name in ("input.1", "head"):  # first and last weight layers label heatmap rows
        assert name in result.output


def test_plots_are_written(tmp_path):
    rnn_record(tmp_path, "bbbb11112222")
    plots = tmp_path / "plots"
    result = runner.invoke(
        app, ["inspect", "bbbb11112222", "--results", str(tmp_path), "--plot", str(plots)]
    )
    assert result.exit_code == 0, result.output
    assert "dL/dh_t over T=16" in result.output
    names = sorted(p.name for p in plots.iterdir())
    assert names == [f"bbbb11112222-{n}.png" for n in ("gradient-flow", "loss", "timesteps")]
    for path in plots.iterdir():
        assert path.read_bytes()[:8] == PNG and path.stat().st_size > 5000


def test_unknown_and_ambiguous_ids_are_one_line_errors(tmp_path):
    mlp_record(tmp_path, "cccc00000001")
    mlp_record(tmp_path, "cccc00000002")
    unknown = runner.invoke(app, ["inspect", "zzzz", "--results", str(tmp_path)])
    assert unknown.exit_code == 2
    assert "no run 'zzzz'" in unknown.output and "Traceback" not in unknown.output
    ambiguous = runner.invoke(app, ["inspect", "cccc", "--results", str(tmp_path)])
    assert ambiguous.exit_code == 2 and "ambiguous" in ambiguous.output
    empty = runner.invoke(app, ["inspect", "cccc", "--results", str(tmp_path / "none")])
    assert empty.exit_code == 1 and "no run records" in empty.output


def test_probes_off_run_still_inspects(tmp_path):
    mlp_record(tmp_path, "dddd00000001", probes="off")
    result = runner.invoke(
        app, ["inspect", "dddd", "--results", str(tmp_path), "--plot", str(tmp_path / "p")]
    )
    assert result.exit_code == 0, result.output
    assert "--probes off" in result.output
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["dddd00000001-loss.png"]


def test_sparkline_and_levels():
    assert sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([1.0, float("nan"), 3.0]) == "▁×█"
    assert sparkline([1e-3, 1e-2, 1e-1], log=True) == "▁▅█"
    assert levels(resample([1.0, 1.0], 10)) == [4, 4]
    binned = resample(list(range(100)), 10)
    assert len(binned) == 10 and binned[0] == pytest.approx(4.5)


def test_heatmap_grid_keeps_weight_layers_input_first():
    from gradbench.report import weight_layer_grid

    series = {
        "layer_kinds": ["weight", "norm", "weight"],
        "layer_names": ["stem", "bn", "head"],
        "layer_grad_norm": [[1e-3, 5.0, 1.0], [0.0, 5.0, 10.0]],
        "probe_steps": [0, 10],
    }
    grid, names, steps = weight_layer_grid(series)
    assert names == ["stem", "head"] and steps.tolist() == [0, 10]
    assert grid.tolist() == [[-3.0, -30.0], [0.0, 1.0]]  # zero drawn at the 1e-30 floor


@pytest.mark.filterwarnings("ignore:.*skipping a record that does not match the schema")
def test_crafted_records_cannot_reach_outside_the_results_folder(tmp_path):
    """A `../` id or an absolute series path is skipped with a warning, never opened."""
    import json

    results = tmp_path / "results"
    record = mlp_record(results, "cccc11112222")
    outside = tmp_path / "outside"
    outside.mkdir()
    crafted = [
        record | {"run_id": "../../outside/x"},
        record | {"run_id": "dddd11112222", "series_file": str(results / "series" / "x.npz")},
        record | {"run_id": "eeee11112222", "series_file": "series/../../outside/y.npz"},
    ]
    with open(results / "runs.jsonl", "a") as handle:
        for item in crafted:
            handle.write(json.dumps(item) + "\n")
    plots = tmp_path / "plots"
    for run_id in ("../../outside/x", "dddd", "eeee"):
        result = runner.invoke(
            app, ["inspect", run_id, "--results", str(results), "--plot", str(plots)]
        )
        assert result.exit_code == 2, result.output
        assert "no run" in result.output
    assert list(outside.iterdir()) == [] and not plots.exists()
    # The genuine run still works, and its plots land in the folder named.
    result = runner.invoke(
        app, ["inspect", "cccc", "--results", str(results), "--plot", str(plots)]
    )
    assert result.exit_code == 0, result.output
    assert all(p.parent == plots for p in plots.iterdir())


def test_summary_shows_the_start_and_end_windows_behind_the_verdict() -> None:
    from gradbench.inspect_cli import summary_lines

    window = {"steps": [0, 19], "first_last_ratio_log10": -0.5, "train_loss": 0.3}
    record = {
        "verdict": "healthy",
        "probes": {
            "verdict_figures": {
                "rule": "end window",
                "start": {**window, "verdict": "vanishing", "timestep_log10_start_to_end": -3.6},
                "end": {**window, "steps": [80, 99], "verdict": "healthy"},
            },
        },
    }
    lines = summary_lines(record)  # type: ignore[arg-type]
    assert lines[0].startswith("verdict: healthy")
    assert lines[1].strip().startswith("start: vanishing (steps 0..19")
    assert "-3.60" in lines[1]
    assert lines[2].strip().startswith("end: healthy (steps 80..99")


def test_timestep_lines_draw_a_vanishing_gradient_as_a_ramp_towards_the_end() -> None:
    import numpy as np

    from gradbench.inspect_cli import timestep_lines

    # Distance from the end 0..9; each step back loses a decade; the last 2 are padding.
    decaying = 10.0 ** -np.arange(10.0)
    decaying[8:] = np.nan
    series = {
        "timestep_steps": np.array([0, 50]),
        "timestep_grad_norm_from_end": np.stack([decaying, np.where(decaying > 0, 1.0, np.nan)]),
    }
    header, first, last, scale = timestep_lines(series, width=20)
    assert "aligned at each sequence's end" in header
    bars = first.split()[-1]
    assert len(bars) == 8  # the padded distances no sequence reached are trimmed
    assert bars[0] == "▁" and bars[-1] == "█"  # from the start (left) up to the loss
    assert len(set(last.split()[-1])) == 1  # a flat curve is one level throughout
    assert "8 time steps" in scale and "10^-7.0" in scale
    assert timestep_lines({"loss": np.ones(3)}) == []
