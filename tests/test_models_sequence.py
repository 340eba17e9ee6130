"""Sequence models: gradients, padding invariance, the hidden-state sequence and its gradients."""

from __future__ import annotations

import pytest
import torch

from gradbench.errors import UsageError
from gradbench.models.build import build_model, model_options, parse_model_arg, resolve_options
from gradbench.task import InputSpec

MODELS = ("rnn", "irnn", "lstm", "gru", "transformer")
TOKENS = InputSpec(kind="tokens", shape=(12,), num_outputs=3, vocab_size=20, pad_index=0)
REAL = InputSpec(kind="sequence", shape=(9, 2), num_outputs=1, target="regression")
COPY = InputSpec(
    kind="tokens",
    shape=(14,),
    num_outputs=5,
    target="per_step_class",
    vocab_size=7,
    output_steps=4,
)
# Non-default structure per model, so stacking, both directions and the other pooling
# are covered too.
VARIANTS = {
    "transformer": {"pre_ln": False, "positions": "sinusoidal", "pooling": "last", "heads": 2},
    **{
        name: {"depth": 2, "bidirectional": True, "pooling": "mean", "layer_norm": True}
        for name in ("rnn", "irnn", "lstm", "gru")
    },
}


def make(name: str, spec: InputSpec, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model(name, spec, {**model_options(name), "width": 8, **options})


def inputs(spec: InputSpec, batch: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    if spec.kind == "tokens":
        return torch.randint(1, spec.vocab_size, (batch, spec.shape[0]), generator=generator)
    return torch.randn(batch, *spec.shape, generator=generator)


def padded_tokens(
    lengths: list[int], spec: InputSpec = TOKENS
) -> tuple[torch.Tensor, torch.Tensor]:
    x = inputs(spec, len(lengths), seed=1)
    for row, length in enumerate(lengths):
        x[row, length:] = spec.pad_index
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("variant", [False, True], ids=["default", "variant"])
@pytest.mark.parametrize("name", MODELS)
def test_one_step_gives_finite_gradients_for_every_parameter(name, variant):
    options = VARIANTS[name] if variant else {}
    for spec in (TOKENS, REAL, COPY):
        model = make(name, spec, **options)
        x = inputs(spec, 4)
        lengths = torch.tensor([12, 3, 7, 1]) if spec is TOKENS else None
        out = model(x, lengths)
        expected = (
            (4, spec.output_steps, spec.num_outputs) if spec is COPY else (4, spec.num_outputs)
        )
        assert out.shape == expected
        out.square().mean().backward()
        for pname, param in model.named_parameters():
            assert param.grad is not None, f"{name} {spec.kind}: {pname} got no gradient"
            assert torch.isfinite(param.grad).all(), f"{name}: {pname} has a non-finite gradient"
        torch.optim.SGD(model.parameters(), lr=0.1).step()
        assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("variant", [False, True], ids=["default", "variant"])
@pytest.mark.parametrize("name", MODELS)
def test_padded_batch_gives_the_logits_of_each_sample_alone(name, variant):
    options = VARIANTS[name] if variant else {}
    model = make(name, TOKENS, **options).eval()
    lengths = [12, 5, 1, 9]
    x, lengths_t = padded_tokens(lengths)
    with torch.no_grad():
        batched = model(x, lengths_t)
        for row, length in enumerate(lengths):
            alone = model(x[row : row + 1, :length], torch.tensor([length]))
            torch.testing.assert_close(batched[row : row + 1], alone, atol=1e-5, rtol=1e-5)
            # Changing what sits in the padding changes nothing.
        noisy = x.clone()
        noisy[1, 5:] = 3
        torch.testing.assert_close(model(noisy, lengths_t), batched, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", [False, True], ids=["default", "variant"])
@pytest.mark.parametrize("name", MODELS)
def test_hidden_sequence_matches_forward_and_has_one_state_per_step(name, variant):
    options = VARIANTS[name] if variant else {}
    for spec, lengths in ((TOKENS, torch.tensor([12, 4, 7])), (REAL, None), (COPY, None)):
        model = make(name, spec, **options)
        x = inputs(spec, 3)
        if lengths is not None:
            x, lengths = padded_tokens(lengths.tolist(), spec)
        output, hs = model.hidden_sequence(x, lengths)
        torch.testing.assert_close(output, model(x, lengths), atol=1e-5, rtol=1e-5)
        width = model.d_model if name == "transformer" else 8
        assert len(hs) == spec.shape[0]
        assert all(h.shape == (3, width) for h in hs)
        grads = torch.autograd.grad(output.square().sum(), hs)
        assert all(torch.isfinite(g).all() for g in grads)


def test_hidden_sequence_gives_total_derivatives_through_the_recurrence():
    # Last-state pooling reads only h_{T-1}; any gradient at h_{T-2} has come through
    # the recurrence, and must equal the chain rule through one tanh step.
    model = make("rnn", REAL)
    x = inputs(REAL, 3)
    output, hs = model.hidden_sequence(x)
    grads = torch.autograd.grad(output.square().sum(), hs)
    layer = model.layers[0]
    last = hs[-1].detach()
    expected = ((1 - last**2) * grads[-1]) @ layer.weight_hh_l0.detach()
    torch.testing.assert_close(grads[-2], expected, atol=1e-6, rtol=1e-5)
    assert grads[0].abs().sum() > 0


def test_stepwise_path_shares_the_fused_parameters_after_generic_init():
    for name in ("rnn", "lstm", "gru"):
        spec = parse_model_arg(f"{name}:init=orthogonal")
        options = resolve_options(spec, {"width": 8})
        torch.manual_seed(0)
        model = build_model(name, REAL, options)
        fused = [n for n, _ in model.named_parameters() if n.startswith("layers.")]
        assert fused == [
            "layers.0.weight_ih_l0",
            "layers.0.weight_hh_l0",
            "layers.0.bias_ih_l0",
            "layers.0.bias_hh_l0",
        ]
        x = inputs(REAL, 2)
        torch.testing.assert_close(model.hidden_sequence(x)[0], model(x), atol=1e-5, rtol=1e-5)


def test_irnn_identity_init_survives_default_init_and_lstm_has_forget_bias():
    irnn = build_model("irnn", REAL, {**model_options("irnn"), "width": 6})
    layer = irnn.layers[0]
    assert torch.equal(layer.weight_hh_l0.detach(), torch.eye(6))
    assert layer.nonlinearity == "relu"
    assert (
        float(layer.bias_ih_l0.detach().abs().sum() + layer.bias_hh_l0.detach().abs().sum()) == 0.0
    )
    lstm = build_model("lstm", REAL, {**model_options("lstm"), "width": 6})
    forget = lstm.layers[0].bias_ih_l0.detach().chunk(4)[1]
    assert torch.equal(forget, torch.ones(6))
    scaled = build_model("rnn", REAL, {**model_options("rnn"), "recurrent_init": "identity:0.5"})
    assert torch.equal(scaled.layers[0].weight_hh_l0.detach(), 0.5 * torch.eye(128))


@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_never_falls_as_width_grows(name):
    counts = []
    for width in range(1, 26):
        model = build_model(name, TOKENS, {**model_options(name), "width": width})
        counts.append(sum(p.numel() for p in model.parameters()))
    # Strictly rising at every step, so a width solver can land near any target.
    assert all(b > a for a, b in zip(counts, counts[1:], strict=False))


def test_transformer_rounds_width_up_to_a_multiple_of_heads():
    model = build_model("transformer", TOKENS, {**model_options("transformer"), "width": 10})
    assert model.d_model == 12


def test_bad_options_are_usage_errors():
    with pytest.raises(UsageError, match="activation"):
        build_model("rnn", REAL, {**model_options("rnn"), "activation": "sigmoid"})
    with pytest.raises(UsageError, match="pooling"):
        build_model("gru", REAL, {**model_options("gru"), "pooling": "max"})
    with pytest.raises(UsageError, match="image"):
        build_model(
            "lstm", InputSpec(kind="image", shape=(1, 4, 4), num_outputs=2), model_options("lstm")
        )
    with pytest.raises(UsageError, match="recurrent_init"):
        build_model("rnn", REAL, {**model_options("rnn"), "recurrent_init": "eye"})


def test_cli_style_options_reach_the_model():
    spec = parse_model_arg("lstm-2:bidirectional=true,pooling=mean,width=6")
    model = build_model(spec.name, REAL, resolve_options(spec, {}))
    assert len(model.layers) == 2 and model.layers[0].bidirectional
    assert model.readout.pooling == "mean"


def test_tanh_rnn_gradient_decays_much_faster_than_lstm_on_the_adding_problem():
    """At initialisation on adding-100, |dL/dh_t| with distance from the loss.

    Measured (seed 0, width 64, batch 32): the tanh RNN's norm falls by 11 orders between
    the last step and the middle (~3e-11), the LSTM's (forget bias 1) by ~5e-5, the Transformer's
    not at all.
    """
    from gradbench_tasks.synthetic import AddingProblem

    task = AddingProblem(length=100, train_size=64, test_size=64, data_seed=0)
    batch = task.fake_batch(32)
    ratios = {}
    for name in ("rnn", "lstm", "transformer"):
        torch.manual_seed(0)
        model = build_model(name, task.input_spec(), {**model_options(name), "width": 64})
        output, hs = model.hidden_sequence(batch.x)
        grads = torch.autograd.grad(task.loss(output, batch), hs)
        norms = torch.stack([g.norm() for g in grads]).double()
        ratios[name] = float(norms[50] / norms[-1])
    assert ratios["rnn"] < 1e-9
    assert ratios["lstm"] > 1e4 * ratios["rnn"]
    assert 0.1 < ratios["transformer"] < 10
