"""Run records made by hand for the suite, stats, claims, compare and report tests."""

from __future__ import annotations

from itertools import count

import numpy as np

from gradbench.records import SCHEMA_VERSION, ResultsStore

_clock = count()
DIRECTIONS = {
    "image": {"test_accuracy": True, "test_loss": False},
    "adding-100": {"test_mse": False},
}
PRIMARY = {"image": "test_accuracy", "adding-100": "test_mse"}


def rec(
    task: str,
    model: str,
    seed: int,
    value: float | None,
    *,
    train: dict | None = None,
    diverged: bool = False,
    verdict: str = "healthy",
    target: dict | None = None,
    label: str | None = None,
) -> dict:
    """A minimal valid record; ``created`` increases with every call (later = newer)."""
    primary = PRIMARY[task]
    metrics = {name: None for name in DIRECTIONS[task]}
    metrics[primary] = value
    tick = next(_clock)
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": f"{tick:012x}",
        "created": f"2026-01-01T00:{tick // 60:02d}:{tick % 60:02d}",
        "task": task,
        "task_options": {},
        "dataset": {"name": task, "split": "train", "version": "v1", "source": "synthetic"},
        "model": model.split(":")[0],
        "model_label": label or model,
        "model_options": {"label": model},
        "train_options": {"steps": 100, "lr": 0.05, "device": "cpu", "threads": 1} | (train or {}),
        "seed": seed,
        "budget": {"kind": "steps", "target": 100, "achieved": 100, "match": None},
        "parameters": 1000,
        "flops_per_step": None,
        "steps": 100,
        "train_seconds": 2.0,
        "metrics": metrics,
        "metric_directions": DIRECTIONS[task],
        "primary_metric": primary,
        "final_train_loss": 0.5,
        "diverged": diverged,
        "diverged_step": 3 if diverged else None,
        "divergence": "loss" if diverged else None,
        "target": target,
        "verdict": verdict,
        "probes": {"first_last_ratio_log10": -1.0},
    }


def series(model_seed: int = 0, steps: int = 40, layers: int = 4, timesteps: int = 12) -> dict:
    """The series a probed recurrent or convolutional run writes, small and deterministic."""
    rng = np.random.default_rng(model_seed)
    loss = np.linspace(2.0, 0.5, steps) + rng.normal(0, 0.05, steps)
    grad_norm = np.abs(rng.normal(1, 0.1, steps))
    layer_grad_norm = np.abs(rng.normal(1, 0.3, (5, layers))) * 10.0 ** -np.arange(layers)
    sizes = 9 * 4 ** np.arange(layers)
    return {
        "loss": loss,
        "grad_norm": grad_norm,
        "layer_grad_norm": layer_grad_norm,
        "layer_sizes": sizes,
        "layer_grad_rms": layer_grad_norm / np.sqrt(sizes),
        "layer_kinds": np.array(["weight"] * layers),
        "layer_names": np.array([f"layer{i}.weight" for i in range(layers)]),
        "probe_steps": np.array([0, 10, 20, 30, 39]),
        "timestep_grad_norm_from_end": 10.0 ** -np.outer(np.ones(3), np.arange(timesteps) * 0.2),
        "timestep_steps": np.array([0, 20, 39]),
    }


def store_with(path, records: list[dict], with_series: bool = True) -> ResultsStore:
    store = ResultsStore(path)
    for i, record in enumerate(records):
        store.append(record, series(i) if with_series else None)
    return store
