"""The run's metrics: one record per logging interval or validation, kept as JSONL (the source) and CSV (for
spreadsheets), both rewritten atomically so a killed run never leaves a torn line behind.

Records carry `kind` ("train" or "val") and the optimiser step `iteration` they belong to. A resumed run reloads the
file and drops records newer than its checkpoint, so the log reads as if the run had never stopped.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import List, Optional

from ..atomic import atomic_open

JSONL_NAME = "metrics.jsonl"
CSV_NAME = "metrics.csv"


class MetricsLog:
    def __init__(self, out_dir, enabled: bool = True, resume_iteration: Optional[int] = None):
        self.out_dir = Path(out_dir)
        self.enabled = enabled
        self.records: List[dict] = []
        if resume_iteration is not None:
            self.records = [r for r in read(self.out_dir / JSONL_NAME) if r.get("iteration", 0) <= resume_iteration]

    def add(self, record: dict) -> None:
        self.records.append({k: _plain(v) for k, v in record.items()})

    def flush(self) -> None:
        if not self.enabled:
            return
        with atomic_open(self.out_dir / JSONL_NAME, "w") as f:
            for record in self.records:
                f.write(json.dumps(record) + "\n")
        with atomic_open(self.out_dir / CSV_NAME, "w") as f:
            f.write(to_csv(self.records))


def read(path) -> List[dict]:
    """Records of a JSONL metrics file (empty if there is none)."""
    path = Path(path)
    if not path.exists():
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def to_csv(records: List[dict]) -> str:
    columns: List[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return buffer.getvalue()


def _plain(value):
    """JSON-safe scalars: tensors and numpy numbers become floats/ints, NaN becomes null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
