"""Checkpoints of a run in progress (``--checkpoint-every N``), so a killed run resumes.

A checkpoint holds everything the rest of the run depends on: the model's and the
optimiser's state, the learning-rate schedule, every random number generator (torch,
CUDA, numpy, Python), the probes' accumulated figures and the loop's own counters and
series (losses, gradient norms, evaluations, seconds spent). Resuming skips the
batches of the current epoch that were already trained on, then restores the RNGs, so
on the CPU the resumed run computes exactly what the uninterrupted one would have
(tests/test_checkpoint.py checks the losses and the weights bit for bit).

Files are written atomically (a temporary file, fsync, rename): a kill at any moment
leaves the previous checkpoint or the new one, never half of one. They are read with
``torch.load(weights_only=True)``: tensors, numbers, strings and containers only, so
nothing from an untrusted file is unpickled. Everything here is converted to those.
"""

from __future__ import annotations

import os
import random
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gradbench.errors import GradbenchError

FORMAT = "gradbench-checkpoint"
VERSION = 1


class CheckpointError(GradbenchError):
    """A checkpoint file that cannot be read or does not belong to this run."""


class Checkpointer:
    """Saves a run's state every ``every`` steps to ``path``; restores it when it exists."""

    def __init__(self, path: str | Path, every: int, *, cell: str | None = None):
        if every < 1:
            raise ValueError(f"checkpoint interval must be >= 1, got {every}")
        self.path = Path(path)
        self.every = every
        self.cell = cell  # the cell key the file belongs to, checked on load
        self._skip = 0  # batches of the resumed epoch already trained on
        self._rng: dict[str, Any] | None = None  # restored once those are skipped
        self.position = 0  # batches handed out in the current epoch
        self.resumed_step: int | None = None

    # -- saving ----------------------------------------------------------------------

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def save(
        self,
        *,
        step: int,
        epoch: int,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        hooks: Any,
        loop: dict[str, Any],
    ) -> None:
        state = {
            "format": FORMAT,
            "version": VERSION,
            "cell": self.cell,
            "step": step,
            "epoch": epoch,
            "position": self.position,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler_state(scheduler),
            "hooks": hook_state(hooks),
            "rng": rng_state(),
            "loop": to_safe(loop),
        }
        write_atomically(self.path, state)

    # -- resuming --------------------------------------------------------------------

    def restore(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, hooks: Any
    ) -> dict[str, Any] | None:
        """Load the saved state into the run's objects; the loop's counters, or None."""
        if not self.path.exists():
            return None
        state = read(self.path, cell=self.cell)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        load_scheduler_state(scheduler, state["scheduler"])
        load_hook_state(hooks, state["hooks"], state["step"])
        self._skip = int(state["position"])
        self._rng = state["rng"]
        self.resumed_step = int(state["step"])
        loop = from_safe(state["loop"])
        return {"step": int(state["step"]), "epoch": int(state["epoch"]), **loop}

    def batches(self, batches: Iterable[Any]) -> tuple[Iterator[Any], bool]:
        """(batches to train on, whether some of this epoch were trained on before a kill).

        The skipped batches are drawn, not sliced away, so whatever they draw from a
        global RNG is drawn as before; then the RNGs are restored to the saved state.
        """
        iterator = iter(batches)
        skipped = 0
        while skipped < self._skip and next(iterator, _END) is not _END:
            skipped += 1
        self._skip = 0
        if self._rng is not None:
            load_rng_state(self._rng)
            self._rng = None
        self.position = skipped
        return self._count(iterator), skipped > 0

    def _count(self, iterator: Iterator[Any]) -> Iterator[Any]:
        for batch in iterator:
            self.position += 1
            yield batch

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


_END = object()


def write_atomically(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read(path: str | Path, *, cell: str | None = None) -> dict[str, Any]:
    """A checkpoint's state, or one clear CheckpointError (corrupt, foreign, other cell)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on bad files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged zip or pickle
        text = " ".join(str(error).split())
        if "Weights only load failed" in text:
            reason = "it holds more than tensors and plain data, which is never unpickled"
        else:
            reason = text[:160] or type(error).__name__
        raise CheckpointError(
            f"checkpoint {path} is corrupt or unreadable ({reason}); "
            "delete it, or re-run with --force to start the run over"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a gradbench checkpoint; delete it or use --force")
    if state.get("version") != VERSION:
        raise CheckpointError(
            f"checkpoint {path} has version {state.get('version')}, this gradbench reads "
            f"{VERSION}; delete it or use --force"
        )
    if cell is not None and state.get("cell") != cell:
        raise CheckpointError(f"checkpoint {path} belongs to another run; delete it")
    return state


# -- conversions to what weights_only loading accepts ----------------------------------


def is_plain(value: Any) -> bool:
    """Data a checkpoint can hold: numbers, text, arrays, containers and gradbench dataclasses."""
    if value is None or isinstance(value, (bool, int, float, str, np.ndarray, np.generic)):
        return True
    if isinstance(value, torch.Tensor):
        # A model's own parameter is live state the model restores, never a copy to keep.
        return not isinstance(value, nn.Parameter)
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    if is_dataclass(value) and not isinstance(value, type):
        return type(value).__module__.startswith("gradbench.") and all(
            is_plain(getattr(value, f.name)) for f in fields(value)
        )
    return False


def to_safe(value: Any) -> Any:
    """numpy values -> tensors (or lists of text); gradbench dataclasses -> tagged dicts."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "USO":
            return {"__ndarray_text__": value.tolist(), "dtype": str(value.dtype)}
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return {"__npscalar__": torch.from_numpy(np.asarray(value).reshape(1).copy())}
    if is_dataclass(value) and not isinstance(value, type):
        kind = f"{type(value).__module__}:{type(value).__qualname__}"
        return {
            "__dataclass__": kind,
            **{f.name: to_safe(getattr(value, f.name)) for f in fields(value)},
        }
    if isinstance(value, dict):
        return {k: to_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_safe(v) for v in value)
    return value


def from_safe(value: Any) -> Any:
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return value["__ndarray__"].numpy()
        if "__ndarray_text__" in value:
            return np.array(value["__ndarray_text__"], dtype=value["dtype"])
        if "__npscalar__" in value:
            return value["__npscalar__"].numpy()[0]
        if "__dataclass__" in value:
            return _dataclass(value["__dataclass__"])(
                **{k: from_safe(v) for k, v in value.items() if k != "__dataclass__"}
            )
        return {k: from_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_safe(v) for v in value)
    return value


def _dataclass(name: str) -> type:
    """A gradbench dataclass by ``module:qualname``; nothing outside gradbench is imported."""
    import importlib

    module, _, qualname = name.partition(":")
    if not module.startswith("gradbench."):
        raise CheckpointError(f"a checkpoint names {name!r}, which is not a gradbench type")
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    if not is_dataclass(found):
        raise CheckpointError(f"a checkpoint names {name!r}, which is not a dataclass")
    return found


def rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
    }


def load_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])


def scheduler_state(scheduler: Any) -> dict[str, Any]:
    """A torch LR scheduler's state, or gradbench.optim.Schedule's (planned + plateau)."""
    if hasattr(scheduler, "state_dict"):
        return {"state_dict": scheduler.state_dict()}
    plateau = getattr(scheduler, "plateau", None)
    return {
        "steps_taken": scheduler.steps_taken,
        "planned": scheduler.planned.state_dict(),
        "plateau": plateau.state_dict() if plateau is not None else None,
    }


def load_scheduler_state(scheduler: Any, state: dict[str, Any]) -> None:
    if "state_dict" in state:
        scheduler.load_state_dict(state["state_dict"])
        return
    scheduler.steps_taken = state["steps_taken"]
    scheduler.planned.load_state_dict(state["planned"])
    if state["plateau"] is not None:
        scheduler.plateau.load_state_dict(state["plateau"])


def hook_state(hooks: Any) -> dict[str, Any] | None:
    """What the hooks (the probes) accumulated: every attribute that is plain data.

    The rest (the layer index, the task, forward hooks) is rebuilt by ``start`` from the
    model, so it needs no saving; hooks may also define ``state_dict``/``load_state_dict``,
    and ``resume(step)`` to redo what ``start`` set up for step 0 for the step resumed at.
    """
    if hasattr(hooks, "state_dict"):
        return {"state_dict": to_safe(hooks.state_dict())}
    attributes = getattr(hooks, "__dict__", {})
    return {"attributes": {k: to_safe(v) for k, v in attributes.items() if is_plain(v)}}


def load_hook_state(hooks: Any, state: dict[str, Any] | None, step: int) -> None:
    if state is None:
        return
    if "state_dict" in state:
        hooks.load_state_dict(from_safe(state["state_dict"]))
        return
    for name, value in from_safe(state["attributes"]).items():
        setattr(hooks, name, value)
    if hasattr(hooks, "resume"):
        hooks.resume(step)


def checkpoint_dir(results: str | Path) -> Path:
    """Where a sweep's checkpoints live: scratch beside the records, one file per cell."""
    return Path(results) / "checkpoints"
