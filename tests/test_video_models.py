"""Frame encoder + temporal model on video tasks: the same names, dL/dh_t over frames, budgets."""

from __future__ import annotations

import pytest
import torch
from gradbench_tasks.video import VideoClips
from torch import nn

from gradbench import budget as budgets
from gradbench.errors import UsageError
from gradbench.models.build import (
    ModelSpec,
    any_kind_options,
    build_model,
    model_options,
    resolve_options,
)
from gradbench.models.rnn import RecurrentNet
from gradbench.models.transformer import TransformerNet
from gradbench.models.video import VideoNet
from gradbench.probes.timestep import timestep_grad_norms
from gradbench.task import InputSpec

TEMPORAL = ("rnn", "irnn", "lstm", "gru", "transformer")
# Tiny: 4 frames of 12x12, a 2-channel encoder.
TINY = {"encoder_width": 2, "frame_features": 8, "width": 8}


def spec(frames: int = 4, size: int = 12, classes: int = 3) -> InputSpec:
    return InputSpec(kind="video", shape=(frames, 1, size, size), num_outputs=classes)


def make(name: str, video: InputSpec | None = None, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, video or spec(), model_options(name, "video") | TINY | options)


def clips_task(frames: int = 4, size: int = 12, count: int = 32) -> VideoClips:
    """The real video task class around random clips (no image files needed)."""
    generator = torch.Generator().manual_seed(0)
    clips = torch.randint(0, 256, (count, frames, 1, size, size), generator=generator)
    labels = {"memory": torch.arange(count) % 10}
    payload = {
        "train": {"clips": clips.to(torch.uint8), "labels": labels},
        "test": {"clips": clips.to(torch.uint8), "labels": labels},
        "mean": 0.5,
        "std": 0.3,
    }
    from gradbench_tasks.video import ImageSet

    return VideoClips(ImageSet("fake", "v", "local", None), payload, "memory", {"frames": frames})


@pytest.mark.parametrize("name", TEMPORAL)
def test_each_temporal_model_classifies_clips_and_every_parameter_learns(name: str) -> None:
    model = make(name)
    assert isinstance(model, VideoNet)
    x = torch.randn(3, 4, 1, 12, 12)
    out = model(x)
    assert out.shape == (3, 3)
    out.logsumexp(-1).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), pname
    # The name means the same cell as on a sequence task: the sequence model itself.
    expected = TransformerNet if name == "transformer" else RecurrentNet
    assert isinstance(model.temporal, expected)
    if name != "transformer":
        assert model.temporal.cell == {"irnn": "rnn"}.get(name, name)


def test_the_encoder_is_the_cnn_family_named() -> None:
    plain = make("lstm", encoder="plain-8")
    residual = make("lstm", encoder="resnet-8")
    blocks = [block.residual for block in residual.encoder.cnn.blocks]
    assert blocks and all(blocks)
    assert not any(block.residual for block in plain.encoder.cnn.blocks)
    # Shortcuts are parameter-free: the same parameter count either way.
    assert sum(p.numel() for p in plain.parameters()) == sum(
        p.numel() for p in residual.parameters()
    )
    deeper = make("lstm", encoder="plain-14")
    assert len(deeper.encoder.cnn.blocks) == 6
    with pytest.raises(UsageError, match="is not an image CNN"):
        make("lstm", encoder="mlp-2")
    with pytest.raises(UsageError, match="unknown model"):
        make("lstm", encoder="vgg-8")


def test_video_options_exist_only_on_video_tasks() -> None:
    assert model_options("lstm", "video")["encoder"] == "plain-8"
    assert "encoder" not in model_options("lstm", "sequence")
    assert "encoder" in any_kind_options("lstm")  # before the task is known: every variant's
    with pytest.raises(UsageError, match="no option 'encoder' on a task whose input is sequence"):
        resolve_options(ModelSpec("lstm", {"encoder": "resnet-8"}), {}, "sequence")
    options = resolve_options(ModelSpec("lstm", {"encoder": "resnet-8"}), {}, "video")
    assert options["encoder"] == "resnet-8"
    # A CNN or sequence model built for a video task says what it needs.
    with pytest.raises(UsageError, match="need an image task"):
        build_model("plain-8", spec(), model_options("plain-8"))


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "transformer"])
def test_dl_dh_t_over_frames_matches_autograd_through_the_states(name: str) -> None:
    task = clips_task(frames=5)
    model = make(name, spec(frames=5, classes=10)).train()
    batch = task.fake_batch(4)
    output, states = model.hidden_sequence(batch.x)
    assert len(states) == 5
    torch.testing.assert_close(output, model(batch.x), rtol=1e-4, atol=1e-5)
    grads = torch.autograd.grad(task.loss(output, batch), states)
    reference = torch.stack([g.norm(dim=1) for g in grads], dim=1)  # per sample, per frame
    probed, lengths = timestep_grad_norms(model, task, batch, samples=4)
    assert probed.shape == (4, 5) and lengths.tolist() == [5] * 4
    torch.testing.assert_close(torch.from_numpy(probed).float(), reference, rtol=1e-3, atol=1e-7)
    # The fused path of the RNN/LSTM/GRU gives the same numbers as the step-by-step one.
    fused = model.hidden_grad_norms(batch.x, None, lambda out: task.loss(out, batch))
    assert (fused is not None) == (name in ("rnn", "lstm", "gru"))
    if fused is not None:
        torch.testing.assert_close(fused[:4], reference, rtol=1e-3, atol=1e-7)


@pytest.mark.slow
def test_models_are_matched_on_parameters_and_flops_on_the_real_clip_shape() -> None:
    task = clips_task(frames=4)
    # The transformer first: its position table and norms make it the largest at width 8.
    names = ["transformer", "rnn", "lstm", "gru"]
    models = [(n, model_options(n, "video") | TINY) for n in names]
    matched = budgets.match_models(models, task, kind="params", target=None, tolerance=0.05)
    assert all(info["match_within_tolerance"] for _, info in matched)
    counts = [
        budgets.count_parameters(build_model(n, task.input_spec(), o))[0]
        for n, (o, _) in zip(names, matched, strict=True)
    ]
    assert max(counts) <= 1.05 * min(counts)
    # FLOPs are counted on the task's clips: twice the frames, about twice the FLOPs.
    short = budgets.flops_per_step(make("lstm", task.input_spec()), task, 8)
    long_task = clips_task(frames=8)
    long = budgets.flops_per_step(make("lstm", long_task.input_spec()), long_task, 8)
    assert short and long and 1.8 < long / short < 2.2
    flops = budgets.match_models(models[1:3], task, kind="flops", target=None, batch_size=8)
    assert all(info["match"] == "flops" for _, info in flops)
