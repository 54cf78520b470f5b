"""Benchmark helpers: repeated timing and the autocast context; the numbers are printed with `reporting`."""
from __future__ import annotations

import time
from typing import Callable, List


def time_call(fn: Callable[[], object], repeat: int = 7, warmup: int = 1) -> List[float]:
    """Seconds per call for `repeat` calls after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return samples


def autocast(device, precision: str):
    """The precision policy's autocast context, refusing a half precision off CUDA: a benchmark row labelled fp16
    must not quietly measure fp32."""
    from .. import precision as precisions
    from ..errors import ConfigError

    if precisions.effective(precision, device) != precisions.check(precision, "--precision"):
        raise ConfigError(f"--precision {precision} needs a CUDA device (autocast on CUDA only), got {device}")
    return precisions.autocast(device, precision)
