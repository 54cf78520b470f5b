"""Small helpers for the numbers a tool prints: percentiles, medians in ms and Markdown tables. Shared by the
pipeline's diagnostics, replay reports, model info, evaluation tables and the benchmarks."""
from __future__ import annotations

import statistics
from typing import Iterable, Optional, Sequence


def median_ms(samples: Sequence[float]) -> float:
    """The median of samples in seconds, in milliseconds."""
    return 1000.0 * statistics.median(samples)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100]) of a non-empty sequence."""
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, int(round(q / 100.0 * (len(ordered) - 1)))))
    return ordered[rank]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]],
                   align_first_left: Optional[bool] = None) -> str:
    """A GitHub Markdown table; floats printed with 2 decimals. `align_first_left` None leaves the alignment to the
    renderer; True or False right-aligns the numeric columns (paper-style tables), the first column left if True."""
    def cell(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    if align_first_left is None:
        rule = ["---"] * len(header)
    else:
        rule = [":---" if (i == 0 and align_first_left) else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
