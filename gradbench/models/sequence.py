"""Pieces every sequence model shares: the input layer, padding masks, pooling and the head.

The recurrent nets (``rnn.py``) and the Transformer (``transformer.py``) differ only in
the encoder between these pieces, so a comparison between them is a comparison of
encoders: the same embedding table (its size does not depend on ``width``, so a
budget solver that varies ``width`` sizes the encoders), the same pooling, the same head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gradbench.errors import UsageError
from gradbench.task import InputSpec

POOLINGS = ("last", "mean")


def check_sequence_spec(spec: InputSpec, model: str) -> None:
    if spec.kind not in ("tokens", "sequence"):
        raise UsageError(
            f"{model} needs a sequence or token task; this task's input is {spec.kind}"
        )
    if spec.kind == "tokens" and not spec.vocab_size:
        raise UsageError(f"{model}: a token task must give its vocab_size")
    if spec.kind == "sequence" and len(spec.shape) != 2:
        raise UsageError(
            f"{model}: a real-valued sequence task must give shape (T, F), got {spec.shape}"
        )
    if spec.target == "per_step_class" and not spec.output_steps:
        raise UsageError(f"{model}: a per-step task must give output_steps")


def check_choice(model: str, option: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise UsageError(f"{model}: {option}={value!r} is not one of {', '.join(choices)}")
    return value


def make_embedding(spec: InputSpec, embed_dim: int) -> nn.Embedding | None:
    """A token table for token tasks (the pad row stays zero); None for real-valued input."""
    if spec.kind != "tokens":
        return None
    if embed_dim < 1:
        raise UsageError(f"embed_dim must be >= 1, got {embed_dim}")
    assert spec.vocab_size is not None
    return nn.Embedding(spec.vocab_size, embed_dim, padding_idx=spec.pad_index)


def input_size(spec: InputSpec, embed_dim: int) -> int:
    return embed_dim if spec.kind == "tokens" else spec.shape[-1]


def length_mask(lengths: Tensor, steps: int) -> Tensor:
    """(B, T) bool, True at real (non-padding) positions."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


class Readout(nn.Module):
    """Pool the top layer's state sequence (or keep the last steps) and apply a linear head.

    ``"class"`` and ``"regression"`` targets pool one vector per sequence: ``"last"`` takes
    the state at each sample's true last step (for a bidirectional encoder, the forward
    half there and the backward half at step 0, i.e. both directions' final states),
    ``"mean"`` averages over real steps only. ``"per_step_class"`` targets (the copy
    task) apply the head to each of the last ``output_steps`` states; ``"per_frame"``
    targets (CTC) to every state, so the loss reaches every frame directly.
    """

    def __init__(self, spec: InputSpec, features: int, pooling: str, backward_from: int | None):
        super().__init__()
        self.target = spec.target
        self.output_steps = spec.output_steps
        self.pooling = pooling
        # Index where the backward direction's half of each state starts (bidirectional).
        self.backward_from = backward_from
        self.head = nn.Linear(features, spec.num_outputs)

    def forward(self, states: Tensor, lengths: Tensor | None = None) -> Tensor:
        if self.target == "per_step_class":
            return self.head(states[:, -self.output_steps :])
        if self.target == "per_frame":
            return self.head(states)
        return self.head(self.pool(states, lengths))

    def pool(self, states: Tensor, lengths: Tensor | None) -> Tensor:
        batch, steps, _ = states.shape
        if self.pooling == "mean":
            if lengths is None:
                return states.mean(dim=1)
            mask = length_mask(lengths, steps).unsqueeze(-1).to(states.dtype)
            return (states * mask).sum(dim=1) / lengths.clamp(min=1).unsqueeze(-1).to(states.dtype)
        if lengths is None:
            last = states[:, -1]
        else:
            index = (lengths - 1).clamp(min=0).to(states.device)
            last = states[torch.arange(batch, device=states.device), index]
        if self.backward_from is None:
            return last
        return torch.cat([last[:, : self.backward_from], states[:, 0, self.backward_from :]], -1)
