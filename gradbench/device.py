"""Accelerator settings of a run: determinism and cuDNN, set before the model is built.

Every setting here is recorded in the run's environment (``records.environment``), so
two records say whether they could have differed by kernel choice alone.
"""

from __future__ import annotations

import os

import torch

from gradbench.config import TrainConfig
from gradbench.errors import UsageError

# cuBLAS needs a fixed workspace to be deterministic; it reads this when CUDA starts.
CUBLAS_DETERMINISTIC = ":4096:8"


def configure(device: torch.device, config: TrainConfig) -> None:
    """Determinism and cuDNN for one run (a worker may run cells with other settings)."""
    deterministic = bool(config.deterministic)
    if deterministic and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    # Raises on an op that has no deterministic kernel rather than silently varying.
    torch.use_deterministic_algorithms(deterministic)
    if device.type == "cuda":
        # Autotuned convolution kernels are the fastest, but the choice can vary between
        # runs; deterministic mode gives the speed up for reproducibility.
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        wants_bf16 = config.precision == "bf16" or config.fast
        if wants_bf16 and not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name(device)
            raise UsageError(f"bf16 (--precision bf16 or --fast) is not supported on {name}")


def accelerator_environment() -> dict[str, object]:
    """CUDA and cuDNN versions and settings, for the record's environment."""
    cudnn = torch.backends.cudnn
    return {
        "cuda": torch.version.cuda,
        "cudnn": cudnn.version() if cudnn.is_available() else None,
        "cudnn_benchmark": bool(cudnn.benchmark),
        "cudnn_deterministic": bool(cudnn.deterministic),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }
