"""The leader arm's own Dynamixel bus, read-only, over the real dynamixel_sdk.

The leader is moved by hand, so its servos only report: `connect()` opens the port at the
leader file's baud rate, pings every configured id and checks its model (a missing or wrong
servo raises `LeaderBusError` naming its id), and switches torque off; `read_ticks()` is one
sync read of Present Position per control tick. Nothing else is written: the leader keeps
Homing Offset 0 and Drive Mode 0, as its calibration lives in its YAML file, like the
follower's. Plain module: no rclpy.
"""

from __future__ import annotations

import logging

import numpy as np
from dynamixel_sdk import COMM_SUCCESS, GroupSyncRead, PacketHandler, PortHandler

from armstack_common.servo_config import ServoBusConfig

logger = logging.getLogger(__name__)

ADDR_TORQUE_ENABLE = 64
ADDR_PRESENT_POSITION = 132
LEN_PRESENT_POSITION = 4


class LeaderBusError(RuntimeError):
    """The leader bus failed; the message names the port or the servo ids."""


class LeaderBus:
    """Read-only access to the leader's servos (one `ServoBusConfig`)."""

    def __init__(self, config: ServoBusConfig, port: str | None = None) -> None:
        self.config = config
        self.port_name = port or config.port
        self._port: PortHandler | None = None
        self._packet = PacketHandler(config.protocol_version)
        self._sync: GroupSyncRead | None = None

    @property
    def connected(self) -> bool:
        return self._port is not None

    def connect(self) -> None:
        """Open the port, check every servo, switch torque off; raises LeaderBusError."""
        port = PortHandler(self.port_name)
        try:
            opened = port.openPort()
        except OSError as exc:  # pyserial raises SerialException (an OSError) for a missing port
            raise LeaderBusError(f"leader bus: cannot open {self.port_name}: {exc}") from exc
        if not opened or not port.setBaudRate(self.config.baudrate):
            port.closePort()
            raise LeaderBusError(f"leader bus: cannot open {self.port_name} at {self.config.baudrate} baud")
        try:
            self._check_servos(port)
            for joint in self.config.joints:
                result, error = self._packet.write1ByteTxRx(port, joint.servo_id, ADDR_TORQUE_ENABLE, 0)
                if result != COMM_SUCCESS or error:
                    raise LeaderBusError(
                        f"leader bus: servo {joint.servo_id} ({joint.joint}) refused torque off: "
                        f"{self._describe(result, error)}"
                    )
        except LeaderBusError:
            port.closePort()
            raise
        sync = GroupSyncRead(port, self._packet, ADDR_PRESENT_POSITION, LEN_PRESENT_POSITION)
        for servo_id in self.config.ids:
            sync.addParam(servo_id)
        self._port, self._sync = port, sync
        logger.info("leader bus on %s: %d servos, torque off", self.port_name, len(self.config.joints))

    def _check_servos(self, port: PortHandler) -> None:
        problems = []
        for joint in self.config.joints:
            model, result, error = self._packet.ping(port, joint.servo_id)
            if result != COMM_SUCCESS:
                problems.append(f"servo {joint.servo_id} ({joint.joint}): {self._describe(result, error)}")
            elif model != joint.model.model_number:
                problems.append(
                    f"servo {joint.servo_id} ({joint.joint}): model number {model}, expected "
                    f"{joint.model.model_number} ({joint.model.name})"
                )
        if problems:
            raise LeaderBusError(f"leader bus on {self.port_name}: {'; '.join(problems)}")

    def _describe(self, result: int, error: int) -> str:
        if result != COMM_SUCCESS:
            return self._packet.getTxRxResult(result)
        return self._packet.getRxPacketError(error)

    def read_ticks(self) -> np.ndarray:
        """Present Position of every servo, in the config's joint order. (J,) int64 ticks"""
        if self._port is None or self._sync is None:
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
        if self._port is not None:
            self._port.closePort()
        self._port = self._sync = None
