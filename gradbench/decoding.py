"""Greedy and beam search for the encoder-decoders of ``gradbench.models.seq2seq``.

A model offers ``encode_source(src, src_len) -> memory``, ``start(memory) -> state`` and
``step(memory, state, tokens) -> (log-probabilities (N, V), state)``; memory and state
are dicts of tensors with the batch first, so the search repeats and reorders them
with one index. Padding and BOS are never produced. A sentence's output stops at EOS
or at ``max_lengths`` tokens (the caller sets it relative to the source length).

Beam search keeps ``beam`` hypotheses per sentence; a hypothesis that emits EOS is
finished with the score ``sum log p / length ** length_penalty`` (length counting EOS,
as fairseq does; 0 means raw log-probability, 1 the per-token mean). A sentence is done
when it has ``beam`` finished hypotheses, or at its maximum length (where the live
hypotheses are finished as they stand); the best finished hypothesis is the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class SpecialTokens:
    pad: int
    bos: int
    eos: int


def select(tree: dict[str, Any], index: Tensor) -> dict[str, Any]:
    """Rows ``index`` of every tensor in a batch-first dict."""
    return {k: v[index] if isinstance(v, Tensor) else v for k, v in tree.items()}


def _banned(logp: Tensor, special: SpecialTokens) -> Tensor:
    logp[:, special.pad] = float("-inf")
    logp[:, special.bos] = float("-inf")
    return logp


@torch.no_grad()
def greedy(
    model: nn.Module,
    src: Tensor,
    src_len: Tensor,
    max_lengths: Tensor,
    special: SpecialTokens,
) -> list[list[int]]:
    """The most probable next token at each step, for a batch of sources."""
    memory = model.encode_source(src, src_len)
    state = model.start(memory)
    batch = src.shape[0]
    tokens = torch.full((batch,), special.bos, dtype=torch.long, device=src.device)
    outputs: list[list[int]] = [[] for _ in range(batch)]
    done = torch.zeros(batch, dtype=torch.bool)
    limits = max_lengths.cpu()
    for t in range(int(limits.max())):
        logp, state = model.step(memory, state, tokens)
        tokens = _banned(logp, special).argmax(dim=-1)
        chosen = tokens.cpu()
        for i in range(batch):
            if done[i]:
                continue
            if int(chosen[i]) == special.eos:
                done[i] = True
            else:
                outputs[i].append(int(chosen[i]))
                done[i] = t + 1 >= int(limits[i])
        if bool(done.all()):
            break
    return outputs


@torch.no_grad()
def beam_search(
    model: nn.Module,
    src: Tensor,
    src_len: Tensor,
    max_lengths: Tensor,
    special: SpecialTokens,
    beam: int,
    length_penalty: float = 1.0,
) -> list[list[int]]:
    """The best of ``beam`` hypotheses per source sentence (see the module docstring)."""
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    batch = src.shape[0]
    device = src.device
    repeat = torch.arange(batch, device=device).repeat_interleave(beam)
    memory = select(model.encode_source(src, src_len), repeat)
    state = model.start(memory)
    # Only the first hypothesis of each sentence is live at the start (they are identical).
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    tokens = torch.full((batch * beam,), special.bos, dtype=torch.long, device=device)
    histories: list[list[list[int]]] = [[[] for _ in range(beam)] for _ in range(batch)]
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(batch)]
    done = [False] * batch
    limits = [int(v) for v in max_lengths.cpu()]
    for t in range(max(limits)):
        logp, state = model.step(memory, state, tokens)
        logp = _banned(logp, special)
        vocab = logp.shape[-1]
        total = (scores.reshape(-1, 1) + logp).reshape(batch, beam * vocab)
        top_scores, top_index = total.topk(2 * beam, dim=-1)
        top_scores, top_index = top_scores.cpu(), top_index.cpu()
        next_rows, next_tokens, next_scores = [], [], []
        new_histories: list[list[list[int]]] = []
        for i in range(batch):
            rows: list[tuple[int, int, float]] = []
            at_limit = t + 1 >= limits[i]
            for score, flat in zip(top_scores[i].tolist(), top_index[i].tolist(), strict=True):
                if done[i] or score == float("-inf"):
                    break
                origin, token = divmod(flat, vocab)
                history = histories[i][origin]
                if token == special.eos or at_limit:
                    words = history if token == special.eos else [*history, token]
                    finished[i].append((score / (t + 1) ** length_penalty, words))
                    if len(finished[i]) >= beam:
                        break
                elif len(rows) < beam:
                    rows.append((origin, token, score))
            if at_limit or len(finished[i]) >= beam:
                done[i] = True
            while len(rows) < beam:  # padding hypotheses: never extended
                rows.append((0, special.eos, float("-inf")))
            new_histories.append([[*histories[i][o], tok] for o, tok, _ in rows])
            next_rows += [i * beam + o for o, _, _ in rows]
            next_tokens += [tok for _, tok, _ in rows]
            next_scores += [sc for _, _, sc in rows]
        if all(done):
            break
        histories = new_histories
        index = torch.tensor(next_rows, device=device)
        state = select(state, index)
        tokens = torch.tensor(next_tokens, dtype=torch.long, device=device)
        scores = torch.tensor(next_scores, device=device).reshape(batch, beam)
        for i in range(batch):
            if done[i]:
                scores[i] = float("-inf")
    return [max(hyps, key=lambda h: h[0])[1] if hyps else [] for hyps in finished]


def decode(
    model: nn.Module,
    src: Tensor,
    src_len: Tensor,
    max_lengths: Tensor,
    special: SpecialTokens,
    beam: int,
    length_penalty: float,
) -> list[list[int]]:
    """Greedy search for ``beam == 1``, beam search otherwise."""
    if beam == 1:
        return greedy(model, src, src_len, max_lengths, special)
    return beam_search(model, src, src_len, max_lengths, special, beam, length_penalty)
