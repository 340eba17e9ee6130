"""Matched budgets: count parameters and FLOPs, and solve widths so models compare fairly.

A comparison of a plain RNN with an LSTM, or a plain CNN with a ResNet, means something
only when both had the same budget. Two kinds of model sizing (``match_models``):

- ``params``: each model's ``width`` option is solved so its parameter count lands
  within a tolerance (default 2%) of a target;
- ``flops``: the same for FLOPs per training step (forward + backward, one batch).

Equal *total* training FLOPs is a stopping budget instead: ``steps_for_flops`` turns a
total into each model's step count; ``apply_flops_budget`` and ``flops_budget_record``
give the run's train config and its record fields. Widths are searched on models
built on PyTorch's meta device (no memory, no arithmetic) whenever the model and task
allow it. See docs/budgets.md.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from gradbench.config import TrainConfig
from gradbench.errors import UsageError
from gradbench.flops import forward, training_step_flops
from gradbench.models.build import build_model
from gradbench.task import Batch, Task

MATCH_KINDS = ("params", "flops")
DEFAULT_TOLERANCE = 0.02
# Widest model the solver tries: far past anything these benchmarks train, and a bound
# that keeps a mistyped target (250M for 250k) from building absurd models.
MAX_WIDTH = 8192
# Training state per parameter: fp32 weight, gradient and Adam's two moments.
BYTES_PER_PARAMETER = 16
# Options that make the width a multiple of their value (d_model divisible by heads).
WIDTH_MULTIPLE_OPTIONS = ("heads", "num_heads", "n_heads", "nhead")
# A model option that scales its width more finely than one base channel (the CIFAR
# nets' per-stage multiplier, rounded to whole channels inside the model). The solver
# turns it only when no integer width lands within tolerance; 1.0 is the paper's net.
FINE_KNOB = "width_multiplier"
# Multipliers tried between two adjacent widths: centres of this many equal slices, so
# every rounding of the CIFAR nets' three stages (breakpoints at eighths) is among them.
FINE_KNOB_SLICES = 16
# Real training batches whose mean FLOPs stand for a step of a variable-length task.
REPRESENTATIVE_BATCHES = 8

UNITS = {"params": "parameters", "flops": "FLOPs per step"}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def memory_budget_bytes() -> int:
    """Half the machine's physical memory: the most a solved model's training state may take."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GiB
        return 8 << 30


def _count_on_meta(model: nn.Module, task: Task, batch: Batch) -> int:
    model = model.to("meta").train()
    return training_step_flops(model, batch.to("meta"), task.loss)


def _count_on_cpu(model: nn.Module, task: Task, batch: Batch) -> int:
    return training_step_flops(model.to("cpu").train(), batch.to("cpu"), task.loss)


# (task, batch size) -> its representative batches: a run counts FLOPs and records their
# basis, a solver counts many widths, all on the same batches, drawn once.
_REPRESENTATIVE: dict[tuple[int, int], tuple[Task, list[Batch], dict[str, Any]]] = {}


def representative_batches(task: Task, batch_size: int) -> tuple[list[Batch], dict[str, Any]]:
    """The batches a step's FLOPs are counted on, and how they were chosen (for the record).

    A task of fixed-shape inputs: its fake batch (every step costs the same). A task of
    padded, variable-length inputs: the first REPRESENTATIVE_BATCHES real training
    batches (data seed 0), whose mean count is the expected cost of a step, rather than
    one batch padded to its own maximum.
    """
    cached = _REPRESENTATIVE.get((id(task), batch_size))
    if cached is not None and cached[0] is task:
        return cached[1], dict(cached[2])
    batches, basis = _draw_representative(task, batch_size)
    if len(_REPRESENTATIVE) > 16:  # a long-lived process (tests) need not keep them all
        _REPRESENTATIVE.clear()
    _REPRESENTATIVE[(id(task), batch_size)] = (task, batches, basis)
    return batches, dict(basis)


def _draw_representative(task: Task, batch_size: int) -> tuple[list[Batch], dict[str, Any]]:
    with torch.random.fork_rng(devices=[]):
        fake = task.fake_batch(batch_size)
        if fake.lengths is None:
            return [fake], {"batches": "fake", "count": 1, "batch_size": batch_size}
        batches = list(
            itertools.islice(task.batches("train", batch_size, seed=0), REPRESENTATIVE_BATCHES)
        )
    if not batches:
        return [fake], {"batches": "fake", "count": 1, "batch_size": batch_size}
    lengths = torch.cat([b.lengths.float() for b in batches if b.lengths is not None])
    padded = [float(b.x.shape[1]) for b in batches]
    return batches, {
        "batches": "train",
        "count": len(batches),
        "batch_size": batch_size,
        "mean_length": float(lengths.mean()) if len(lengths) else None,
        "mean_padded_length": sum(padded) / len(padded),
    }


def _count_batches(make: Callable[[str], nn.Module], task: Task, batches: list[Batch]) -> float:
    """Mean training-step FLOPs over ``batches``: on the meta device, else for real on the CPU."""
    counts = []
    with torch.random.fork_rng(devices=[]):
        for batch in batches:
            try:
                counts.append(_count_on_meta(make("meta"), task, batch))
            except UsageError:
                raise
            except Exception:  # noqa: BLE001 - any failure on meta means "count for real"
                counts.append(_count_on_cpu(make("cpu"), task, batch))
    return sum(counts) / len(counts)


def flops_per_step(model: nn.Module, task: Task, batch_size: int) -> float | None:
    """Forward + backward FLOPs of one training step on the task's real input shape.

    Counted on copies of ``model``, so its weights, gradients and batch-norm statistics
    are untouched, with the global RNG state restored afterwards so seeded runs stay
    repeatable; on ``representative_batches`` (their mean, for variable-length tasks).
    The copy runs on the meta device first (shapes only: about a second for resnet-56
    at batch 128 where real arithmetic takes ~8 s on 2 CPU cores); a model or loss that
    needs real values (packing by lengths, ``.item()``) is counted on the CPU instead,
    at the full batch size. None, with a warning, if neither works.
    """
    batches, _ = representative_batches(task, batch_size)
    try:
        return float(_count_batches(lambda device: copy.deepcopy(model), task, batches))
    except Exception as error:  # noqa: BLE001 - a count must never break a run
        warnings.warn(f"FLOPs not counted: {error}", stacklevel=2)
        return None


def steps_for_flops(flops_per_step: float, total: float) -> int:
    """Training steps that spend ``total`` FLOPs at ``flops_per_step`` (nearest, >= 1)."""
    if not flops_per_step or flops_per_step <= 0:
        raise UsageError("a total-FLOPs budget needs the model's FLOPs per step, which are unknown")
    if not total > 0:
        raise UsageError(f"a total-FLOPs budget must be > 0, got {total:g}")
    return max(1, round(total / flops_per_step))


def apply_flops_budget(
    config: TrainConfig, flops_per_step: float | None, total: float
) -> TrainConfig:
    """Equal total training FLOPs by steps: ``config`` with this model's step count.

    The step count replaces --steps/--epochs; a --seconds cap or a --target still
    applies as well, and ``flops_budget_record`` reports what was actually spent.
    """
    return replace(config, steps=steps_for_flops(flops_per_step or 0.0, total), epochs=None)


def flops_budget_record(total: float, flops_per_step: float, steps_run: int) -> dict[str, Any]:
    """The stopping fields of ``record["budget"]`` for a total-FLOPs budget.

    Kind "flops", the total asked for, the total spent (steps run x FLOPs per step) and
    the relative error: within half a step's FLOPs when the run used its steps.
    """
    achieved = steps_run * float(flops_per_step)
    return {
        "kind": "flops",
        "target": total,
        "achieved": achieved,
        "rel_error": (achieved - total) / total,
    }


def measure_step_seconds(
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    device: torch.device,
    *,
    steps: int = 3,
    warmup: int = 1,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """Median seconds of a real training step (forward, backward, optimiser) on a fake batch.

    Runs on a copy of ``model`` with the optimiser ``config`` names, after ``warmup``
    untimed steps (allocator and kernel selection), so the figure is what a run's step
    costs on this machine, data loading aside. The global RNG state is restored.
    """
    from gradbench.train import make_optimizer

    if steps < 1:
        raise UsageError(f"time at least one step, not {steps}")
    with torch.random.fork_rng(devices=[]):
        model = copy.deepcopy(model).to(device).train()
        optimizer = make_optimizer(model, config)
        batch = task.fake_batch(config.batch_size).to(device)
        times = []
        for index in range(warmup + steps):
            started = clock()
            optimizer.zero_grad(set_to_none=True)
            task.loss(forward(model, batch), batch).backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = clock() - started
            if index >= warmup:
                times.append(elapsed)
    return float(sorted(times)[len(times) // 2])


def width_multiple(options: dict[str, Any], name: str | None = None) -> int:
    """Widths must be multiples of this (a transformer's head count), else any integer.

    A model registered with the tag "any-width" rounds its width internally and still
    grows at every step (gradbench's transformer), so it takes any integer.
    """
    if name is not None:
        from gradbench.registry import MODELS

        if "any-width" in MODELS.entry(name).tags:
            return 1
    for key in WIDTH_MULTIPLE_OPTIONS:
        value = options.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 1:
            return value
    return 1


@dataclass
class ModelCounter:
    """Parameters and FLOPs of one model configuration as a function of its width."""

    name: str
    options: dict[str, Any]
    task: Task
    batch_size: int
    _params: dict[Any, int] = field(default_factory=dict)
    _flops: dict[Any, float] = field(default_factory=dict)
    _batches: list[Batch] | None = None

    def build(self, width: int, device: str, multiplier: float | None = None) -> nn.Module:
        # Counting never depends on initial values: skip init (orthogonal init has no
        # meta kernel) and keep the global RNG as it was.
        options = {**self.options, "width": width, "init": "default"}
        if multiplier is not None:
            options[FINE_KNOB] = multiplier
        with torch.random.fork_rng(devices=[]), torch.device(device):
            return build_model(self.name, self.task.input_spec(), options)

    def _model(self, width: int, multiplier: float | None) -> nn.Module:
        try:
            return self.build(width, "meta", multiplier)
        except UsageError:
            raise
        except Exception:  # noqa: BLE001 - a factory that needs real tensors
            return self.build(width, "cpu", multiplier)

    @staticmethod
    def _shape_key(model: nn.Module) -> tuple:
        """Two settings that build the same parameter shapes count the same."""
        return tuple((name, tuple(p.shape)) for name, p in model.named_parameters())

    def parameters(self, width: int, multiplier: float | None = None) -> int:
        key = (width, multiplier)
        if key not in self._params:
            self._params[key] = count_parameters(self._model(width, multiplier))[0]
        return self._params[key]

    def flops(self, width: int, multiplier: float | None = None) -> float:
        """Mean FLOPs per step over the task's representative batches (as a run counts them)."""
        shapes = self._shape_key(self._model(width, multiplier))
        if shapes not in self._flops:
            if self._batches is None:
                self._batches, _ = representative_batches(self.task, self.batch_size)
            self._flops[shapes] = _count_batches(
                lambda device: self.build(width, device, multiplier), self.task, self._batches
            )
        return self._flops[shapes]

    def measure(self, kind: str) -> Callable[..., float]:
        return self.parameters if kind == "params" else self.flops

    @property
    def has_fine_knob(self) -> bool:
        return FINE_KNOB in self.options


def _fits(counter: ModelCounter, width: int, memory: int) -> bool:
    return counter.parameters(width) * BYTES_PER_PARAMETER <= memory


def max_width(counter: ModelCounter, multiple: int, memory: int) -> int:
    """Widest width the solver may pick: MAX_WIDTH, or less where training would not fit.

    "Fit" means parameters, gradients and two Adam moments (16 bytes a parameter) within
    half the machine's memory; activations come on top, so this is a floor on the need.
    """
    top = MAX_WIDTH // multiple * multiple
    if _fits(counter, top, memory):
        return top
    lo, hi = 1, top // multiple  # in multiples; hi does not fit
    if not _fits(counter, multiple, memory):
        return multiple  # even the smallest does not fit: the range check will say so
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(counter, mid * multiple, memory) else (lo, mid)
    return lo * multiple


def _interpolate(lo: int, c_lo: float, hi: int, c_hi: float, target: float) -> float:
    """Width where the power law through two (width, count) points reaches ``target``."""
    if c_lo <= 0 or c_hi <= c_lo or lo <= 0:
        return (lo + hi) / 2
    slope = math.log(c_hi / c_lo) / math.log(hi / lo)
    return lo * (target / c_lo) ** (1 / slope)


@dataclass(frozen=True)
class Solution:
    """A solved width, its count, and where the target lay relative to the reachable range."""

    width: int
    achieved: float
    # None: the target is inside the reachable range; "below"/"above": outside it, and
    # ``width`` is the smallest/widest allowed width.
    outside: str | None = None
    # The fine knob's value (FINE_KNOB), when the solver had to turn it.
    multiplier: float | None = None


def _local_exponent(k0: int, c0: float, k1: int, c1: float) -> float:
    """Slope of log(count) against log(width) between two widths; 2 (quadratic) if unknown."""
    if k0 == k1 or c0 <= 0 or c1 <= 0 or c0 == c1:
        return 2.0
    slope = math.log(c1 / c0) / math.log(k1 / k0)
    return min(max(slope, 0.25), 4.0)


def solve_width(
    measure: Callable[[int], float],
    target: float,
    *,
    start: int,
    multiple: int = 1,
    top: int = MAX_WIDTH,
) -> Solution:
    """The width (a multiple of ``multiple``, at most ``top``) whose count is nearest ``target``.

    ``measure`` must be non-decreasing in width. A bracket is grown from ``start`` by
    power-law jumps (exponent from the last two counts), then narrowed by log-log
    interpolation, with a bisection step whenever a jump fails to halve it: a handful
    of counts instead of a scan, which matters when each count is a FLOP measurement.
    """
    k_top = top // multiple
    if k_top < 1:
        raise UsageError(f"no width is allowed: the smallest, {multiple}, is above {top}")

    def count(k: int) -> float:
        return measure(k * multiple)

    k = min(max(1, round(start / multiple)), k_top)
    c = count(k)
    prev_k, prev_c = k, c
    lo, c_lo = (k, c) if c < target else (None, math.nan)
    hi, c_hi = (k, c) if c >= target else (None, math.nan)
    while lo is None or hi is None:
        exponent = _local_exponent(prev_k, prev_c, k, c)
        guess = k * (target / c) ** (1 / exponent) if c > 0 else 2 * k
        prev_k, prev_c = k, c
        if hi is None:  # everything so far is below the target: grow
            if lo == k_top:
                return Solution(lo * multiple, c_lo, "above")
            k = min(max(math.ceil(guess), lo + 1), k_top)
        else:  # everything so far is at or above the target: shrink
            if hi == 1:
                return (
                    Solution(multiple, c_hi, "below") if c_hi > target else Solution(multiple, c_hi)
                )
            k = max(min(math.floor(guess), hi - 1), 1)
        c = count(k)
        if c < target:
            lo, c_lo = k, c
        else:
            hi, c_hi = k, c
    bisect_next = False
    while hi - lo > 1:  # count(lo) < target <= count(hi)
        span = hi - lo
        if bisect_next:
            k = (lo + hi) // 2
        else:
            k = round(_interpolate(lo, c_lo, hi, c_hi, target))
        k = min(max(k, lo + 1), hi - 1)
        c = count(k)
        if c < target:
            lo, c_lo = k, c
        else:
            hi, c_hi = k, c
        bisect_next = (hi - lo) > span / 2
    if abs(c_lo - target) < abs(c_hi - target):
        return Solution(lo * multiple, c_lo)
    return Solution(hi * multiple, c_hi)


def si_number(value: float | None, digits: int = 4) -> str:
    """250000 -> '250k', 2.1e10 -> '21G': counts as people write them."""
    if value is None or math.isnan(value):
        return "—"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{unit}"
    return f"{value:.{digits}g}"


def match_models(
    models: list[tuple[str, dict[str, Any]]],
    task: Task,
    *,
    kind: str,
    target: float | None,
    tolerance: float = DEFAULT_TOLERANCE,
    batch_size: int = 128,
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Solve each model's ``width`` so its parameters or FLOPs per step hit ``target``.

    ``models`` holds (registered name, resolved options incl. "width"). ``target`` None
    matches the first model as given: its count at its own width is the target. Returns
    per model (options with the solved width, record fields: ``match``, ``match_target``,
    ``match_achieved``, ``match_rel_error``, ``match_tolerance``, ``match_width``,
    ``match_within_tolerance``, and for FLOPs ``match_batch_size``). A model that lands
    outside the tolerance (its count jumps by more than that between adjacent widths) is
    returned flagged, not refused; a target outside the reachable range of some model
    raises UsageError naming that range, before anything is trained.
    """
    if kind not in MATCH_KINDS:
        raise UsageError(f"--match {kind!r} is not one of {', '.join(MATCH_KINDS)}")
    if not tolerance > 0:
        raise UsageError(f"--tolerance must be > 0, got {tolerance}")
    if target is not None and not target > 0:
        raise UsageError(f"--match-target must be > 0, got {target:g}")
    if not models:
        return []
    for name, options in models:
        if "width" not in options:
            raise UsageError(
                f"model {name} has no width option, so it cannot be sized to a budget "
                f"(its options: {', '.join(sorted(options))})"
            )
    counters = [ModelCounter(name, dict(options), task, batch_size) for name, options in models]
    reference = None
    if target is None:
        first = counters[0]
        target = float(first.measure(kind)(int(first.options["width"])))
        reference = first.name
    memory = memory_budget_bytes()
    solutions: list[Solution] = []
    problems: list[str] = []
    for index, counter in enumerate(counters):
        start = int(counter.options["width"])
        multiple = width_multiple(counter.options, counter.name)
        if index == 0 and reference is not None:
            solutions.append(Solution(start, target))
            continue
        top = max_width(counter, multiple, memory)
        solution = solve_width(
            counter.measure(kind), target, start=start, multiple=multiple, top=top
        )
        if abs(solution.achieved - target) > tolerance * target and counter.has_fine_knob:
            solution = refine_with_fine_knob(counter, kind, target, solution, multiple)
        solutions.append(solution)
        if solution.outside and abs(solution.achieved - target) > tolerance * target:
            problems.append(_range_message(counter, kind, solution, multiple, top))
    if problems:
        unit = UNITS[kind]
        raise UsageError(
            f"match target {si_number(target)} {unit} is out of reach: " + "; ".join(problems)
        )
    results = []
    for counter, solution in zip(counters, solutions, strict=True):
        rel_error = (solution.achieved - target) / target
        info: dict[str, Any] = {
            "match": kind,
            "match_target": target,
            "match_achieved": solution.achieved,
            "match_rel_error": rel_error,
            "match_tolerance": tolerance,
            "match_width": solution.width,
            "match_within_tolerance": abs(rel_error) <= tolerance,
        }
        if reference is not None:
            info["match_reference"] = reference
        if kind == "flops":
            info["match_batch_size"] = batch_size
        options = {**counter.options, "width": solution.width}
        if solution.multiplier is not None:
            options[FINE_KNOB] = info[f"match_{FINE_KNOB}"] = solution.multiplier
        results.append((options, info))
    return results


def refine_with_fine_knob(
    counter: ModelCounter, kind: str, target: float, solution: Solution, multiple: int
) -> Solution:
    """Between the two widths around ``target``, the multiplier whose count is nearest.

    The multiplier runs from the given one (1.0 by default) up to where the lower width
    reaches the next one; FINE_KNOB_SLICES values across that span visit every way the
    model can round its stages. The width solution stands if nothing is nearer.
    """
    if solution.outside:
        return solution
    low = solution.width if solution.achieved < target else solution.width - multiple
    if low < multiple:
        return solution
    base = float(counter.options.get(FINE_KNOB) or 1.0)
    measure = counter.measure(kind)

    def at(index: int) -> tuple[float, float]:
        multiplier = round(base * (1 + (index + 0.5) / FINE_KNOB_SLICES * multiple / low), 4)
        return multiplier, measure(low, multiplier)

    # Counts rise with the multiplier: bisect for the first slice at or above the target
    # (a handful of counts, which matters when each is a FLOP count), then take the
    # nearest of it, the slice below and the width solution.
    lo, hi = 0, FINE_KNOB_SLICES  # at(lo - 1) < target; at(hi) >= target, if hi < SLICES
    while lo < hi:
        mid = (lo + hi) // 2
        if at(mid)[1] < target:
            lo = mid + 1
        else:
            hi = mid
    best = solution
    for index in {lo - 1, lo} & set(range(FINE_KNOB_SLICES)):
        multiplier, count = at(index)
        if abs(count - target) < abs(best.achieved - target):
            best = Solution(low, count, None, multiplier)
    return best


def _range_message(
    counter: ModelCounter, kind: str, solution: Solution, multiple: int, top: int
) -> str:
    measure = counter.measure(kind)
    low, high = measure(multiple), measure(top)
    limit = "memory" if top < MAX_WIDTH // multiple * multiple else "the width cap"
    reason = (
        "too small for the parts of the model that do not scale with width"
        if solution.outside == "below"
        else f"too large ({limit} stops it at width {top})"
    )
    return (
        f"{counter.name} reaches {si_number(low)} to {si_number(high)} {UNITS[kind]} "
        f"(widths {multiple} to {top}), so the target is {reason}"
    )
