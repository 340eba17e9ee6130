"""Gradient-flow probes (placeholder interface until the probes land).

``make_probes(level, model, task, config)`` returns hooks for the training loop that
also give ``summary()`` (JSON-able, into the run record), ``series()`` (arrays, into
the run's .npz) and ``verdict(result)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gradbench.train import NoHooks


class ProbeSet(NoHooks):
    def summary(self) -> dict[str, Any]:
        return {}

    def series(self) -> dict[str, np.ndarray]:
        return {}

    def verdict(self, result) -> tuple[str | None, dict[str, Any]]:
        return ("diverged", {}) if result.diverged else (None, {})


def make_probes(level: str, model, task, config) -> ProbeSet:
    return ProbeSet()
