"""DYNAMIXEL Protocol 2.0 framing: CRC-16, byte stuffing, packet encoding and a streaming parser.

Packet layout (ROBOTIS e-manual, "Protocol 2.0"):

    FF FF FD 00 | ID | LEN_L LEN_H | INST | [ERR] | PARAM ... | CRC_L CRC_H

LEN counts INST, (ERR,) the parameters and the two CRC bytes, after byte stuffing. The CRC is
CRC-16/BUYPASS (polynomial 0x8005, init 0, no reflection) over every byte from the header to the
last parameter, as transmitted (stuffed). Stuffing inserts 0xFD after any FF FF FD that appears in
the instruction/parameter field, so a receiver never mistakes data for a header.

Plain module: no rclpy, no I/O.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum

logger = logging.getLogger(__name__)

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
# The SDK refuses packets longer than 1 KiB; a claimed length beyond it can only be noise.
MAX_PACKET_LENGTH = 1024
_MIN_LENGTH_FIELD = 3  # INST + CRC_L + CRC_H
_PREFIX_LEN = 7  # FF FF FD 00 ID LEN_L LEN_H


class Instruction(IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93
    FAST_BULK_READ = 0x9A


class StatusError(IntEnum):
    """Error number in bits 0..6 of a status packet's ERR byte."""

    NONE = 0x00
    RESULT_FAIL = 0x01
    INSTRUCTION = 0x02
    CRC = 0x03
    DATA_RANGE = 0x04
    DATA_LENGTH = 0x05
    DATA_LIMIT = 0x06
    ACCESS = 0x07


ALERT_BIT = 0x80  # ERR bit 7: the device has a hardware error (see Hardware Error Status)


def _make_crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16 (poly 0x8005, MSB first) continuing from `crc`."""
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ byte) & 0xFF]) & 0xFFFF
    return crc


def stuff(field: bytes) -> bytes:
    """Insert 0xFD after every FF FF FD in the instruction/parameter field."""
    out = bytearray()
    for byte in field:
        out.append(byte)
        if byte == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(field: bytes) -> bytes:
    """Remove the 0xFD that follows every FF FF FD (the inverse of `stuff`)."""
    out = bytearray()
    i = 0
    while i < len(field):
        byte = field[i]
        out.append(byte)
        i += 1
        if byte == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            if i < len(field) and field[i] == 0xFD:
                i += 1
    return bytes(out)


def _frame(servo_id: int, field: bytes) -> bytes:
    body = stuff(field)
    length = len(body) + 2
    packet = HEADER + bytes((servo_id, length & 0xFF, length >> 8)) + body
    crc = crc16(packet)
    return packet + bytes((crc & 0xFF, crc >> 8))


def encode_instruction(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete, stuffed instruction packet."""
    if not 0 <= servo_id <= BROADCAST_ID:
        raise ValueError(f"servo_id {servo_id} outside 0..{BROADCAST_ID}")
    return _frame(servo_id, bytes((instruction,)) + params)


def encode_status(servo_id: int, error: int, params: bytes = b"") -> bytes:
    """A complete, stuffed status packet (instruction 0x55)."""
    return _frame(servo_id, bytes((Instruction.STATUS, error)) + params)


def encode_fast_status(chunks: list[tuple[int, int, bytes]]) -> bytes:
    """The single status packet a chain returns for FAST SYNC/BULK READ.

    `chunks` is [(error, servo_id, data)] in reply order. Each device appends
    ERR ID DATA CRC, where CRC is the running CRC of the whole packet so far; the last
    device's CRC is therefore the packet's CRC. Fast status packets are never stuffed.
    """
    length = 1 + sum(len(data) + 4 for _, _, data in chunks)
    packet = bytearray(HEADER + bytes((BROADCAST_ID, length & 0xFF, length >> 8, Instruction.STATUS)))
    for error, servo_id, data in chunks:
        packet += bytes((error, servo_id)) + data
        crc = crc16(packet)
        packet += bytes((crc & 0xFF, crc >> 8))
    return bytes(packet)


@dataclass(frozen=True)
class Packet:
    """One framed packet as received.

    `params` is unstuffed and starts after the instruction byte (for a status packet its first
    byte is ERR). `crc_ok` False means the frame was well formed but its CRC did not match.
    """

    servo_id: int
    instruction: int
    params: bytes
    crc_ok: bool
    raw: bytes

    @property
    def error(self) -> int:
        """ERR byte of a status packet."""
        return self.params[0]


def decode(raw: bytes) -> Packet:
    """Decode exactly one complete packet (header included)."""
    if len(raw) < _PREFIX_LEN + _MIN_LENGTH_FIELD or raw[:4] != HEADER:
        raise ValueError("not a protocol 2.0 packet")
    length = raw[5] | (raw[6] << 8)
    if len(raw) != _PREFIX_LEN + length:
        raise ValueError(f"length field {length} does not match {len(raw)} bytes")
    crc_rx = raw[-2] | (raw[-1] << 8)
    field = raw[_PREFIX_LEN:-2]
    return Packet(
        servo_id=raw[4],
        instruction=field[0],
        params=unstuff(field)[1:],
        crc_ok=crc16(raw[:-2]) == crc_rx,
        raw=raw,
    )


class PacketParser:
    """Incremental receiver: bytes in, framed packets out, resynchronising on garbage.

    A header is FF FF FD followed by the reserved byte 00 (FF FF FD FD is stuffed data). When a
    candidate frame turns out impossible (reserved byte, length field), its first byte is dropped
    and the search restarts right after it, so a real packet hidden behind noise is still found.
    """

    def __init__(self, max_length: int = MAX_PACKET_LENGTH) -> None:
        self._buf = bytearray()
        self._max_length = max_length
        self.discarded_bytes = 0

    @property
    def pending(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Packet]:
        self._buf += data
        packets: list[Packet] = []
        while True:
            start = self._buf.find(b"\xff\xff\xfd")
            if start < 0:
                # Keep a trailing FF or FF FF: it may be the start of a header.
                keep = 2 if self._buf.endswith(b"\xff\xff") else 1 if self._buf.endswith(b"\xff") else 0
                self._drop(len(self._buf) - keep)
                return packets
            self._drop(start)
            if len(self._buf) < _PREFIX_LEN:
                return packets
            length = self._buf[5] | (self._buf[6] << 8)
            if self._buf[3] != 0x00 or not _MIN_LENGTH_FIELD <= length <= self._max_length - _PREFIX_LEN:
                self._drop(1)
                continue
            total = _PREFIX_LEN + length
            if len(self._buf) < total:
                return packets
            packets.append(decode(bytes(self._buf[:total])))
            del self._buf[:total]

    def abandon_partial(self) -> list[Packet]:
        """Give up on a frame whose remaining bytes never came; rescan what followed its header."""
        if not self._buf:
            return []
        self._drop(1)
        return self.feed(b"")

    def _drop(self, count: int) -> None:
        if count > 0:
            del self._buf[:count]
            self.discarded_bytes += count
