"""Running statistics of the pipeline: rates, latency windows and per-input bad-input bookkeeping. Thread-safe, so
the node's callbacks, worker and diagnostics timer may use them concurrently."""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Deque, Dict, Iterable, List, Optional, Tuple

from ..reporting import percentile
from ..sync import NS_PER_S


class RateMeter:
    """Events per second over the last `window` events (None until two were seen or once `stale_s` passed)."""

    def __init__(self, window: int = 20, stale_s: float = 2.0):
        self._times: Deque[int] = deque(maxlen=window)
        self._stale_ns = int(stale_s * NS_PER_S)
        self._lock = threading.Lock()
        self.count = 0

    def tick(self, now_ns: int) -> None:
        with self._lock:
            self._times.append(now_ns)
            self.count += 1

    def rate(self, now_ns: int) -> Optional[float]:
        with self._lock:
            if len(self._times) < 2 or now_ns - self._times[-1] > self._stale_ns:
                return None
            span = self._times[-1] - self._times[0]
            return (len(self._times) - 1) * NS_PER_S / span if span > 0 else None


class LatencyWindow:
    """The last `size` samples (ms; every sample when size is None) and their p50 / p95."""

    def __init__(self, size: Optional[int] = 200):
        self._samples: Deque[float] = deque(maxlen=size)
        self._lock = threading.Lock()

    def add(self, ms: float) -> None:
        with self._lock:
            self._samples.append(float(ms))

    def samples(self) -> List[float]:
        with self._lock:
            return list(self._samples)

    def percentiles(self) -> Optional[Tuple[float, float]]:
        samples = self.samples()
        if not samples:
            return None
        return percentile(samples, 50), percentile(samples, 95)


@dataclass
class InputErrors:
    count: int = 0
    last_error: str = ""
    last_error_ns: Optional[int] = None


class InputHealth:
    """Bad-input bookkeeping per input: how many, the last reason and when. Thread-safe."""

    def __init__(self, names: Iterable[str]):
        self._lock = threading.Lock()
        self._errors: Dict[str, InputErrors] = {name: InputErrors() for name in names}

    def record(self, name: str, reason: str, now_ns: int) -> None:
        with self._lock:
            entry = self._errors.setdefault(name, InputErrors())
            entry.count += 1
            entry.last_error, entry.last_error_ns = reason, now_ns

    def get(self, name: str) -> InputErrors:
        with self._lock:
            entry = self._errors.get(name, InputErrors())
            return InputErrors(entry.count, entry.last_error, entry.last_error_ns)

    def recent(self, name: str, now_ns: int, hold_s: float) -> Optional[str]:
        """The last error of `name` if it happened within `hold_s`, else None."""
        entry = self.get(name)
        if entry.last_error_ns is None or now_ns - entry.last_error_ns > hold_s * NS_PER_S:
            return None
        return entry.last_error




class LostMessages:
    """Messages the middleware reported lost for one input: the total and when, to tell recent loss from old."""

    def __init__(self, keep: int = 256):
        self._events: Deque[Tuple[int, int]] = deque(maxlen=keep)  # (time ns, count)
        self._lock = threading.Lock()
        self.total = 0

    def add(self, count: int, now_ns: int) -> None:
        if count <= 0:
            return
        with self._lock:
            self._events.append((now_ns, int(count)))
            self.total += int(count)

    def recent(self, now_ns: int, window_s: float) -> int:
        """How many were lost within `window_s` before `now_ns`."""
        with self._lock:
            return sum(n for t, n in self._events if now_ns - t <= window_s * NS_PER_S)
