"""A daisy chain of emulated servos: instruction packets in, status packets out.

Bus-level rules (ROBOTIS e-manual, Protocol 2.0 and X-series control table):
- a servo only hears packets at its own baud rate and protocol; it ignores status packets;
- PING is always answered; otherwise Status Return Level 0 answers nothing, 1 only reads, 2 all;
- broadcast READ/WRITE/REG WRITE/ACTION/REBOOT get no status; SYNC/BULK READ are answered by the
  listed servos in list order; FAST SYNC/BULK READ return one combined packet;
- a well-framed packet with a bad CRC addressed to a servo is answered with CRC Error (0x03);
  an unknown instruction with Instruction Error (0x02); Action without Reg Write likewise;
- every status packet carries the Alert bit (0x80) while Hardware Error Status is non-zero;
- any valid instruction addressed to a servo (or broadcast) feeds its Bus Watchdog.

Malformed parameter lengths are answered with Data Length Error (0x05); the manual leaves this
case open, and it is the error a driver can most easily act on.

Plain module: no rclpy, no I/O, not thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from armstack_sim.dynamixel_protocol import (
    ALERT_BIT,
    BROADCAST_ID,
    Instruction,
    Packet,
    StatusError,
    encode_fast_status,
    encode_status,
)
from armstack_sim.dynamixel_servo import EmulatedServo, WriteOutcome
from armstack_sim.dynamixel_table import BAUD_RATES

logger = logging.getLogger(__name__)

_CLEAR_MULTI_TURN = bytes((0x01, 0x44, 0x58, 0x4C, 0x22))
_FACTORY_RESET_OPTIONS = (0x01, 0x02, 0xFF)


@dataclass(frozen=True)
class Reply:
    """One status packet as a servo puts it on the wire, after its Return Delay Time."""

    servo_id: int
    data: bytes
    delay_s: float


class _Slot:
    """Bus-side state of one servo: fault injection and reboot blackout."""

    def __init__(self, servo: EmulatedServo) -> None:
        self.servo = servo
        self.connected = True
        self.offline_until = 0.0

    def hears(self, now: float, host_baud: int | None) -> bool:
        if not self.connected or now < self.offline_until or self.servo.get("protocol_type") != 2:
            return False
        return host_baud is None or BAUD_RATES[self.servo.get("baud_rate")] == host_baud


class ServoChain:
    def __init__(self, servos: list[EmulatedServo], reboot_duration_s: float = 0.05) -> None:
        self.slots = [_Slot(servo) for servo in servos]
        self.reboot_duration_s = reboot_duration_s
        self._deferred: list[Callable[[float], None]] = []
        self._handlers: dict[int, Callable[[Packet, list[_Slot], float], list[Reply]]] = {
            Instruction.PING: self._ping,
            Instruction.READ: self._read,
            Instruction.WRITE: self._write,
            Instruction.REG_WRITE: self._reg_write,
            Instruction.ACTION: self._action,
            Instruction.FACTORY_RESET: self._factory_reset,
            Instruction.REBOOT: self._reboot,
            Instruction.CLEAR: self._clear,
            Instruction.SYNC_READ: self._sync_read,
            Instruction.FAST_SYNC_READ: self._sync_read,
            Instruction.SYNC_WRITE: self._sync_write,
            Instruction.BULK_READ: self._bulk_read,
            Instruction.FAST_BULK_READ: self._bulk_read,
            Instruction.BULK_WRITE: self._bulk_write,
        }

    def slot_of(self, servo: EmulatedServo) -> _Slot:
        for slot in self.slots:
            if slot.servo is servo:
                return slot
        raise KeyError("servo is not on this chain")

    def handle(self, packet: Packet, now: float, host_baud: int | None = None) -> list[Reply]:
        """Process one received packet; returns the status packets in wire order."""
        listeners = [slot for slot in self.slots if slot.hears(now, host_baud)]
        if not listeners or packet.instruction == Instruction.STATUS:
            return []
        addressed = [s for s in listeners if packet.servo_id in (s.servo.servo_id, BROADCAST_ID)]
        if not packet.crc_ok:
            logger.debug("CRC error in packet for id %d", packet.servo_id)
            return self._unicast_error(packet, addressed, StatusError.CRC)
        for slot in addressed:
            slot.servo.note_instruction(now)
        handler = self._handlers.get(packet.instruction)
        if handler is None:
            replies = self._unicast_error(packet, addressed, StatusError.INSTRUCTION)
        else:
            replies = handler(packet, addressed, now)
        for effect in self._deferred:
            effect(now)
        self._deferred.clear()
        return replies

    def check_watchdogs(self, now: float) -> None:
        for slot in self.slots:
            slot.servo.check_watchdog(now)

    # ------------------------------------------------------------------------ helpers
    @staticmethod
    def _status(servo: EmulatedServo, error: int, params: bytes = b"") -> Reply:
        if servo.hardware_error:
            error |= ALERT_BIT
        return Reply(servo.servo_id, encode_status(servo.servo_id, error, params), servo.return_delay_s)

    @staticmethod
    def _answers(servo: EmulatedServo, is_read: bool) -> bool:
        level = servo.get("status_return_level")
        return level == 2 or (level == 1 and is_read)

    def _unicast_error(self, packet: Packet, addressed: list[_Slot], error: StatusError) -> list[Reply]:
        if packet.servo_id == BROADCAST_ID:
            return []
        return [self._status(s.servo, error) for s in addressed if self._answers(s.servo, False)]

    def _finish_write(self, slot: _Slot, outcome: WriteOutcome) -> None:
        servo = slot.servo
        if outcome.new_id is not None:
            self._deferred.append(lambda now, new=outcome.new_id: servo.apply_new_id(new))
        if outcome.new_baud_index is not None:
            self._deferred.append(lambda now, new=outcome.new_baud_index: servo.apply_new_baud(new))

    def _go_offline(self, slot: _Slot, action: Callable[[], None]) -> None:
        def effect(now: float) -> None:
            action()
            slot.offline_until = now + self.reboot_duration_s

        self._deferred.append(effect)

    def _find(self, addressed: list[_Slot], servo_id: int) -> _Slot | None:
        for slot in addressed:
            if slot.servo.servo_id == servo_id:
                return slot
        return None

    # ----------------------------------------------------------------- single-servo
    def _ping(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        replies = []
        for slot in sorted(addressed, key=lambda s: s.servo.servo_id):
            servo = slot.servo
            model = servo.get("model_number")
            params = bytes((model & 0xFF, model >> 8, servo.get("firmware_version")))
            replies.append(self._status(servo, StatusError.NONE, params))
        return replies

    def _read(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        if packet.servo_id == BROADCAST_ID or not addressed:
            return []
        servo = addressed[0].servo
        if not self._answers(servo, True):
            return []
        if len(packet.params) != 4:
            return [self._status(servo, StatusError.DATA_LENGTH)]
        address, length = _u16(packet.params, 0), _u16(packet.params, 2)
        error, data = servo.read(address, length, now)
        return [self._status(servo, error, data)]

    def _write(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        replies = []
        for slot in addressed:
            if len(packet.params) < 3:
                outcome = WriteOutcome(StatusError.DATA_LENGTH)
            else:
                outcome = slot.servo.write(_u16(packet.params, 0), packet.params[2:], now)
                self._finish_write(slot, outcome)
            if packet.servo_id != BROADCAST_ID and self._answers(slot.servo, False):
                replies.append(self._status(slot.servo, outcome.error))
        return replies

    def _reg_write(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        replies = []
        for slot in addressed:
            if len(packet.params) < 3:
                error = StatusError.DATA_LENGTH
            else:
                error = slot.servo.register_write(_u16(packet.params, 0), packet.params[2:])
            if packet.servo_id != BROADCAST_ID and self._answers(slot.servo, False):
                replies.append(self._status(slot.servo, error))
        return replies

    def _action(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        replies = []
        for slot in addressed:
            pending = slot.servo.take_registered()
            if pending is None:
                error = StatusError.INSTRUCTION
            else:
                outcome = slot.servo.write(pending[0], pending[1], now)
                self._finish_write(slot, outcome)
                error = outcome.error
            if packet.servo_id != BROADCAST_ID and self._answers(slot.servo, False):
                replies.append(self._status(slot.servo, error))
        return replies

    def _factory_reset(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        option = packet.params[0] if len(packet.params) == 1 else None
        if packet.servo_id == BROADCAST_ID and option == 0xFF:
            return []  # refused by X-series firmware v42+: it would give every servo ID 1
        replies = []
        for slot in addressed:
            error = StatusError.NONE if option in _FACTORY_RESET_OPTIONS else StatusError.DATA_RANGE
            if packet.servo_id != BROADCAST_ID and self._answers(slot.servo, False):
                replies.append(self._status(slot.servo, error))
            if error == StatusError.NONE:
                self._go_offline(slot, lambda servo=slot.servo: servo.factory_reset(option))
        return replies

    def _reboot(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        replies = []
        for slot in addressed:
            if packet.servo_id != BROADCAST_ID and self._answers(slot.servo, False):
                replies.append(self._status(slot.servo, StatusError.NONE))
            self._go_offline(slot, slot.servo.power_on)
        return replies

    def _clear(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        replies = []
        for slot in addressed:
            if packet.params == _CLEAR_MULTI_TURN:
                error = slot.servo.clear_multi_turn()
            else:
                error = StatusError.DATA_RANGE
            if packet.servo_id != BROADCAST_ID and self._answers(slot.servo, False):
                replies.append(self._status(slot.servo, error))
        return replies

    # -------------------------------------------------------------------- group (broadcast)
    def _group_read(self, requests: list[tuple[int, int, int]], addressed: list[_Slot], now: float,
                    fast: bool) -> list[Reply]:
        """Answer [(id, address, length)] in order; a missing servo leaves a gap on the wire."""
        replies: list[Reply] = []
        chunks: list[tuple[int, int, bytes]] = []
        first_delay = None
        seen: set[int] = set()
        for servo_id, address, length in requests:
            slot = self._find(addressed, servo_id)
            if slot is None or servo_id in seen or not self._answers(slot.servo, True):
                continue
            seen.add(servo_id)
            servo = slot.servo
            error, data = servo.read(address, length, now)
            if not fast:
                replies.append(self._status(servo, error, data))
                continue
            first_delay = servo.return_delay_s if first_delay is None else first_delay
            alert = ALERT_BIT if servo.hardware_error else 0
            chunks.append((error | alert, servo_id, data if data else bytes(length)))
        if fast and chunks:
            packet = encode_fast_status(chunks)
            listed = {servo_id: length for servo_id, _, length in reversed(requests)}
            if len(chunks) < len(listed):
                # A silent servo leaves its bytes out while the header claims the whole packet,
                # so the host waits for bytes that never come, as on a real bus.
                length = 1 + sum(size + 4 for size in listed.values())
                packet = packet[:5] + length.to_bytes(2, "little") + packet[7:]
            replies.append(Reply(BROADCAST_ID, packet, first_delay or 0.0))
        return replies

    def _sync_read(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        if packet.servo_id != BROADCAST_ID or len(packet.params) < 5:
            return []
        address, length = _u16(packet.params, 0), _u16(packet.params, 2)
        requests = [(servo_id, address, length) for servo_id in packet.params[4:]]
        return self._group_read(requests, addressed, now, packet.instruction == Instruction.FAST_SYNC_READ)

    def _bulk_read(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        params = packet.params
        if packet.servo_id != BROADCAST_ID or not params or len(params) % 5:
            return []
        requests = [(params[i], _u16(params, i + 1), _u16(params, i + 3)) for i in range(0, len(params), 5)]
        return self._group_read(requests, addressed, now, packet.instruction == Instruction.FAST_BULK_READ)

    def _sync_write(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        params = packet.params
        if packet.servo_id != BROADCAST_ID or len(params) < 4:
            return []
        address, length = _u16(params, 0), _u16(params, 2)
        for i in range(4, len(params) - length, length + 1):
            slot = self._find(addressed, params[i])
            if slot is not None:
                self._finish_write(slot, slot.servo.write(address, params[i + 1:i + 1 + length], now))
        return []

    def _bulk_write(self, packet: Packet, addressed: list[_Slot], now: float) -> list[Reply]:
        params = packet.params
        if packet.servo_id != BROADCAST_ID:
            return []
        i = 0
        while i + 5 <= len(params):
            servo_id, address, length = params[i], _u16(params, i + 1), _u16(params, i + 3)
            data = params[i + 5:i + 5 + length]
            if len(data) < length:
                break
            slot = self._find(addressed, servo_id)
            if slot is not None:
                self._finish_write(slot, slot.servo.write(address, data, now))
            i += 5 + length
        return []


def _u16(data: bytes, offset: int) -> int:
    return data[offset] | (data[offset + 1] << 8)

