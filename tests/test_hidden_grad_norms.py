"""The fused dL/dh_t path of the recurrent models against the step-by-step reference."""

import pytest
import torch
import torch.nn.functional as F

from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.task import InputSpec


def reference_norms(model, x, lengths, loss_fn):
    output, hs = model.hidden_sequence(x, lengths)
    grads = torch.autograd.grad(loss_fn(output), hs, allow_unused=True)
    return torch.stack([torch.zeros(()) if g is None else g.float().norm() for g in grads])


@pytest.mark.parametrize("name", ["rnn", "lstm", "lstm-2", "rnn:activation=relu"])
def test_fused_norms_equal_the_stepwise_total_derivative(name):
    spec = InputSpec(kind="sequence", shape=(12, 3), num_outputs=4)
    model_spec = ModelSpec(name.split(":")[0], {})
    options = resolve_options(model_spec, {"width": 8})
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
    assert fused.shape == (12,)
    torch.testing.assert_close(fused, reference, rtol=1e-4, atol=1e-7)
    # The signal must reach early steps through the recurrence, not only the last one.
    assert fused[0] > 0


def test_fused_norms_with_padding_match_on_the_steps_each_sample_uses():
    spec = InputSpec(kind="tokens", shape=(9,), num_outputs=2, vocab_size=20, pad_index=0)
    options = resolve_options(ModelSpec("lstm", {}), {"width": 6})
    torch.manual_seed(1)
    model = build_model("lstm", spec, options)
    lengths = torch.tensor([9, 5, 7])
    x = torch.randint(1, 20, (3, 9))
    for i, n in enumerate(lengths):
        x[i, n:] = 0
    y = torch.tensor([0, 1, 1])

    def loss_fn(out):
        return F.cross_entropy(out, y)

    fused = model.hidden_grad_norms(x, lengths, loss_fn)
    reference = reference_norms(model, x, lengths, loss_fn)
    # Steps every sample uses agree exactly; later ones may differ only through the
    # padded samples' carried states, which the fused kernel does not carry.
    torch.testing.assert_close(fused[:5], reference[:5], rtol=1e-4, atol=1e-7)


def test_gru_and_bidirectional_fall_back_to_the_stepwise_path():
    spec = InputSpec(kind="sequence", shape=(6, 2), num_outputs=2)
    for name, extra in (("gru", {}), ("lstm", {"bidirectional": True})):
        options = resolve_options(ModelSpec(name, extra), {"width": 4})
        model = build_model(name, spec, options)
        assert model.hidden_grad_norms(torch.randn(2, 6, 2), None, lambda o: o.sum()) is None
