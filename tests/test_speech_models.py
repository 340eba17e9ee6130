"""Sequence models on frame sequences: per-frame (CTC) outputs, the convolutional front end,
and the per-timestep gradient probe over frames, on synthetic features (no data needed)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from gradbench.budget import count_parameters
from gradbench.errors import UsageError
from gradbench.models.build import build_model
from gradbench.models.frontend import ConvFrontEnd, subsampled_steps
from gradbench.plugins import load_plugins
from gradbench.probes.timestep import decay_rate, timestep_grad_norms
from gradbench.task import Batch, InputSpec

FEATURES, STEPS, CLASSES = 6, 23, 5
MODELS = ("rnn", "irnn", "lstm", "gru", "transformer")
SPEC = InputSpec(kind="sequence", shape=(STEPS, FEATURES), num_outputs=CLASSES, target="per_frame")


def tiny(name: str, **options) -> torch.nn.Module:
    load_plugins()
    torch.manual_seed(0)
    return build_model(name, SPEC, {"width": 8, **options})


def padded_batch() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    lengths = torch.tensor([STEPS, 17, 9])
    x = torch.randn(3, STEPS, FEATURES, generator=generator)
    x[torch.arange(STEPS)[None, :] >= lengths[:, None]] = 0.0
    return x, lengths


class FrameTask:
    """The loss of a CTC task without its data: CTC over blank + 4 classes."""

    def loss(self, output: Tensor, batch: Batch) -> Tensor:
        from gradbench_tasks.speech import frame_lengths

        frames = frame_lengths(batch.lengths, batch.x.shape[1], output.shape[1])
        log_probs = output.float().log_softmax(-1).transpose(0, 1)
        targets = batch.y
        return torch.nn.functional.ctc_loss(
            log_probs, targets, frames, (targets != 0).sum(1), zero_infinity=True
        )


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("frontend", ["none", "conv2", "conv4"])
def test_per_frame_outputs_match_each_sample_run_alone(name: str, frontend: str):
    model = tiny(name, frontend=frontend).eval()
    x, lengths = padded_batch()
    with torch.no_grad():
        out = model(x, lengths)
        assert out.shape == (3, subsampled_steps(STEPS, frontend), CLASSES)
        for row in range(3):
            length = int(lengths[row])
            alone = model(x[row : row + 1, :length], lengths[row : row + 1])
            kept = alone.shape[1]
            assert kept == subsampled_steps(length, frontend)
            torch.testing.assert_close(out[row, :kept], alone[0], atol=1e-5, rtol=1e-4)


def test_the_front_end_is_off_by_default_and_adds_only_its_convolutions():
    plain, default = tiny("lstm"), tiny("lstm", frontend="none")
    assert count_parameters(plain) == count_parameters(default)
    assert plain.frontend is None
    conv4 = tiny("lstm", frontend="conv4")
    extra = 2 * (FEATURES * FEATURES * 3 + FEATURES)
    assert count_parameters(conv4)[0] == count_parameters(plain)[0] + extra
    with pytest.raises(UsageError, match="frontend='conv3' is not one of none, conv2, conv4"):
        tiny("gru", frontend="conv3")


def test_front_end_lengths_are_ceil_of_half_per_convolution():
    front = ConvFrontEnd(FEATURES, 4)
    x, lengths = padded_batch()
    out, new = front(x, lengths)
    assert new.tolist() == [6, 5, 3] and out.shape[1] == 6
    assert bool((out[1, 5:] == 0).all()) and bool((out[2, 3:] == 0).all())


@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "transformer"])
def test_timestep_probe_covers_every_frame(name: str):
    model = tiny(name)
    x, lengths = padded_batch()
    y = torch.tensor([[1, 2, 3], [2, 2, 0], [4, 0, 0]])
    result = timestep_grad_norms(model, FrameTask(), Batch(x, y, lengths), samples=3)
    # (S, T) per sample with the lengths, or the batch's (T,) norms.
    norms = result[0] if isinstance(result, tuple) else result
    norms = norms[0] if norms.ndim == 2 else norms  # sample 0 is full length
    assert norms.shape == (STEPS,)
    assert (norms > 0).all()  # the loss reads every frame of the longest sample
    assert decay_rate(norms) == decay_rate(norms)  # finite


def test_per_frame_target_leaves_classification_readouts_alone():
    spec = InputSpec(kind="sequence", shape=(STEPS, FEATURES), num_outputs=CLASSES)
    load_plugins()
    model = build_model("gru", spec, {"width": 8})
    x, lengths = padded_batch()
    assert model(x, lengths).shape == (3, CLASSES)
