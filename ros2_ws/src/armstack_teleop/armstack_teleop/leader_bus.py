"""The leader arm's own Dynamixel bus, read-only, over the real dynamixel_sdk.

The leader is moved by hand, so its servos only report: `connect()` opens the port at the
leader file's baud rate, pings every configured id and checks its model (a missing or wrong
servo raises `LeaderBusError` naming its id), and switches torque off; `read_ticks()` is one
sync read of Present Position per control tick. Nothing else is written: the leader keeps
Homing Offset 0 and Drive Mode 0, as its calibration lives in its YAML file, like the
follower's. Connecting goes through the follower driver's `DynamixelBus` (its pings and
writes retry a lost or late status packet and drop a late reply before the next request); the
per-tick read is a plain sync read, as a tick that fails is simply reported. Plain module: no
rclpy.
"""

from __future__ import annotations

import logging

import numpy as np
from armstack_driver.bus import ADDR_TORQUE_ENABLE, BusError, DynamixelBus
from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler

from armstack_common.servo_config import ServoBusConfig

logger = logging.getLogger(__name__)

ADDR_PRESENT_POSITION = 132
LEN_PRESENT_POSITION = 4


class LeaderBusError(RuntimeError):
    """The leader bus failed; the message names the port or the servo ids."""


class LeaderBus:
    """Read-only access to the leader's servos (one `ServoBusConfig`)."""

    def __init__(self, config: ServoBusConfig, port: str | None = None) -> None:
        self.config = config
        self.port_name = port or config.port
        self._bus = DynamixelBus(config, self.port_name)
        self._packet = PacketHandler(config.protocol_version)
        self._sync: GroupSyncRead | None = None

    @property
    def connected(self) -> bool:
        return self._sync is not None

    def connect(self) -> None:
        """Open the port, check every servo, switch torque off; raises LeaderBusError."""
        try:
            self._bus.connect()
            for joint in self.config.joints:
                self._bus.write_register(joint.servo_id, ADDR_TORQUE_ENABLE, 1, 0)
        except BusError as exc:
            self._bus.disconnect()
            raise LeaderBusError(f"leader bus on {self.port_name}: {exc}") from exc
        sync = GroupSyncRead(self._bus.port_handler, self._packet, ADDR_PRESENT_POSITION,
                             LEN_PRESENT_POSITION)
        for servo_id in self.config.ids:
            sync.addParam(servo_id)
        self._sync = sync
        logger.info("leader bus on %s: %d servos, torque off", self.port_name, len(self.config.joints))

    def read_ticks(self) -> np.ndarray:
        """Present Position of every servo, in the config's joint order. (J,) int64 ticks"""
        if self._sync is None:
            raise LeaderBusError("leader bus: not connected")
        result = self._sync.txRxPacket()
        missing = [
            servo_id for servo_id in self.config.ids
            if not self._sync.isAvailable(servo_id, ADDR_PRESENT_POSITION, LEN_PRESENT_POSITION)
        ]
        if result != COMM_SUCCESS or missing:
            raise LeaderBusError(
                f"leader bus: sync read failed ({self._packet.getTxRxResult(result)}); "
                f"no reply from servo(s) {missing}"
            )
        raw = np.array(
            [self._sync.getData(i, ADDR_PRESENT_POSITION, LEN_PRESENT_POSITION) for i in self.config.ids],
            dtype=np.int64,
        )
        # Present Position is a signed 32-bit register; getData returns it unsigned.
        return np.where(raw >= 2**31, raw - 2**32, raw)

    def close(self) -> None:
        self._bus.disconnect()
        self._sync = None
