"""Encoder-decoders (gradbench.models.seq2seq) and their search (gradbench.decoding)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.decoding import SpecialTokens, beam_search, decode, greedy
from gradbench.flops import flop_counter, forward, fused_rnn_kernels_off, training_step_flops
from gradbench.models.build import ModelSpec, build_model, resolve_options
from gradbench.models.rnn import RecurrentNet
from gradbench.models.seq2seq import RecurrentSeq2Seq, TransformerSeq2Seq
from gradbench.task import Batch, InputSpec

PAD, BOS, EOS = 0, 2, 3
SPEC = InputSpec(
    kind="seq2seq",
    shape=(40,),
    num_outputs=23,
    target="per_step_class",
    vocab_size=19,
    pad_index=PAD,
    output_steps=40,
)
SPECIAL = SpecialTokens(PAD, BOS, EOS)

RECURRENT = [
    ("rnn", {}),
    ("irnn", {"attention": "dot"}),
    ("gru", {}),
    ("gru", {"attention": "additive"}),
    ("gru", {"attention": "dot", "bidirectional": True}),
    ("lstm", {"attention": "additive", "depth": 2, "layer_norm": True}),
    ("lstm", {"bidirectional": True, "tie_embeddings": False}),
]
TRANSFORMERS = [
    ("transformer", {}),
    ("transformer", {"pre_ln": False, "positions": "learned", "tie_embeddings": False}),
]
ALL = RECURRENT + TRANSFORMERS


def make(name: str, options: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    resolved = resolve_options(
        ModelSpec(name, {"width": 12, "embed_dim": 8, **options}), {}, "seq2seq"
    )
    if name == "transformer":
        resolved["heads"] = 2
    return build_model(name, SPEC, resolved)


def toy_batch(lengths: list[int], target_lengths: list[int], seed: int = 0) -> Batch:
    """x (B, T, 2): source ids ending in EOS, BOS + target; y: target + EOS."""
    generator = torch.Generator().manual_seed(seed)
    width = max(max(lengths), max(target_lengths) + 1)
    batch = len(lengths)
    x = torch.full((batch, width, 2), PAD, dtype=torch.long)
    y = torch.full((batch, width), PAD, dtype=torch.long)
    for i, (s, t) in enumerate(zip(lengths, target_lengths, strict=True)):
        x[i, : s - 1, 0] = torch.randint(4, SPEC.vocab_size, (s - 1,), generator=generator)
        x[i, s - 1, 0] = EOS
        target = torch.randint(4, SPEC.num_outputs, (t,), generator=generator)
        x[i, 0, 1] = BOS
        x[i, 1 : t + 1, 1] = target
        y[i, :t] = target
        y[i, t] = EOS
    return Batch(x, y, torch.tensor(lengths))


def loss_of(output: Tensor, batch: Batch) -> Tensor:
    return F.cross_entropy(output.float().flatten(0, 1), batch.y.flatten(), ignore_index=PAD)


@pytest.mark.parametrize(("name", "options"), ALL)
def test_every_parameter_gets_a_finite_gradient(name: str, options: dict) -> None:
    model = make(name, options)
    batch = toy_batch([5, 9, 3], [6, 2, 7])
    output = model(batch.x, batch.lengths)
    assert output.shape == (3, batch.x.shape[1], SPEC.num_outputs)
    loss_of(output, batch).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
        assert param.grad.abs().sum() > 0, param_name


def test_one_name_builds_a_classifier_or_an_encoder_decoder_by_input_kind() -> None:
    tokens = InputSpec(kind="tokens", shape=(10,), num_outputs=2, vocab_size=19, pad_index=0)
    options = resolve_options(ModelSpec("gru"), {}, "tokens")
    assert isinstance(build_model("gru", tokens, options), RecurrentNet)
    assert isinstance(make("gru", {"attention": "additive"}), RecurrentSeq2Seq)
    assert isinstance(make("transformer", {}), TransformerSeq2Seq)
    with pytest.raises(Exception, match="attention"):
        resolve_options(ModelSpec("gru", {"attention": "additive"}), {}, "tokens")


@pytest.mark.parametrize(("name", "options"), ALL)
def test_padding_never_changes_a_result(name: str, options: dict) -> None:
    model = make(name, options).eval()
    batch = toy_batch([4, 11], [3, 8])
    alone = Batch(batch.x[:1, :5], batch.y[:1, :5], batch.lengths[:1])
    with torch.no_grad():
        together = model(batch.x, batch.lengths)[0, :4]
        single = model(alone.x, alone.lengths)[0, :4]
    torch.testing.assert_close(together, single, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options"), ALL)
def test_incremental_steps_match_teacher_forcing(name: str, options: dict) -> None:
    model = make(name, options).eval()
    batch = toy_batch([6, 4, 9], [5, 5, 5])
    src, tgt_in = batch.x[..., 0], batch.x[..., 1]
    with torch.no_grad():
        full = torch.log_softmax(model(batch.x, batch.lengths).float(), dim=-1)
        memory = model.encode_source(src, batch.lengths)
        state = model.start(memory)
        for t in range(6):  # BOS + 5 target tokens, the same length for every sample
            logp, state = model.step(memory, state, tgt_in[:, t])
            torch.testing.assert_close(logp, full[:, t], atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "options"), ALL)
def test_hidden_sequence_is_the_forward_pass_with_the_source_states_exposed(
    name: str, options: dict
) -> None:
    model = make(name, options).eval()
    batch = toy_batch([7, 3], [4, 6])
    with torch.no_grad():
        output = model(batch.x, batch.lengths)
    again, hs = model.hidden_sequence(batch.x, batch.lengths)
    assert len(hs) == batch.x.shape[1]
    torch.testing.assert_close(again, output, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(loss_of(again, batch), hs, allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:3])


def test_the_exposed_states_are_the_encoders_own_and_get_the_total_derivative() -> None:
    batch = toy_batch([9, 9], [5, 5])
    model = make("gru", {}).eval()
    output, hs = model.hidden_sequence(batch.x, batch.lengths)
    with torch.no_grad():
        fused = model.encoder.layers[0](model.src_embed(batch.x[..., 0]))[0]
    torch.testing.assert_close(torch.stack(hs, 1), fused, atol=1e-5, rtol=1e-5)
    # Without attention the source reaches the loss only through the final state (the
    # decoder's initial state): dL/dh_last is that state's gradient, the rest flows back
    # through the recurrence, so every earlier state has a non-zero gradient too.
    grads = torch.autograd.grad(loss_of(output, batch), hs)
    memory = model.encode_source(batch.x[..., 0], batch.lengths)
    h0 = memory["h0"].detach().requires_grad_(True)
    logits = model._teacher_forced({**memory, "h0": h0}, batch.x[..., 1], torch.tensor([6, 6]))
    (reference,) = torch.autograd.grad(loss_of(logits, batch), h0)
    torch.testing.assert_close(grads[-1], reference[:, 0], atol=1e-6, rtol=1e-4)
    assert all(float(g.norm()) > 0 for g in grads)


def test_bidirectional_exposes_the_forward_direction() -> None:
    model = make("gru", {"bidirectional": True, "attention": "dot"}).eval()
    batch = toy_batch([6, 6], [3, 3])
    _, hs = model.hidden_sequence(batch.x, batch.lengths)
    with torch.no_grad():
        fused = model.encoder.layers[0](model.src_embed(batch.x[..., 0]))[0][..., :12]
    torch.testing.assert_close(torch.stack(hs, 1), fused, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "options"),
    [("gru", {}), ("lstm", {"attention": "additive"}), ("rnn", {"bidirectional": True})],
)
def test_flops_formula_for_recurrent_modules_matches_the_op_by_op_count(
    name: str, options: dict
) -> None:
    model = make(name, options)
    batch = toy_batch([5, 8, 3], [4, 6, 2])
    by_formula = training_step_flops(copy.deepcopy(model), batch, loss_of)
    with fused_rnn_kernels_off(), flop_counter() as counter:
        loss_of(forward(copy.deepcopy(model), batch), batch).backward()
    assert by_formula == counter.get_total_flops()
    assert by_formula > 0


# ---------------------------------------------------------------------------- decoding


class Scripted(nn.Module):
    """A 'model' whose next-token distribution depends on the previous token only.

    After BOS: a 0.5, b 0.4, EOS 0.1. After a: a 0.3, b 0.3, EOS 0.4. After b: EOS 0.9.
    Greedy takes "a" (0.5) then EOS: 0.2; the best sequence is "b EOS": 0.36.
    """

    A, B = 4, 5
    TABLE = {BOS: {4: 0.5, 5: 0.4, EOS: 0.1}, 4: {4: 0.3, 5: 0.3, EOS: 0.4}, 5: {EOS: 0.9, 4: 0.1}}

    def encode_source(self, src: Tensor, src_len: Tensor) -> dict:
        return {"dummy": src.new_zeros(src.shape[0])}

    def start(self, memory: dict) -> dict:
        return {"dummy": memory["dummy"]}

    def step(self, memory: dict, state: dict, tokens: Tensor) -> tuple[Tensor, dict]:
        logp = torch.full((len(tokens), 6), float("-inf"))
        for row, token in enumerate(tokens.tolist()):
            for nxt, p in self.TABLE.get(token, {EOS: 1.0}).items():
                logp[row, nxt] = torch.log(torch.tensor(p))
        return logp, state


def test_beam_search_finds_what_greedy_misses() -> None:
    src, src_len, limit = (
        torch.zeros(2, 3, dtype=torch.long),
        torch.tensor([3, 3]),
        torch.tensor([5, 5]),
    )
    assert greedy(Scripted(), src, src_len, limit, SPECIAL) == [[4], [4]]
    found = beam_search(Scripted(), src, src_len, limit, SPECIAL, beam=2, length_penalty=0.0)
    assert found == [[5], [5]]
    assert decode(Scripted(), src, src_len, limit, SPECIAL, 1, 0.0) == [[4], [4]]


def test_searches_stop_at_the_maximum_length() -> None:
    model = make("gru", {}).eval()
    batch = toy_batch([5, 5, 5], [2, 2, 2])
    src = batch.x[:, :5, 0]
    limits = torch.tensor([1, 3, 6])
    # An untrained decoder rarely says EOS: outputs run to their limits (never beyond).
    for beam in (1, 3):
        found = decode(model, src, batch.lengths, limits, SPECIAL, beam, 1.0)
        assert all(len(f) <= int(n) for f, n in zip(found, limits, strict=True))
        assert all(t not in (PAD, BOS, EOS) for f in found for t in f)


def test_beam_one_equals_greedy_on_a_real_model() -> None:
    model = make("transformer", {}).eval()
    batch = toy_batch([6, 4], [2, 2])
    src = batch.x[:, :6, 0]
    limits = torch.tensor([7, 7])
    assert beam_search(model, src, batch.lengths, limits, SPECIAL, 1, 0.0) == greedy(
        model, src, batch.lengths, limits, SPECIAL
    )


def test_every_transformer_block_learns_its_own_prelu_slope() -> None:
    model = make("transformer", {"activation": "prelu"})
    slopes = [m.weight for m in model.modules() if isinstance(m, nn.PReLU)]
    blocks = sum(1 for m in model.modules() if isinstance(m, nn.TransformerEncoderLayer))
    blocks += sum(1 for m in model.modules() if isinstance(m, nn.TransformerDecoderLayer))
    assert blocks >= 2 and len(slopes) == blocks
    assert len({id(s) for s in slopes}) == len(slopes)  # not one slope shared by all blocks
