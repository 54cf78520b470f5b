"""The one precision policy of inference, evaluation, training and the benchmarks: the names a user may give, their
torch dtypes, and the autocast rule. Half precisions run under CUDA autocast only: CPU autocast in fp16 is slow or
unsupported for many SAM2 ops, so on a CPU they mean fp32.

No torch import at module level: the node validates its parameters before it pays for torch.
"""
from __future__ import annotations

import contextlib

from .errors import ConfigError

FP32, FP16, BF16 = "fp32", "fp16", "bf16"
NAMES = (FP32, FP16, BF16)


def check(name: str, what: str = "precision") -> str:
    if name not in NAMES:
        raise ConfigError(f"{what} must be one of {list(NAMES)}, got {name!r}")
    return name


def dtype(name: str):
    """The torch dtype of a precision name."""
    import torch

    return {FP32: torch.float32, FP16: torch.float16, BF16: torch.bfloat16}[check(name)]


def needs_grad_scaling(name: str) -> bool:
    """fp16's narrow exponent underflows small gradients; bf16 and fp32 train without a GradScaler."""
    return check(name) == FP16


def effective(name: str, device) -> str:
    """What actually runs on `device` (a torch.device): the half precisions on CUDA, fp32 anywhere else."""
    return check(name) if device.type == "cuda" else FP32


def autocast(device, name: str):
    """A fresh autocast context for `name` on `device`: CUDA autocast for a half precision on a CUDA device, a no-op
    otherwise (see `effective`)."""
    import torch

    if effective(name, device) == FP32:
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=dtype(name))
