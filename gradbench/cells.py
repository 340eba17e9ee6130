"""What "the same cell" means: the key that makes every sweep resumable.

A *cell* is one run of a sweep: one model configuration trained on one task with one
seed. Its key is a hash of everything that decides what that run computes:

- the task (canonical name), its options and the training split's data set id;
- the model (registered name) and every option it is built with, after ``--match``
  has solved its width;
- every training option (budget, batch size, optimiser, schedule, clipping, precision,
  fast mode, device, probes, evaluation schedule, ...) except the CPU thread count;
- ``--match`` (kind, target, tolerance) and ``--flops-budget``;
- the seed.

Left out on purpose, because they change how a run is carried out and not what it
computes: the executor (``local``, ``--jobs``, ``ray``), the thread count, retries,
checkpointing, the results directory, and the gradbench version or git revision (an
edit to the code must not make every finished run look unfinished; see
docs/scale.md). Every record carries its key as ``cell``; a cell is complete when
the store holds a record with its key whose series file, if it names one, exists.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

from gradbench.records import ResultsStore, finite_or_none

if TYPE_CHECKING:
    from gradbench.runner import Plan, PreparedModel

# Bumped when the content of the key changes, so old keys stop matching on purpose.
KEY_VERSION = 1
# Training options that change how a run is carried out, not what it computes.
HOW_NOT_WHAT = frozenset({"threads"})


def cell_config(
    plan: Plan, item: PreparedModel, seed: int, dataset: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The full configuration of one cell, as hashed by ``cell_key`` (JSON-able)."""
    train = {k: v for k, v in plan.train.as_dict().items() if k not in HOW_NOT_WHAT}
    return {
        "key_version": KEY_VERSION,
        "task": plan.task,
        "task_options": plan.task_options,
        "dataset": dataset,
        "model": item.spec.name,
        "model_options": item.options,
        "train_options": train,
        "match": plan.match,
        "match_target": plan.match_target,
        "match_tolerance": plan.match_tolerance if plan.match else None,
        "flops_budget": plan.flops_budget,
        "seed": seed,
    }


def key_of(config: dict[str, Any]) -> str:
    """A stable hash of a JSON-able configuration (key order and tuples do not matter)."""
    text = json.dumps(finite_or_none(config), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def cell_key(
    plan: Plan, item: PreparedModel, seed: int, dataset: dict[str, Any] | None = None
) -> str:
    """The key of one (model configuration, seed) cell of ``plan``; see the module doc."""
    return key_of(cell_config(plan, item, seed, dataset))


def complete_cells(store: ResultsStore) -> set[str]:
    """Keys of the cells that have a complete record in ``store``."""
    done = set()
    for record in store.load():
        key = record.get("cell")
        if not key:
            continue
        series = record.get("series_file")
        if series and not (store.root / series).is_file():
            continue
        done.add(key)
    return done
