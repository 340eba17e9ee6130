"""`gradbench ablate`: grid expansion, bad input, the cell table and main effects, end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from cli_helpers import cli
from scipy import stats

from gradbench import ablate
from gradbench.errors import UsageError
from gradbench.models.build import parse_model_arg
from gradbench.plugins import load_plugins
from gradbench.records import ResultsStore

load_plugins()

TINY = [
    "image",
    "-O",
    "train_limit=256",
    "--steps",
    "2",
    "--batch-size",
    "32",
    "--eval-limit",
    "200",
    "--device",
    "cpu",
    "--no-download",
]


def switches_for(over: list[str], models=("plain-8",), shared=None, train=None):
    specs = [parse_model_arg(m) for m in models]
    parsed = ablate.parse_over(over)
    found = ablate.classify(
        parsed, specs, shared_model_options=shared or {}, train_options=train or {}
    )
    return specs, found


# --- grid expansion ---------------------------------------------------------------------


def test_the_grid_is_the_cross_product_in_order() -> None:
    specs, switches = switches_for(
        ["activation=sigmoid,relu,prelu", "init=xavier,he", "clip_norm=none,1"]
    )
    assert [(s.name, s.kind) for s in switches] == [
        ("activation", "model"),
        ("init", "model"),
        ("clip_norm", "train"),
    ]
    cells = ablate.expand(specs, switches)
    assert len(cells) == 3 * 2 * 2
    first, last = cells[0], cells[-1]
    assert first.setting == {"activation": "sigmoid", "init": "xavier", "clip_norm": "none"}
    assert first.spec.options == {"activation": "sigmoid", "init": "xavier"}
    assert first.train == {"clip_norm": None}
    assert last.spec.label == "plain-8:activation=prelu,init=he"
    assert last.train == {"clip_norm": 1}
    assert len({(c.spec.label, json.dumps(c.train)) for c in cells}) == len(cells)


def test_bool_switches_are_typed_and_residual_toggles_the_shortcuts() -> None:
    specs, switches = switches_for(["residual=false,true"], models=("plain-8:width=4",))
    cells = ablate.expand(specs, switches)
    assert [c.spec.options for c in cells] == [
        {"width": 4, "residual": False},
        {"width": 4, "residual": True},
    ]


def test_a_model_without_the_switch_runs_once() -> None:
    # rnn has no residual option: one cell for it, two for the plain net.
    specs, switches = switches_for(["residual=false,true"], models=("plain-8", "rnn"))
    cells = ablate.expand(specs, switches)
    assert [c.spec.label for c in cells] == [
        "plain-8:residual=False",
        "plain-8:residual=True",
        "rnn",
    ]
    assert cells[2].setting == {}


@pytest.mark.parametrize(
    "over, models, fragment",
    [
        (["activation="], ("plain-8",), "lists no value"),
        (["activation=relu,"], ("plain-8",), "has an empty value"),
        (["activation=relu,relu"], ("plain-8",), "repeats a value"),
        (["activation"], ("plain-8",), "must be SWITCH=VALUE"),
        (["activation=relu", "activation=tanh"], ("plain-8",), "given twice"),
        (["colour=red,blue"], ("plain-8",), "unknown switch 'colour'"),
        (["recurrent_init=orthogonal,identity"], ("plain-8",), "no model in this command has"),
        (["activation=swish,relu"], ("plain-8",), "unknown activation 'swish'"),
        (["init=zeros,he"], ("plain-8",), "unknown init 'zeros'"),
        (["norm=instance,batch"], ("plain-8",), "unknown norm 'instance'"),
        (["residual=maybe,true"], ("plain-8",), "is not true or false"),
        (["depth=8,14"], ("plain-8",), "sets depth by its name"),
        (["steps=10,20"], ("plain-8",), "not a switch"),
        (["width=4,8"], ("plain-8:width=4",), "both set width"),
    ],
)
def test_bad_grids_are_usage_errors(over, models, fragment) -> None:
    with pytest.raises(UsageError, match=fragment):
        switches_for(over, models=models)


def test_a_switch_also_given_as_an_option_is_refused() -> None:
    with pytest.raises(UsageError, match="both set it"):
        switches_for(["activation=relu,tanh"], shared={"activation": "relu"})
    with pytest.raises(UsageError, match="both set it"):
        switches_for(["clip_norm=none,1"], train={"clip_norm": 1.0})


def test_too_many_cells_need_yes() -> None:
    specs, switches = switches_for(
        ["activation=sigmoid,tanh,relu,prelu,elu", "init=default,xavier,he,orthogonal"]
    )
    cells = ablate.expand(specs, switches)
    assert len(cells) == 20 > ablate.MAX_CELLS
    with pytest.raises(UsageError, match=f"20 cells, more than {ablate.MAX_CELLS}: pass --yes"):
        ablate.check_size(cells, yes=False)
    ablate.check_size(cells, yes=True)


# --- tables -----------------------------------------------------------------------------


def fake_record(seed: int, accuracy: float, loss: float = 1.0) -> dict:
    return {
        "run_id": f"r{seed}-{accuracy}",
        "seed": seed,
        "metrics": {"test_accuracy": accuracy, "test_loss": loss},
        "metric_directions": {"test_accuracy": True, "test_loss": False},
        "primary_metric": "test_accuracy",
        "final_train_loss": loss,
        "diverged": False,
        "verdict": "healthy",
        "probes": {"first_last_ratio_log10": -1.0},
        "parameters": 100,
        "train_seconds": 1.0,
    }


def test_main_effects_average_over_the_other_switches_with_a_seed_interval() -> None:
    specs, switches = switches_for(["activation=sigmoid,relu", "residual=false,true"])
    cells = ablate.expand(specs, switches)
    # accuracy = 0.1 + 0.5 [relu] + 0.2 [residual] + a per-seed wobble of the relu gain
    gain = {0: 0.50, 1: 0.56, 2: 0.47}
    records = {}
    for cell in cells:
        relu = cell.setting["activation"] == "relu"
        residual = cell.setting["residual"] == "true"
        records[cell.index] = [
            fake_record(seed, 0.1 + gain[seed] * relu + 0.2 * residual) for seed in gain
        ]
    effects = ablate.main_effects(cells, switches, records, "test_accuracy").set_index("switch")
    activation = effects.loc["activation"]
    assert activation["change"] == "sigmoid -> relu"
    per_seed = list(gain.values())
    assert activation["delta_test_accuracy"] == pytest.approx(sum(per_seed) / 3)
    low, high = stats.t.interval(0.95, 2, loc=sum(per_seed) / 3, scale=stats.sem(per_seed))
    assert activation["ci95"] == pytest.approx((high - low) / 2)
    assert (activation["seeds"], activation["pairs"], activation["effect"]) == (3, 6, "helps")
    residual = effects.loc["residual"]
    assert residual["delta_test_accuracy"] == pytest.approx(0.2)
    assert residual["ci95"] == pytest.approx(0.0, abs=1e-12)  # the same gain on every seed

    table = ablate.cell_table(cells, switches, records, "test_accuracy")
    assert list(table["activation"]) == ["relu", "relu", "sigmoid", "sigmoid"]
    assert list(table["residual"]) == ["true", "false", "true", "false"]
    assert table["test_accuracy_mean"].is_monotonic_decreasing
    assert set(table["verdict"]) == {"healthy:3"} and (table["grad_ratio_log10"] == -1.0).all()


def test_effects_skip_non_finite_pairs_and_judge_by_direction() -> None:
    specs, switches = switches_for(["clip_norm=none,1"])
    cells = ablate.expand(specs, switches)
    records = {
        cells[0].index: [fake_record(0, 0.5, loss=2.0), fake_record(1, math.nan, loss=2.0)],
        cells[1].index: [fake_record(0, 0.4, loss=1.0), fake_record(1, 0.4, loss=1.5)],
    }
    effects = ablate.main_effects(cells, switches, records, "test_accuracy")
    assert effects.loc[0, "pairs"] == 1 and effects.loc[0, "effect"] == "one seed"
    # On the training loss (lower is better) clipping helps on both seeds.
    on_loss = ablate.main_effects(cells, switches, records, "train_loss")
    assert on_loss.loc[0, "delta_train_loss"] == pytest.approx(-0.75)
    assert ablate.judge(-0.75, 0.1, higher=False) == "helps"
    assert ablate.judge(0.05, 0.1, higher=True) == "unclear"


def test_markdown_and_csv_views_hold_both_tables() -> None:
    specs, switches = switches_for(["activation=sigmoid,relu"])
    cells = ablate.expand(specs, switches)
    records = {c.index: [fake_record(0, 0.2 + 0.5 * i)] for i, c in enumerate(cells)}
    table = ablate.cell_table(cells, switches, records, "test_accuracy")
    effects = ablate.main_effects(cells, switches, records, "test_accuracy")
    meta = {"task": "image", "metric": "test_accuracy", "budget": "steps=2", "seeds": "0"}
    markdown = ablate.to_markdown(table, effects, meta)
    assert "Main effects on test_accuracy" in markdown and "sigmoid -> relu" in markdown
    assert markdown.index("| relu") < markdown.index("| sigmoid")  # best first
    csv = ablate.to_csv(table, effects, meta).splitlines()
    assert csv[0].startswith("view,task,cell,activation")
    assert [line.split(",")[0] for line in csv[1:]] == ["cell", "cell", "main_effect"]


# --- the command ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--over", "colour=red,blue"], "unknown switch 'colour'"),
        (["--over", "activation=swish,relu"], "unknown activation 'swish'"),
        (["--over", "activation="], "lists no value"),
        (["--over", "recurrent_init=orthogonal,identity"], "no model in this command has"),
        (
            ["--over", "activation=sigmoid,tanh,relu,prelu,elu,gelu,leaky_relu"]
            + ["--over", "init=xavier,he,default"],
            "21 cells, more than 16: pass --yes",
        ),
        (["--over", "optimizer=sgd,lbfgs"], "--optimizer 'lbfgs' is not one of"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_runs_nothing(
    extra, fragment, capsys, tmp_path: Path
) -> None:
    results = tmp_path / "results"
    args = ["ablate", *TINY, "-m", "plain-8:width=4", "--results", str(results), *extra]
    code, _, err = cli(args, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradbench: error: ") and fragment in lines[0]
    assert not (results / "runs.jsonl").exists()


@pytest.mark.slow
def test_dry_run_lists_cells_and_parameters(capsys, tmp_path: Path, data_dir: Path) -> None:
    results = tmp_path / "results"
    args = ["ablate", *TINY, "-m", "plain-8:width=4", "--data-dir", str(data_dir)]
    args += ["--over", "activation=relu,prelu", "--over", "residual=false,true"]
    code, out, err = cli([*args, "--dry-run", "--results", str(results)], capsys)
    assert code == 0, err
    assert "4 cells x 1 seeds = 4 runs" in out
    assert "plain-8:activation=prelu,residual=True,width=4" in out
    # PReLU adds one slope per activation layer: 7 on plain-8.
    assert "4,934" in out and "4,941" in out
    assert not (results / "runs.jsonl").exists()


@pytest.mark.slow
def test_ablate_runs_every_cell_as_an_ordinary_run(capsys, tmp_path: Path, data_dir: Path) -> None:
    results = tmp_path / "results"
    args = ["ablate", *TINY, "-m", "plain-8:width=4", "--data-dir", str(data_dir)]
    args += ["--over", "activation=sigmoid,relu", "--over", "init=xavier,he", "--seeds", "0,1"]
    args += ["--results", str(results), "--format", "json"]
    code, out, err = cli(args, capsys)
    assert code == 0, err
    records = ResultsStore(results).load()
    assert len(records) == 8
    assert {(r["model_options"]["activation"], r["model_options"]["init"]) for r in records} == {
        ("sigmoid", "xavier"),
        ("sigmoid", "he"),
        ("relu", "xavier"),
        ("relu", "he"),
    }
    assert {r["steps"] for r in records} == {2} and {r["seed"] for r in records} == {0, 1}
    payload = json.loads(out)
    assert payload["metric"] == "test_accuracy" and len(payload["cells"]) == 4
    means = [c["test_accuracy_mean"] for c in payload["cells"]]
    assert means == sorted(means, reverse=True)
    by_label = {c["model_label"]: c for c in payload["cells"]}
    for label, cell in by_label.items():
        runs = [r for r in records if r["model_label"] == label]
        expected = sum(r["metrics"]["test_accuracy"] for r in runs) / 2
        assert cell["test_accuracy_mean"] == pytest.approx(expected)
        assert cell["verdict"] and cell["seeds"] == 2
    effects = {e["switch"]: e for e in payload["main_effects"]}
    assert set(effects) == {"activation", "init"}
    assert effects["activation"]["pairs"] == 4 and effects["activation"]["seeds"] == 2
