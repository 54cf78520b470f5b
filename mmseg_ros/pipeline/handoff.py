"""The node's worker hand-off: a one-item mailbox where the newest set wins. Plain threading, no ROS."""
from __future__ import annotations

import threading
from typing import Generic, Iterable, Optional, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox: `put` replaces what is waiting (latest wins; the replaced item is counted as superseded),
    `take` waits for an item. Thread-safe."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Optional[T] = None
        self._closed = False
        self.put_count = 0
        self.taken = 0
        self.superseded = 0

    def put(self, item: T) -> Optional[T]:
        """Offer an item; returns the one it replaced (already counted) or None."""
        with self._cond:
            replaced, self._item = self._item, item
            self.put_count += 1
            if replaced is not None:
                self.superseded += 1
            self._cond.notify()
            return replaced

    def put_all(self, items: Iterable[T]) -> None:
        for item in items:
            self.put(item)

    def take(self, timeout: float) -> Optional[T]:
        """The waiting item (then the slot is empty), or None after `timeout` s or once closed."""
        with self._cond:
            if self._item is None and not self._closed:
                self._cond.wait(timeout)
            item, self._item = self._item, None
            if item is not None:
                self.taken += 1
            return item

    def close(self) -> None:
        """Wake every waiter; later `take` calls return at once."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        with self._cond:
            return int(self._item is not None)


