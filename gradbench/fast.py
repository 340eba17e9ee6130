"""Fast mode (``--fast``): what neither Lightning's defaults nor a hand-written eager loop do.

- bf16 autocast for the forward pass and the loss, where the hardware has bf16 units
  (GPUs; CPUs with AMX or AVX512-BF16). Elsewhere bf16 is emulated and slower than
  fp32 (0.35x of fp32's speed on an LSTM, 0.25x on resnet-20:
  bench/precision_speed.py), so fast mode stays fp32 there and records why. Weights,
  gradients, the optimiser and the gradient norms stay fp32;
- channels-last memory layout for models with convolutions, the layout cuDNN's tensor
  cores and oneDNN compute in; on the CPU only where the step is compiled (eager
  channels-last batch norm loses gradient precision there: ``gradbench.layout``);
- ``torch.compile`` of the training forward and backward, for image models with the
  probes off. Sequence models are left eager: their recurrence is already one fused
  kernel, and their lengths vary from batch to batch, which would recompile. With
  probes on, forward hooks come and go on scheduled steps, and each change would
  recompile too. Compilation happens once before the training clock starts, on the
  model's own state, which is then put back, so it changes no figure; its seconds are
  reported as ``fast.compile_seconds`` and never counted in ``train_seconds``. Compiled
  code is reused: in one process dynamo serves every new model of the same
  configuration (the other seeds) from its cache; across processes, inductor's on-disk
  cache does.

Fast mode changes the arithmetic (bf16), so its runs are separate cells
(``gradbench.cells``); tests/test_fast.py checks that its final loss stays within the
seed-to-seed spread of fp32 eager on a short run.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import nn

from gradbench import layout
from gradbench.config import TrainConfig
from gradbench.task import Task

# The torch.compile backend: inductor generates fused C++/Triton kernels. "aot_eager"
# traces forward and backward without generating code (no C++ compiler needed; the
# tests use it, since inductor takes minutes to compile on a loaded 2-core machine).
BACKEND_ENV = "GRADBENCH_COMPILE_BACKEND"


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX or AVX512-BF16; Linux's flags)."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = set(handle.read().split())
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def bf16_pays_off(device: torch.device) -> tuple[bool, str | None]:
    if device.type == "cuda":
        return True, None
    if device.type == "cpu" and cpu_has_bf16():
        return True, None
    return False, f"no bf16 units on this {device.type} (AMX or AVX512-BF16): stays fp32"


def compile_decision(task: Task, config: TrainConfig) -> tuple[bool, str | None]:
    """(compile?, why not) for this run."""
    if task.input_spec().kind != "image":
        return False, "sequence model: variable lengths would recompile"
    if config.probes != "off":
        return False, "probes on: their hooks change between steps and would recompile"
    return True, None


def prepare(
    model: nn.Module, task: Task, config: TrainConfig, device: torch.device
) -> tuple[nn.Module, dict[str, Any]]:
    """(the module the training step calls, what fast mode did); the model is on ``device``.

    Without ``config.fast`` the model itself and an empty dict. ``model`` keeps its
    identity (the optimiser, the probes and evaluation use it); only the training
    forward goes through the compiled wrapper.
    """
    if not config.fast:
        return model, {}
    bf16, why_not = bf16_pays_off(device)
    info: dict[str, Any] = {
        "bf16_autocast": bf16,
        "bf16_skipped": why_not,
        "channels_last": False,
        "compiled": False,
        "compile_seconds": 0.0,
        "compile_skipped": None,
    }
    wanted, reason = compile_decision(task, config)
    # Eager channels-last batch norm on the CPU computes its backward less precisely
    # (gradbench.layout: plain-20's first-step gradients off by up to 6.5%); compiled,
    # inductor generates its own kernels, as precise as the contiguous ones (resnet-20:
    # 2.9e-3 against float64, contiguous eager 3.5e-3, channels-last eager 2.1e-2).
    if device.type != "cpu" or wanted:
        info["channels_last"] = layout.to_channels_last(model)
    elif any(isinstance(m, (nn.Conv2d, nn.Conv3d)) for m in model.modules()):
        info["channels_last_skipped"] = (
            "not compiled: eager channels-last batch norm on the CPU loses gradient precision"
        )
    if not wanted:
        info["compile_skipped"] = reason
        return model, info
    backend = os.environ.get(BACKEND_ENV) or "inductor"
    compiled = torch.compile(model, dynamic=False, backend=backend)
    info["compiled"] = True
    info["compile_backend"] = backend
    info["compile_seconds"] = warm_up(compiled, model, task, config, device, bf16=bf16)
    return compiled, info


def warm_up(
    compiled: nn.Module,
    model: nn.Module,
    task: Task,
    config: TrainConfig,
    device: torch.device,
    *,
    bf16: bool,
) -> float:
    """Compile forward and backward on a batch of the training shape; seconds taken.

    The weights, buffers (batch-norm statistics) and the RNG are put back afterwards,
    so the run trains exactly as if the warm-up had not happened.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    batch = task.fake_batch(config.batch_size).to(device)
    x = batch.x.contiguous(memory_format=torch.channels_last) if batch.x.dim() == 4 else batch.x
    started = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        output = compiled(x)
    # Any scalar of the output compiles the same backward graph; the task's loss could
    # have side effects (counters) that the real first step must see first.
    output.float().sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    model.zero_grad(set_to_none=True)
    model.load_state_dict(state)
    torch.set_rng_state(rng)
    return seconds
