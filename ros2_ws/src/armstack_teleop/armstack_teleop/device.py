"""A device that may be absent: opened on demand, retried at a fixed period, reopened after a failure.

The gamepad and the leader bus are plugged in and out while the node runs; the node keeps
running (services, episode topic) and says what is wrong instead of exiting. `RetryingDevice`
holds the open device or the reason it is missing, and rate-limits attempts to reopen it.
Plain module: no rclpy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class RetryingDevice(Generic[T]):
    """`get(now)` returns the open device, opening it when due; `fail` drops it for a retry."""

    def __init__(
        self,
        opener: Callable[[], T],
        closer: Callable[[T], None],
        retry_period: float,
        expected: tuple[type[BaseException], ...],
    ) -> None:
        if not retry_period > 0.0:
            raise ValueError(f"RetryingDevice.retry_period must be > 0, got {retry_period}")
        self._opener = opener
        self._closer = closer
        self._expected = expected  # errors that mean "not there (yet)", not bugs
        self.retry_period = retry_period
        self.device: T | None = None
        self.error: str | None = None  # why the device is not open
        self.connects = 0  # successful opens so far
        self._acknowledged = 0  # value of `connects` the caller has resynchronized to
        self._reported: str | None = None  # last error handed out by new_error()
        self._next_try = float("-inf")

    def get(self, now: float) -> T | None:
        """The open device, or None (then `error` says why). Opens at most once per period."""
        if self.device is None and now >= self._next_try:
            try:
                self.device = self._opener()
            except self._expected as exc:
                self._next_try = now + self.retry_period
                self.error = str(exc)
                return None
            self.error = None
            self.connects += 1
        return self.device

    @property
    def just_connected(self) -> bool:
        """True until `acknowledge()`: lets the caller resynchronize after each (re)open."""
        return self.device is not None and self._acknowledged != self.connects

    def acknowledge(self) -> None:
        self._acknowledged = self.connects

    def new_error(self) -> str | None:
        """The current error if it differs from the last one returned (so each is logged once)."""
        if self.error == self._reported:
            return None
        self._reported = self.error
        return self.error

    def fail(self, now: float, reason: str) -> None:
        """The device stopped working: close it and try again after the retry period."""
        if self.device is not None:
            self._closer(self.device)
        self.device = None
        self.error = reason
        self._next_try = now + self.retry_period

    def close(self) -> None:
        if self.device is not None:
            self._closer(self.device)
            self.device = None
