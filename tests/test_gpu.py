"""The CUDA path end to end: a short run of every model family, bf16 on and off, probes on.

Marked ``gpu``: skipped, with the reason, where no CUDA device is present (every CPU
machine, CI included). Run them on a GPU machine with ``pytest -m gpu``.
"""

from __future__ import annotations

import math

import pytest
import torch

from gradbench.config import TrainConfig
from gradbench.models.build import parse_model_arg
from gradbench.records import ResultsStore
from gradbench.runner import Plan, load_task, run_plan
from gradbench.task import DataConfig, InputSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

IMAGE_MODELS = ["mlp-3", "plain-8:width=4", "resnet-8:width=4"]
SEQUENCE_MODELS = ["rnn", "lstm", "gru", "irnn", "transformer"]
VIDEO_MODELS = ["plain3d-8:width=4", "resnet3d-8:width=4"]


def video_task(make_fake_task):
    """The fake image task with clips of 4 frames: what the 3-D CNNs take."""
    task = make_fake_task(shape=(4, 1, 8, 8))
    task.input_spec = lambda: InputSpec(kind="video", shape=(4, 1, 8, 8), num_outputs=3)
    return task


def sweep(task, models: list[str], tmp_path, *, precision: str, **train) -> list[dict]:
    config = TrainConfig(
        steps=6,
        batch_size=16,
        lr=0.01,
        precision=precision,
        device="cuda",
        probes="default",
        **train,
    )
    plan = Plan(task.name, [parse_model_arg(m) for m in models], [0], config)
    return run_plan(plan, task, ResultsStore(tmp_path / precision))


def check(record: dict) -> None:
    environment = record["environment"]
    assert environment["device"].startswith("cuda")
    assert environment["device_name"] and environment["cuda"] and environment["cudnn"]
    assert environment["cudnn_benchmark"] is True  # not deterministic: autotuned kernels
    # A diverged run is a result (stopped early, recorded), not a failure of the CUDA path.
    assert record["steps"] == 6 or record["diverged"], record["model_label"]
    assert record["diverged"] or math.isfinite(record["final_train_loss"])
    assert record["probes"]["captures"] >= 1
    assert record["flops_per_step"]  # cuDNN RNNs included (counted by budget.flops)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_family_trains_on_cuda(make_fake_task, tmp_path, precision):
    adding = load_task("adding-20", DataConfig(cache_dir=tmp_path / "cache"), {})
    records = sweep(make_fake_task(shape=(1, 8, 8)), IMAGE_MODELS, tmp_path, precision=precision)
    records += sweep(adding, SEQUENCE_MODELS, tmp_path / "seq", precision=precision)
    records += sweep(
        video_task(make_fake_task), VIDEO_MODELS, tmp_path / "vid", precision=precision
    )
    assert len(records) == len(IMAGE_MODELS) + len(SEQUENCE_MODELS) + len(VIDEO_MODELS)
    for record in records:
        check(record)


def test_deterministic_runs_repeat_exactly_on_cuda(make_fake_task, tmp_path):
    task = make_fake_task(shape=(1, 8, 8))
    first, second = (
        sweep(task, ["resnet-8:width=4"], tmp_path / name, precision="fp32", deterministic=True)[0]
        for name in ("a", "b")
    )
    assert first["environment"]["deterministic_algorithms"] is True
    assert first["environment"]["cudnn_deterministic"] is True
    assert first["final_train_loss"] == second["final_train_loss"]


def test_fast_mode_on_cuda(make_fake_task, tmp_path):
    task = make_fake_task(shape=(1, 8, 8))
    config = dict(probes="off")
    [record] = sweep(task, ["resnet-8:width=4"], tmp_path, precision="fp32", fast=True, **config)
    assert record["fast"]["compiled"] and record["fast"]["channels_last"]
    assert record["fast"]["compile_seconds"] > 0
