"""Shared helpers for benchmarks: repeated timing with medians, and Markdown tables."""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Callable, Iterable, List, Sequence


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


def median_ms(samples: Sequence[float]) -> float:
    return 1000.0 * statistics.median(samples)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[rank]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats printed with 2 decimals."""
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def autocast(device, precision: str):
    """A fresh autocast context for `precision` ('fp32', 'bf16', 'fp16'; half precisions on CUDA only, as in the
    engine and the trainer); fp32 is a no-op."""
    import torch

    from ..engine import PRECISIONS
    from ..errors import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ConfigError(f"--precision {precision} needs a CUDA device (autocast on CUDA only), got {device}")
    return torch.autocast("cuda", dtype=PRECISIONS[precision])
