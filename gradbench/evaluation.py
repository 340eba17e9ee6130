"""Evaluation helpers shared by task plugins."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from gradbench.task import Batch

# torch is imported where it is used: the task modules import this one, and `gradbench
# list tasks` imports them without paying torch's import time.
if TYPE_CHECKING:
    import torch
    from torch import nn


def forward(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Call a model the way the training loop does (lengths only when the task has them)."""
    if batch.lengths is not None:
        return model(batch.x, batch.lengths)
    return model(batch.x)


def classification_metrics(
    model: nn.Module, batches: Iterable[Batch], device: torch.device, prefix: str
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a classifier over a split."""
    import torch.nn.functional as F

    correct = 0
    total = 0
    loss_sum = 0.0
    for batch in batches:
        batch = batch.to(device)
        logits = forward(model, batch).float()
        loss_sum += float(F.cross_entropy(logits, batch.y, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == batch.y).sum())
        total += len(batch)
    return {
        f"{prefix}_accuracy": correct / max(1, total),
        f"{prefix}_loss": loss_sum / max(1, total),
    }


def per_split_metrics(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device,
    prefix: str,
    f1: Callable[[torch.Tensor, torch.Tensor], float],
) -> dict[str, float]:
    """Accuracy, ``f1(predicted, actual)`` and mean cross-entropy of a classifier over a split."""
    import torch
    import torch.nn.functional as F

    predictions, labels = [], []
    loss_sum = 0.0
    for batch in batches:
        batch = batch.to(device)
        logits = forward(model, batch).float()
        loss_sum += float(F.cross_entropy(logits, batch.y, reduction="sum"))
        predictions.append(logits.argmax(dim=-1).cpu())
        labels.append(batch.y.cpu())
    predicted, actual = torch.cat(predictions), torch.cat(labels)
    return {
        f"{prefix}_accuracy": float((predicted == actual).double().mean()),
        f"{prefix}_f1": f1(predicted, actual),
        f"{prefix}_loss": loss_sum / len(actual),
    }
