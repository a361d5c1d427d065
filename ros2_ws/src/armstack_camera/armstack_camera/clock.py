"""Map a device's own clock to the host's, so frames carry their capture time in ROS time.

A camera that stamps frames with its hardware clock gives exact intervals but an unknown
offset to the host clock. Each frame gives one sample of host_receive - device_stamp =
offset + transport latency, with latency >= 0; the smallest sample is the best estimate of
the offset (the frame that travelled fastest), so the estimate follows the minimum. It may
creep upward slowly (`drift_rate`) so that a device clock running slower than the host's
is followed too, and it restarts when the device clock jumps back (device reset) or the
latency implied would exceed `max_latency_s` (the device clock jumped or a long stall).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClockMapperConfig:
    # Largest believable device-to-host delay; beyond it the mapping restarts.
    max_latency_s: float = 0.5
    # How fast the offset estimate may rise, s per s of device time (crystals drift < 1e-4).
    drift_rate: float = 1e-4

    def __post_init__(self) -> None:
        if self.max_latency_s <= 0.0:
            raise ValueError(f"max_latency_s must be > 0, got {self.max_latency_s}")
        if not 0.0 <= self.drift_rate < 0.01:
            raise ValueError(f"drift_rate must be in [0, 0.01), got {self.drift_rate}")


class DeviceClockMapper:
    def __init__(self, config: ClockMapperConfig | None = None) -> None:
        self.config = config or ClockMapperConfig()
        self._offset: float | None = None
        self._last_device: float = 0.0
        self.resets = 0

    def to_host(self, device_s: float, host_receive_s: float) -> float:
        """Host time of the capture stamped `device_s`, given the host time it arrived."""
        sample = host_receive_s - device_s
        if self._offset is not None and device_s >= self._last_device:
            offset = self._offset + self.config.drift_rate * (device_s - self._last_device)
            if sample - offset <= self.config.max_latency_s:
                self._offset = min(offset, sample)
                self._last_device = device_s
                return device_s + self._offset
        if self._offset is not None:
            self.resets += 1
        self._offset = sample
        self._last_device = device_s
        return device_s + sample
