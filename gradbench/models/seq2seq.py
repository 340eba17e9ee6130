"""Encoder-decoders for translation: recurrent (RNN/GRU/LSTM, attention or not), Transformer.

They are what ``rnn``, ``irnn``, ``lstm``, ``gru`` and ``transformer`` build on a task
whose input kind is ``"seq2seq"`` (``MODELS.register_variant``), so a row means the same
cell on every task. A batch's ``x`` is (B, T, 2): the source id and the teacher-forced
decoder input id (BOS + target) at each position; ``lengths`` the source lengths; the
output is (B, T, target vocabulary) logits. Both families share the outside: source and target
embedding tables of ``embed_dim`` (their size does not depend on ``width``, so a budget
solver that varies ``width`` sizes the networks between them) and a generator
``width -> embed_dim`` whose logits use the target embedding table (``tie_embeddings``,
Press & Wolf 2017) or a table of their own.

Recurrent: a stack of single-layer fused modules per side (``nn.RNN``/``nn.GRU``/
``nn.LSTM``, so the fast kernels train and the FLOP counter's recurrent formula applies).
The decoder starts from the encoder's final hidden states, layer by layer (Sutskever
et al. 2014; Cho et al. 2014), through ``tanh(Linear)`` of both directions for a
bidirectional encoder; an LSTM decoder's cell state starts at zero. ``attention``:

- ``none``: the final state is the only path from the source: every source word's
  gradient travels back through all the encoder steps after it;
- ``additive`` (Bahdanau et al. 2015): before each target step, the previous top
  decoder state scores every encoder state with ``v^T tanh(W s + U h)``; the context
  is fed with the target word into the decoder (step by step, so it trains slower);
- ``dot`` (Luong et al. 2015, global attention without input feeding): the decoder
  runs fused, then each of its states scores the encoder states by a dot product and
  ``tanh(W [context; state])`` is what the generator reads.

With attention every source state has a direct path to the loss; ``hidden_sequence``
exposes the top encoder layer's states over the source positions so the timestep
probe measures dL/dh_t there (the same contract as ``rnn.py``).

Transformer: ``nn.TransformerEncoderLayer``/``nn.TransformerDecoderLayer`` blocks
(separate constructions, so no two start from the same weights), pre-LN (Xiong et al.
2020) or post-LN (Vaswani et al. 2017), sinusoidal or learned positions.

Decoding (greedy and beam search, ``gradbench.decoding``) uses three methods each
model has: ``encode_source``, ``start`` and ``step``; states are dicts of tensors with
the batch first, so a search can reorder them with one index.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from gradbench.errors import UsageError
from gradbench.models.rnn import RNN_ACTIVATIONS, RecurrentNet, recurrent_layers
from gradbench.models.sequence import check_choice, length_mask
from gradbench.models.transformer import POSITIONS, sinusoidal_positions, transformer_blocks
from gradbench.registry import MODELS
from gradbench.task import InputSpec

ATTENTIONS = ("none", "additive", "dot")
Tree = dict[str, Any]


def check_seq2seq_spec(spec: InputSpec, model: str) -> None:
    if spec.kind != "seq2seq" or not spec.vocab_size or not spec.num_outputs:
        raise UsageError(f"{model}: an encoder-decoder needs a seq2seq task with vocabularies")


def split_batch(
    x: Tensor, lengths: Tensor | None, pad: int
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(source, decoder input, source lengths, decoder-input lengths) of a seq2seq batch."""
    if x.dim() != 3 or x.shape[2] != 2:
        raise ValueError(f"a seq2seq batch has x of shape (B, T, 2), got {tuple(x.shape)}")
    src, tgt_in = x[..., 0], x[..., 1]
    if lengths is None:
        lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long, device=x.device)
    # BOS and target ids are never padding: the decoder input's length is where it starts.
    return src, tgt_in, lengths, (tgt_in != pad).sum(dim=1)


def make_embedding(vocab: int, dim: int, pad: int | None) -> nn.Embedding:
    """A token table with entries of about unit norm (N(0, 1/dim)), as Vaswani et al. scale
    theirs: the logits read the same table when tied, and N(0, 1) entries would start
    them with a standard deviation of ~sqrt(dim)."""
    table = nn.Embedding(vocab, dim, padding_idx=pad)
    with torch.no_grad():
        nn.init.normal_(table.weight, 0.0, dim**-0.5)
        if pad is not None:
            table.weight[pad].zero_()
    return table


class OutputLayer(nn.Module):
    """``features -> embed_dim -> vocabulary`` logits, the last matrix tied to the target table."""

    def __init__(self, features: int, embedding: nn.Embedding, tie: bool):
        super().__init__()
        self.generator = nn.Linear(features, embedding.embedding_dim)
        self.tied = embedding if tie else None
        vocab = embedding.num_embeddings
        self.table = None if tie else nn.Linear(embedding.embedding_dim, vocab, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, features: Tensor) -> Tensor:
        hidden = self.generator(features)
        weight = self.tied.weight if self.tied is not None else self.table.weight
        return F.linear(hidden, weight, self.bias)


# ------------------------------------------------------------------------- recurrent


class RecurrentStack(nn.Module):
    """``depth`` single-layer fused modules of one cell type, with optional LayerNorm between.

    Holds what ``RecurrentNet``'s step-by-step recomputation and recurrent
    initialisation read (``cell``, ``activation``, ``hidden_size``, ``layers``), so
    those methods are borrowed rather than copied.
    """

    _stepwise = RecurrentNet._stepwise
    _init_recurrence = RecurrentNet._init_recurrence

    def __init__(
        self,
        cell: str,
        input_size: int,
        width: int,
        depth: int,
        *,
        activation: str,
        bidirectional: bool,
        layer_norm: bool,
        first_input_extra: int = 0,
    ):
        super().__init__()
        self.cell = cell
        self.activation = activation
        self.hidden_size = width
        self.directions = 2 if bidirectional else 1
        self.layers, self.norms = recurrent_layers(
            cell,
            input_size + first_input_extra,
            width,
            depth,
            activation,
            bidirectional,
            layer_norm,
        )

    @property
    def features(self) -> int:
        return self.hidden_size * self.directions

    def initial(self, h: Tensor) -> Any:
        """A fused module's initial state from (B, width): the LSTM's cell state at zero."""
        h = h.unsqueeze(0).contiguous()
        return (h, torch.zeros_like(h)) if self.cell == "lstm" else h

    @staticmethod
    def final_h(final: Any) -> Tensor:
        """(directions, B, width) final hidden state of a fused module's output state."""
        return final[0] if isinstance(final, tuple) else final


class RecurrentSeq2Seq(nn.Module):
    def __init__(
        self,
        spec: InputSpec,
        cell: str,
        *,
        width: int,
        depth: int,
        activation: str,
        attention: str,
        bidirectional: bool,
        embed_dim: int,
        layer_norm: bool,
        recurrent_init: str,
        forget_bias: float,
        tie_embeddings: bool,
    ):
        super().__init__()
        check_seq2seq_spec(spec, cell)
        check_choice(cell, "attention", attention, ATTENTIONS)
        if cell == "rnn":
            check_choice(cell, "activation", activation, RNN_ACTIVATIONS)
        if width < 1 or depth < 1 or embed_dim < 1:
            raise UsageError(f"{cell}: width, depth and embed_dim must be >= 1")
        self.cell = cell
        self.attention = attention
        self.width = width
        self.pad = spec.pad_index or 0
        # Registration order is depth order for the per-layer probes: source side first.
        self.src_embed = make_embedding(spec.vocab_size, embed_dim, spec.pad_index)
        self.encoder = RecurrentStack(
            cell,
            embed_dim,
            width,
            depth,
            activation=activation,
            bidirectional=bidirectional,
            layer_norm=layer_norm,
        )
        memory = self.encoder.features
        # A bidirectional encoder's two final states become the decoder's initial state.
        self.bridge = nn.Linear(memory, width) if bidirectional else None
        self.tgt_embed = make_embedding(spec.num_outputs, embed_dim, spec.pad_index)
        self.decoder = RecurrentStack(
            cell,
            embed_dim,
            width,
            depth,
            activation=activation,
            bidirectional=False,
            layer_norm=layer_norm,
            first_input_extra=memory if attention == "additive" else 0,
        )
        if attention == "additive":
            self.att_query = nn.Linear(width, width, bias=False)
            self.att_key = nn.Linear(memory, width)
            self.att_score = nn.Linear(width, 1, bias=False)
        elif attention == "dot":
            # Keys in the decoder's space when the encoder's states are wider (bidirectional).
            self.att_key = nn.Linear(memory, width, bias=False) if memory != width else None
        features = width if attention == "none" else width + memory
        if attention == "dot":
            self.combine = nn.Linear(width + memory, width)  # Luong's attentional state
            features = width
        self.output = OutputLayer(features, self.tgt_embed, tie_embeddings)
        self.encoder._init_recurrence(recurrent_init, forget_bias)
        self.decoder._init_recurrence(recurrent_init, forget_bias)

    # -- encoder -------------------------------------------------------------------

    def _run_fused(self, layer: nn.RNNBase, x: Tensor, lengths: Tensor, hx: Any = None):
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = layer(packed, hx)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0], final

    def _decoder_start(self, finals: list[Tensor]) -> list[Tensor]:
        """Each encoder layer's final state, (directions, B, width), to a decoder layer's h0."""
        if self.bridge is None:
            return [f[0] for f in finals]
        return [torch.tanh(self.bridge(torch.cat([f[0], f[1]], dim=-1))) for f in finals]

    def encode_source(self, src: Tensor, src_len: Tensor) -> Tree:
        """Encoder states (B, S, memory), the source mask and the decoder's initial states."""
        states = self.src_embed(src)
        finals = []
        for layer, norm in zip(self.encoder.layers, self.encoder.norms, strict=True):
            out, final = self._run_fused(layer, states, src_len)
            states = norm(out)
            finals.append(RecurrentStack.final_h(final))
        return self._memory(states, src_len, self._decoder_start(finals))

    def _memory(self, states: Tensor, src_len: Tensor, h0: list[Tensor]) -> Tree:
        memory: Tree = {"states": states, "mask": length_mask(src_len, states.shape[1])}
        if self.attention == "additive":
            memory["keys"] = self.att_key(states)  # U h_s, once per sentence
        elif self.attention == "dot":
            memory["keys"] = states if self.att_key is None else self.att_key(states)
        memory["h0"] = torch.stack(h0, dim=1)  # (B, depth, width): batch first
        return memory

    def hidden_sequence(
        self, x: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``(logits, [h_0 .. h_{S-1}])``: the top encoder layer's states over source positions.

        The top encoder layer runs step by step with its fused module's own weights
        (``RecurrentNet._stepwise``), so each h_t is a graph node through which every
        later state, the decoder's initial state and (with attention) the context flow:
        ``autograd.grad(loss, hs)`` is the total dL/dh_t. For a bidirectional encoder,
        the forward direction's states.
        """
        src, tgt_in, src_len, tgt_len = split_batch(x, lengths, self.pad)
        states = self.src_embed(src)
        layers = list(zip(self.encoder.layers, self.encoder.norms, strict=True))
        finals = []
        for layer, norm in layers[:-1]:
            out, final = self._run_fused(layer, states, src_len)
            states = norm(out)
            finals.append(RecurrentStack.final_h(final))
        top, top_norm = layers[-1]
        mask = length_mask(src_len.to(states.device), states.shape[1])
        forward_seq, hs = self.encoder._stepwise(top, states, mask, reverse=False)
        outputs, last = [forward_seq], [hs[-1]]  # padded steps carry the state: true last
        if self.encoder.directions == 2:
            backward_seq, _ = self.encoder._stepwise(top, states, mask, reverse=True)
            outputs.append(backward_seq)
            last.append(backward_seq[:, 0])  # the backward direction ends at step 0
        finals.append(torch.stack(last))
        top_states = top_norm(torch.cat(outputs, -1))
        memory = self._memory(top_states, src_len, self._decoder_start(finals))
        return self._teacher_forced(memory, tgt_in, tgt_len), hs

    # -- decoder -------------------------------------------------------------------

    def _attend(self, memory: Tree, queries: Tensor) -> Tensor:
        """Context vectors (B, T, memory) for decoder queries (B, T, width)."""
        if self.attention == "additive":
            energy = torch.tanh(memory["keys"][:, None] + self.att_query(queries)[:, :, None])
            scores = self.att_score(energy).squeeze(-1)  # (B, T, S)
        else:
            scores = queries @ memory["keys"].transpose(1, 2)
        scores = scores.masked_fill(~memory["mask"][:, None], float("-inf"))
        return torch.softmax(scores, dim=-1) @ memory["states"]

    def _hidden(self, memory: Tree) -> list[Any]:
        return [self.decoder.initial(h) for h in memory["h0"].unbind(1)]

    def _teacher_forced(self, memory: Tree, tgt_in: Tensor, tgt_len: Tensor) -> Tensor:
        inputs = self.tgt_embed(tgt_in)
        if self.attention == "additive":
            # The context of step t depends on the state of step t-1: one step at a time.
            state = {"hidden": self._hidden(memory)}
            features = []
            for t in range(inputs.shape[1]):
                feature, state = self._additive_step(memory, state, inputs[:, t])
                features.append(feature)
            return self.output(torch.stack(features, dim=1))
        states = inputs
        for layer, norm, hx in zip(
            self.decoder.layers, self.decoder.norms, self._hidden(memory), strict=True
        ):
            states = norm(self._run_fused(layer, states, tgt_len, hx)[0])
        return self.output(self._readout(memory, states))

    def _readout(self, memory: Tree, states: Tensor) -> Tensor:
        if self.attention == "none":
            return states
        context = self._attend(memory, states)
        return torch.tanh(self.combine(torch.cat([context, states], dim=-1)))

    def _additive_step(self, memory: Tree, state: Tree, embedded: Tensor) -> tuple[Tensor, Tree]:
        hidden = state["hidden"]
        top = RecurrentStack.final_h(hidden[-1])[0]
        context = self._attend(memory, top[:, None])[:, 0]
        x = torch.cat([embedded, context], dim=-1)[:, None]
        new_hidden = []
        for layer, norm, hx in zip(self.decoder.layers, self.decoder.norms, hidden, strict=True):
            out, hx = layer(x, hx)
            x = norm(out)
            new_hidden.append(hx)
        return torch.cat([x[:, 0], context], dim=-1), {"hidden": new_hidden}

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        src, tgt_in, src_len, tgt_len = split_batch(x, lengths, self.pad)
        return self._teacher_forced(self.encode_source(src, src_len), tgt_in, tgt_len)

    # -- incremental decoding ------------------------------------------------------

    def start(self, memory: Tree) -> Tree:
        state: Tree = {"h": memory["h0"]}
        if self.cell == "lstm":
            state["c"] = torch.zeros_like(memory["h0"])
        return state

    def _layer_states(self, state: Tree) -> list[Any]:
        """Batch-first (N, depth, width) state -> each fused layer's (1, N, width) hx."""
        hs = [h[None].contiguous() for h in state["h"].unbind(1)]
        if self.cell != "lstm":
            return hs
        cs = [c[None].contiguous() for c in state["c"].unbind(1)]
        return list(zip(hs, cs, strict=True))

    def step(self, memory: Tree, state: Tree, tokens: Tensor) -> tuple[Tensor, Tree]:
        """Log-probabilities (N, V) of the next token after ``tokens`` (N,), and the new state."""
        hidden = self._layer_states(state)
        embedded = self.tgt_embed(tokens)
        if self.attention == "additive":
            feature, new = self._additive_step(memory, {"hidden": hidden}, embedded)
            hidden = new["hidden"]
        else:
            x = embedded[:, None]
            new_hidden = []
            for layer, norm, hx in zip(
                self.decoder.layers, self.decoder.norms, hidden, strict=True
            ):
                out, hx = layer(x, hx)
                x = norm(out)
                new_hidden.append(hx)
            hidden = new_hidden
            feature = self._readout(memory, x)[:, 0]
        out: Tree = {"h": torch.stack([RecurrentStack.final_h(hx)[0] for hx in hidden], dim=1)}
        if self.cell == "lstm":
            out["c"] = torch.stack([hx[1][0] for hx in hidden], dim=1)
        return torch.log_softmax(self.output(feature).float(), dim=-1), out


# ----------------------------------------------------------------------- transformer


class TransformerSeq2Seq(nn.Module):
    def __init__(
        self,
        spec: InputSpec,
        *,
        width: int,
        depth: int,
        heads: int,
        ffn_mult: int,
        positions: str,
        pre_ln: bool,
        embed_dim: int,
        activation: str,
        dropout: float,
        tie_embeddings: bool,
    ):
        super().__init__()
        check_seq2seq_spec(spec, "transformer")
        check_choice("transformer", "positions", positions, POSITIONS)
        if width < 1 or depth < 1 or heads < 1 or ffn_mult < 1 or embed_dim < 1:
            raise UsageError("transformer: width, depth, heads, ffn_mult, embed_dim must be >= 1")
        # As in transformer.py: d_model rounded up to a multiple of heads, the feed-forward
        # size not, so the parameter count rises at every width step.
        d_model = heads * math.ceil(width / heads)
        self.d_model = d_model
        self.pad = spec.pad_index or 0
        self.max_positions = spec.shape[0]
        self.src_embed = make_embedding(spec.vocab_size, embed_dim, spec.pad_index)
        self.src_project = nn.Linear(embed_dim, d_model)
        if positions == "learned":
            self.position = nn.Parameter(torch.randn(self.max_positions, d_model) * 0.02)
        else:
            self.position = None
        self.encoder_blocks = transformer_blocks(
            nn.TransformerEncoderLayer,
            depth,
            d_model,
            heads,
            ffn_mult * width,
            dropout,
            activation,
            pre_ln,
        )
        self.encoder_norm = nn.LayerNorm(d_model) if pre_ln else nn.Identity()
        self.tgt_embed = make_embedding(spec.num_outputs, embed_dim, spec.pad_index)
        self.tgt_project = nn.Linear(embed_dim, d_model)
        self.decoder_blocks = transformer_blocks(
            nn.TransformerDecoderLayer,
            depth,
            d_model,
            heads,
            ffn_mult * width,
            dropout,
            activation,
            pre_ln,
        )
        self.decoder_norm = nn.LayerNorm(d_model) if pre_ln else nn.Identity()
        self.output = OutputLayer(d_model, self.tgt_embed, tie_embeddings)

    def _positions(self, steps: int, like: Tensor) -> Tensor:
        if self.position is not None:
            if steps > self.max_positions:
                raise ValueError(f"{steps} positions; the learned table has {self.max_positions}")
            return self.position[:steps]
        return sinusoidal_positions(steps, self.d_model).to(device=like.device, dtype=like.dtype)

    def _source_stream(self, src: Tensor) -> Tensor:
        stream = self.src_project(self.src_embed(src))
        return stream + self._positions(src.shape[1], stream)

    def _encode(self, stream: Tensor, src_len: Tensor) -> Tree:
        mask = length_mask(src_len.to(stream.device), stream.shape[1])
        for block in self.encoder_blocks:
            stream = block(stream, src_key_padding_mask=~mask)
        return {"states": self.encoder_norm(stream), "mask": mask}

    def encode_source(self, src: Tensor, src_len: Tensor) -> Tree:
        return self._encode(self._source_stream(src), src_len)

    def _decode(self, memory: Tree, tgt_in: Tensor, tgt_len: Tensor | None) -> Tensor:
        stream = self.tgt_project(self.tgt_embed(tgt_in))
        steps = tgt_in.shape[1]
        stream = stream + self._positions(steps, stream)
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=stream.device), 1)
        padding = None if tgt_len is None else ~length_mask(tgt_len.to(stream.device), steps)
        for block in self.decoder_blocks:
            stream = block(
                stream,
                memory["states"],
                tgt_mask=causal,
                tgt_key_padding_mask=padding,
                memory_key_padding_mask=~memory["mask"],
            )
        return self.output(self.decoder_norm(stream))

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        src, tgt_in, src_len, tgt_len = split_batch(x, lengths, self.pad)
        return self._decode(self.encode_source(src, src_len), tgt_in, tgt_len)

    def hidden_sequence(
        self, x: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``(logits, [h_0 .. h_{S-1}])``: the encoder's residual stream at each source position,
        taken at the first block's input (as ``transformer.py`` does for classifiers)."""
        src, tgt_in, src_len, tgt_len = split_batch(x, lengths, self.pad)
        hs = list(self._source_stream(src).unbind(1))
        memory = self._encode(torch.stack(hs, dim=1), src_len)
        return self._decode(memory, tgt_in, tgt_len), hs

    def start(self, memory: Tree) -> Tree:
        # Per block, the inputs of every position decoded so far: what the new position's
        # self-attention reads as keys and values (a cache of inputs, not of projections,
        # so decoding runs the blocks' own modules; tested equal to teacher forcing).
        batch = memory["states"].shape[0]
        empty = memory["states"].new_zeros(batch, 0, self.d_model)
        return {f"inputs{i}": empty for i in range(len(self.decoder_blocks))} | {
            "steps": torch.zeros(batch, dtype=torch.long, device=empty.device)
        }

    def step(self, memory: Tree, state: Tree, tokens: Tensor) -> tuple[Tensor, Tree]:
        """Log-probabilities (N, V) of the next token after ``tokens`` (N,), and the new state.

        Only the newest position goes through the blocks: its self-attention reads the
        cached inputs of the earlier positions (causal attention never looks ahead, so
        their outputs do not change).
        """
        position = int(state["steps"][0])
        x = self.tgt_project(self.tgt_embed(tokens))[:, None]
        x = x + self._positions(position + 1, x)[position]
        new: Tree = {"steps": state["steps"] + 1}
        padding = ~memory["mask"]
        for i, block in enumerate(self.decoder_blocks):
            inputs = torch.cat([state[f"inputs{i}"], x], dim=1)
            new[f"inputs{i}"] = inputs
            x = _decoder_block_last(block, x, inputs, memory["states"], padding)
        logits = self.output(self.decoder_norm(x))[:, 0]
        return torch.log_softmax(logits.float(), dim=-1), new


def _decoder_block_last(
    block: nn.TransformerDecoderLayer, x: Tensor, inputs: Tensor, memory: Tensor, padding: Tensor
) -> Tensor:
    """``block``'s output at the last position ``x`` (N, 1, d), given all its inputs so far.

    The same arithmetic as ``nn.TransformerDecoderLayer.forward`` (pre- or post-LN) with
    the query restricted to the newest position.
    """

    def self_attention(query: Tensor, keys: Tensor) -> Tensor:
        return block.dropout1(block.self_attn(query, keys, keys, need_weights=False)[0])

    def cross_attention(query: Tensor) -> Tensor:
        out = block.multihead_attn(
            query, memory, memory, key_padding_mask=padding, need_weights=False
        )[0]
        return block.dropout2(out)

    if block.norm_first:
        x = x + self_attention(block.norm1(x), block.norm1(inputs))
        x = x + cross_attention(block.norm2(x))
        return x + block._ff_block(block.norm3(x))
    x = block.norm1(x + self_attention(x, inputs))
    x = block.norm2(x + cross_attention(x))
    return block.norm3(x + block._ff_block(x))


# ------------------------------------------------------------------------- factories


def _recurrent(cell: str, factory_locals: dict[str, Any], **fixed: Any) -> nn.Module:
    """``RecurrentSeq2Seq`` from a factory's ``locals()`` (its spec and options) and what
    the variant fixes (``activation``, ``forget_bias``)."""
    options = dict(factory_locals)
    return RecurrentSeq2Seq(options.pop("spec"), cell, **options, **fixed)


@MODELS.register_variant("rnn", kind="seq2seq")
def rnn_seq2seq(
    spec: InputSpec,
    *,
    width: int = 256,
    depth: int = 1,
    activation: str = "tanh",
    attention: str = "none",
    bidirectional: bool = False,
    embed_dim: int = 128,
    layer_norm: bool = False,
    recurrent_init: str = "default",
    tie_embeddings: bool = True,
) -> nn.Module:
    return _recurrent("rnn", locals(), forget_bias=0.0)


@MODELS.register_variant("irnn", kind="seq2seq")
def irnn_seq2seq(
    spec: InputSpec,
    *,
    width: int = 256,
    depth: int = 1,
    attention: str = "none",
    bidirectional: bool = False,
    embed_dim: int = 128,
    layer_norm: bool = False,
    recurrent_init: str = "identity",
    tie_embeddings: bool = True,
) -> nn.Module:
    return _recurrent("rnn", locals(), activation="relu", forget_bias=0.0)


@MODELS.register_variant("lstm", kind="seq2seq")
def lstm_seq2seq(
    spec: InputSpec,
    *,
    width: int = 256,
    depth: int = 1,
    attention: str = "none",
    bidirectional: bool = False,
    embed_dim: int = 128,
    layer_norm: bool = False,
    recurrent_init: str = "default",
    forget_bias: float = 1.0,
    tie_embeddings: bool = True,
) -> nn.Module:
    return _recurrent("lstm", locals(), activation="tanh")


@MODELS.register_variant("gru", kind="seq2seq")
def gru_seq2seq(
    spec: InputSpec,
    *,
    width: int = 256,
    depth: int = 1,
    attention: str = "none",
    bidirectional: bool = False,
    embed_dim: int = 128,
    layer_norm: bool = False,
    recurrent_init: str = "default",
    tie_embeddings: bool = True,
) -> nn.Module:
    return _recurrent("gru", locals(), activation="tanh", forget_bias=0.0)


@MODELS.register_variant("transformer", kind="seq2seq")
def transformer_seq2seq(
    spec: InputSpec,
    *,
    width: int = 128,
    depth: int = 2,
    heads: int = 4,
    ffn_mult: int = 4,
    positions: str = "sinusoidal",
    pre_ln: bool = True,
    embed_dim: int = 128,
    activation: str = "gelu",
    dropout: float = 0.0,
    tie_embeddings: bool = True,
) -> nn.Module:
    return TransformerSeq2Seq(**locals())
