"""Counting parameters and FLOPs (placeholder until matched budgets land)."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def flops_per_step(model, task, batch_size: int) -> float | None:
    return None


def match_models(models, task, *, kind, target, tolerance, batch_size):
    from gradbench.errors import UsageError

    raise UsageError("--match is not available yet")
