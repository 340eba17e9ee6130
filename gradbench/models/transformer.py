"""Transformer encoder (Vaswani et al. 2017) for sequence tasks: attention instead of recurrence.

Every position reaches every other in one step, so no gradient has to travel through T
recurrent steps; what is left of the depth problem is across blocks, where pre-LN
(Xiong et al. 2020) keeps an identity path and post-LN (the original) does not.
``width`` is d_model, rounded up to a multiple of ``heads``; the feed-forward size is
``ffn_mult * width`` unrounded, so the parameter count rises at every width step (not
only every ``heads`` steps) and a budget solver can land close to any target. Token
tasks share the
recurrent nets' ``embed_dim`` table and project it to d_model, so at a matched budget
the encoders, not the embedding tables, are what gets sized.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradbench.errors import UsageError
from gradbench.mitigations import make_activation
from gradbench.models.frontend import make_frontend, subsampled_steps
from gradbench.models.sequence import (
    POOLINGS,
    Readout,
    check_choice,
    check_sequence_spec,
    input_size,
    length_mask,
    make_embedding,
)
from gradbench.registry import MODELS
from gradbench.task import InputSpec

POSITIONS = ("learned", "sinusoidal")


def sinusoidal_positions(steps: int, dim: int) -> Tensor:
    position = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(steps, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)[:, : dim // 2]
    return table


def transformer_blocks(
    block: type[nn.TransformerEncoderLayer] | type[nn.TransformerDecoderLayer],
    depth: int,
    d_model: int,
    heads: int,
    feedforward: int,
    dropout: float,
    activation: str,
    pre_ln: bool,
) -> nn.ModuleList:
    """``depth`` encoder or decoder blocks, batch first, pre-LN or post-LN. Separate
    constructions, not nn.TransformerEncoder's deep copies, so the blocks do not all
    start from the same weights (nor share one PReLU slope)."""
    return nn.ModuleList(
        block(
            d_model,
            heads,
            feedforward,
            dropout,
            F.gelu if activation == "gelu" else make_activation(activation),
            batch_first=True,
            norm_first=pre_ln,
        )
        for _ in range(depth)
    )


class TransformerNet(nn.Module):
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
        pooling: str,
        embed_dim: int,
        activation: str,
        dropout: float,
        frontend: str = "none",
    ):
        super().__init__()
        check_sequence_spec(spec, "transformer")
        check_choice("transformer", "positions", positions, POSITIONS)
        check_choice("transformer", "pooling", pooling, POOLINGS)
        if width < 1 or depth < 1 or heads < 1 or ffn_mult < 1:
            raise UsageError("transformer: width, depth, heads and ffn_mult must be >= 1")
        # Rounded up so the parameter count never falls as width grows (the budget
        # solver bisects on width); the feed-forward size below is not rounded.
        d_model = heads * math.ceil(width / heads)
        self.d_model = d_model
        self.embed = make_embedding(spec, embed_dim)
        # Optional strided convolutions over time before the projection (off: None).
        self.frontend = make_frontend(frontend, input_size(spec, embed_dim), "transformer")
        self.project = nn.Linear(input_size(spec, embed_dim), d_model)
        max_steps = subsampled_steps(spec.shape[0], frontend)
        if positions == "learned":
            self.position = nn.Parameter(torch.randn(max_steps, d_model) * 0.02)
        else:
            self.register_buffer("position", sinusoidal_positions(max_steps, d_model))
        self.blocks = transformer_blocks(
            nn.TransformerEncoderLayer,
            depth,
            d_model,
            heads,
            ffn_mult * width,
            dropout,
            activation,
            pre_ln,
        )
        # Pre-LN leaves the residual stream unnormalised; the usual final LayerNorm.
        self.final_norm = nn.LayerNorm(d_model) if pre_ln else nn.Identity()
        self.readout = Readout(spec, d_model, pooling, None)

    def _stream(self, x: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The residual stream entering the first block (projected inputs plus positions),
        and the lengths after the front end."""
        inputs = self.embed(x) if self.embed is not None else x
        if self.frontend is not None:
            inputs, lengths = self.frontend(inputs, lengths)
        return self.project(inputs) + self.position[: inputs.shape[1]], lengths

    def _encode(self, stream: Tensor, lengths: Tensor | None) -> Tensor:
        padding = None
        if lengths is not None:
            padding = ~length_mask(lengths.to(stream.device), stream.shape[1])
        for block in self.blocks:
            stream = block(stream, src_key_padding_mask=padding)
        return self.readout(self.final_norm(stream), lengths)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        return self._encode(*self._stream(x, lengths))

    def hidden_sequence(
        self, x: Tensor, lengths: Tensor | None = None
    ) -> tuple[Tensor, list[Tensor]]:
        """``(output, [h_0, ..., h_{T-1}])``: the residual stream per position, (B, d_model).

        Taken at the input of the first block (embeddings + positions), split into T
        tensors that are stacked back to feed the blocks, so dL/dh_t is how much the
        loss depends on position t's input. No recurrence: distance from the loss
        costs no extra steps, and the per-timestep norms should not decay with it.
        """
        stream, lengths = self._stream(x, lengths)
        hs = list(stream.unbind(1))
        return self._encode(torch.stack(hs, dim=1), lengths), hs


@MODELS.register(
    "transformer",
    suffix_param="depth",
    # any-width: d_model is rounded up to a multiple of heads inside, and the feed-forward
    # size follows the raw width, so the parameter count grows at every width step.
    tags=("transformer", "sequence", "any-width"),
    description="Transformer encoder, d_model=width, pre-LN by default, 2 blocks: transformer-4",
)
def transformer(
    spec: InputSpec,
    *,
    # 64: on SST-2 (embed_dim 64) that is ~108k parameters, about the LSTM-128's 99k.
    width: int = 64,
    depth: int = 2,
    heads: int = 4,
    ffn_mult: int = 4,
    positions: str = "learned",
    pre_ln: bool = True,
    pooling: str = "mean",
    embed_dim: int = 64,
    activation: str = "gelu",
    dropout: float = 0.0,
    frontend: str = "none",
) -> nn.Module:
    return TransformerNet(
        spec,
        width=width,
        depth=depth,
        heads=heads,
        ffn_mult=ffn_mult,
        positions=positions,
        pre_ln=pre_ln,
        pooling=pooling,
        embed_dim=embed_dim,
        activation=activation,
        dropout=dropout,
        frontend=frontend,
    )
