"""The fused dL/dh_t path of the recurrent models against the step-by-step reference."""

import pytest
import torch
import torch.nn.functional as F

from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.task import InputSpec


def reference_norms(model, x, lengths, loss_fn):
    """Per-sample ||dL/dh_t|| (B, T) from the step-by-step path."""
    output, hs = model.hidden_sequence(x, lengths)
    grads = torch.autograd.grad(loss_fn(output), hs, allow_unused=True)
    zeros = torch.zeros(x.shape[0])
    return torch.stack([zeros if g is None else g.float().norm(dim=1) for g in grads], dim=1)


@pytest.mark.parametrize("name", ["rnn", "lstm", "lstm-2", "rnn:activation=relu", "gru", "gru-2"])
def test_fused_norms_equal_the_stepwise_total_derivative(name):
    spec = InputSpec(kind="sequence", shape=(12, 3), num_outputs=4)
    model_spec = ModelSpec(name.split(":")[0], {})
    options = resolve_options(model_spec, {"width": 8}, spec.kind)
    if ":" in name:
        options["activation"] = "relu"
    torch.manual_seed(0)
    model = build_model(model_spec.name, spec, options)
    x = torch.randn(5, 12, 3)
    y = torch.randint(0, 4, (5,))

    def loss_fn(out):
        return F.cross_entropy(out, y)

    fused = model.hidden_grad_norms(x, None, loss_fn)
    reference = reference_norms(model, x, None, loss_fn)
    assert fused.shape == (5, 12)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-7)
    # The signal must reach early steps through the recurrence, not only the last one.
    assert (fused[:, 0] > 0).all()


@pytest.mark.parametrize("name", ["lstm", "rnn", "lstm-2", "gru", "gru-2"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_fused_norms_with_padding_agree_on_every_step(name, pooling):
    spec = InputSpec(kind="tokens", shape=(9,), num_outputs=2, vocab_size=20, pad_index=0)
    options = resolve_options(
        ModelSpec(name.split("-")[0], {"pooling": pooling}), {"width": 6}, spec.kind
    )
    if "-" in name:
        options["depth"] = 2
    torch.manual_seed(1)
    model = build_model(name.split("-")[0], spec, options)
    lengths = torch.tensor([9, 5, 7])
    x = torch.randint(1, 20, (3, 9))
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    y = torch.tensor([0, 1, 1])

    def loss_fn(out):
        return F.cross_entropy(out, y)

    fused = model.hidden_grad_norms(x, lengths, loss_fn)
    reference = reference_norms(model, x, lengths, loss_fn)
    # Every step of every sample, padded ones included (zero in both: padding carries
    # no gradient of its own).
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-7)
    assert (fused[1, 5:] == 0).all() and (fused[2, 7:] == 0).all()
    assert (fused[1, :5] > 0).all()


def test_bidirectional_nets_fall_back_to_the_stepwise_path():
    spec = InputSpec(kind="sequence", shape=(6, 2), num_outputs=2)
    for name in ("lstm", "gru"):
        options = resolve_options(ModelSpec(name, {"bidirectional": True}), {"width": 4}, spec.kind)
        model = build_model(name, spec, options)
        assert model.hidden_grad_norms(torch.randn(2, 6, 2), None, lambda o: o.sum()) is None


def test_the_probe_takes_the_cheaper_path_for_the_device():
    """On the CPU only an unpadded LSTM has a fused kernel (oneDNN): the probe uses the
    fused pass there and the step-by-step one elsewhere (measured cheaper on long
    sequences; see RecurrentNet.fused_probe_pays). On CUDA the fused pass, always."""
    from gradbench.probes.timestep import timestep_grad_norms
    from gradbench.task import Batch

    spec = InputSpec(kind="sequence", shape=(10, 3), num_outputs=2)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")

    class Task:
        def loss(self, out, batch):
            return F.cross_entropy(out, batch.y)

    batch = Batch(torch.randn(4, 10, 3), torch.tensor([0, 1, 1, 0]))
    for name, fused_here in (("lstm", True), ("gru", False), ("rnn", False)):
        model = build_model(
            name, spec, resolve_options(ModelSpec(name, {}), {"width": 4}, "sequence")
        )
        assert model.fused_probe_pays(cpu, padded=False) is fused_here
        assert not model.fused_probe_pays(cpu, padded=True)
        assert model.fused_probe_pays(cuda, padded=True)

        def refuse(*args, **kwargs):
            raise AssertionError("the other path was taken")

        unused = "hidden_sequence" if fused_here else "hidden_grad_norms"
        setattr(model, unused, refuse)
        norms, lengths = timestep_grad_norms(model, Task(), batch, samples=4)
        assert norms.shape == (4, 10) and (norms[:, -1] > 0).all()
