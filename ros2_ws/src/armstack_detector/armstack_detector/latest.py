"""A one-slot mailbox between a subscription callback and a worker thread.

The detector must always work on the freshest frame: inference takes longer than a frame
period on small machines, and queueing frames would add their wait to every result. The
callback `put`s each frame; a frame still pending when the next arrives is replaced and
counted as skipped; the worker `take`s whatever is newest.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: T | None = None
        self._closed = False
        self.skipped = 0  # items replaced before the worker took them

    def put(self, item: T) -> bool:
        """Offer the newest item; True if it replaced one the worker had not taken."""
        with self._cond:
            replaced = self._item is not None
            if replaced:
                self.skipped += 1
            self._item = item
            self._cond.notify()
            return replaced

    def take(self, timeout_s: float | None = None) -> T | None:
        """The newest item (emptying the slot), or None on timeout or once closed."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout_s)
            if self._closed:
                return None
            item, self._item = self._item, None
            return item

    def close(self) -> None:
        """Wake the worker for good: every later `take` returns None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
