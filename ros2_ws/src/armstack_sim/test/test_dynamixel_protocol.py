"""Packet framing against the example packets of the ROBOTIS Protocol 2.0 e-manual, and against the
dynamixel_sdk's own stuffing and CRC code on random packets."""

import random

import pytest
from dynamixel_sdk.protocol2_packet_handler import Protocol2PacketHandler

from armstack_sim.dynamixel_protocol import (
    BROADCAST_ID,
    Instruction,
    PacketParser,
    crc16,
    decode,
    encode_fast_status,
    encode_instruction,
    encode_status,
    stuff,
    unstuff,
)


def _hex(text: str) -> bytes:
    return bytes.fromhex(text)


# (servo id, instruction, parameters, complete packet) from the e-manual's examples.
MANUAL_INSTRUCTIONS = [
    (1, Instruction.PING, "", "FFFFFD00 01 0300 01 194E"),
    (BROADCAST_ID, Instruction.PING, "", "FFFFFD00 FE 0300 01 3142"),
    (1, Instruction.READ, "84000400", "FFFFFD00 01 0700 02 84000400 1D15"),
    (1, Instruction.WRITE, "740000020000", "FFFFFD00 01 0900 03 740000020000 CA89"),
    (1, Instruction.REG_WRITE, "6800C8000000", "FFFFFD00 01 0900 04 6800C8000000 AE8E"),
    (1, Instruction.ACTION, "", "FFFFFD00 01 0300 05 02CE"),
    (1, Instruction.FACTORY_RESET, "01", "FFFFFD00 01 0400 06 01 A1E6"),
    (1, Instruction.REBOOT, "", "FFFFFD00 01 0300 08 2F4E"),
    (1, Instruction.CLEAR, "01 44584C22", "FFFFFD00 01 0800 10 0144584C22 B1DC"),
    (BROADCAST_ID, Instruction.SYNC_READ, "84000400 0102", "FFFFFD00 FE 0900 82 840004000102 CEFA"),
    (BROADCAST_ID, Instruction.SYNC_WRITE, "74000400 0196000000 02AA000000",
     "FFFFFD00 FE 1100 83 74000400 0196000000 02AA000000 8287"),
    (BROADCAST_ID, Instruction.BULK_READ, "0190000200 0292000100",
     "FFFFFD00 FE 0D00 92 0190000200 0292000100 1A05"),
    (BROADCAST_ID, Instruction.BULK_WRITE, "0120000200A000 021F00010050",
     "FFFFFD00 FE 1000 93 0120000200A000 021F00010050 B768"),
    (BROADCAST_ID, Instruction.FAST_SYNC_READ, "84000400 030704", "FFFFFD00 FE 0A00 8A 84000400030704 20F2"),
    (BROADCAST_ID, Instruction.FAST_SYNC_READ, "44020400 0102", "FFFFFD00 FE 0900 8A 440204000102 72F2"),
]

# (servo id, error, parameters, complete packet)
MANUAL_STATUSES = [
    (1, 0, "060426", "FFFFFD00 01 0700 55 00 060426 655D"),
    (2, 0, "060426", "FFFFFD00 02 0700 55 00 060426 6F6D"),
    (1, 0, "A6000000", "FFFFFD00 01 0800 55 00 A6000000 8CC0"),
    (2, 0, "1F080000", "FFFFFD00 02 0800 55 00 1F080000 BABE"),
    (1, 0, "", "FFFFFD00 01 0400 55 00 A10C"),
    (1, 0, "7700", "FFFFFD00 01 0600 55 00 7700 C369"),
    (2, 0, "24", "FFFFFD00 02 0500 55 00 24 8BA9"),
]


@pytest.mark.parametrize(("servo_id", "instruction", "params", "expected"), MANUAL_INSTRUCTIONS)
def test_instruction_packets_match_the_manual(servo_id, instruction, params, expected):
    packet = encode_instruction(servo_id, instruction, _hex(params))
    assert packet == _hex(expected)
    decoded = decode(packet)
    assert (decoded.servo_id, decoded.instruction, decoded.params, decoded.crc_ok) == (
        servo_id, instruction, _hex(params), True)


@pytest.mark.parametrize(("servo_id", "error", "params", "expected"), MANUAL_STATUSES)
def test_status_packets_match_the_manual(servo_id, error, params, expected):
    packet = encode_status(servo_id, error, _hex(params))
    assert packet == _hex(expected)
    decoded = decode(packet)
    assert decoded.instruction == Instruction.STATUS
    assert decoded.error == error and decoded.params[1:] == _hex(params)


def test_fast_sync_and_bulk_read_status_match_the_manual():
    # Each device appends ERR ID DATA and the running CRC of the packet so far.
    sync = encode_fast_status([(0, 3, _hex("A6000000")), (0, 7, _hex("1F080000")), (0, 4, _hex("FF030000"))])
    assert sync == _hex("FFFFFD00 FE 1900 55 00 03 A6000000 8408 00 07 1F080000 16CA 00 04 FF030000 D19E")
    bulk = encode_fast_status([(0, 3, _hex("A6000000")), (0, 7, _hex("A501")), (0, 4, _hex("1F"))])
    assert bulk == _hex("FFFFFD00 FE 1400 55 00 03 A6000000 67A4 00 07 A501 2474 00 04 1F D9C1")
    assert decode(sync).crc_ok and decode(bulk).crc_ok


def test_crc_is_the_sdk_crc():
    sdk = Protocol2PacketHandler()
    rng = random.Random(7)
    for _ in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        assert crc16(data) == sdk.updateCRC(0, list(data), len(data))


def test_stuffing_inserts_fd_after_header_pattern_and_round_trips():
    assert stuff(_hex("03 FFFFFD 00")) == _hex("03 FFFFFDFD 00")
    assert stuff(_hex("FFFFFD FFFFFD")) == _hex("FFFFFDFD FFFFFDFD")
    assert stuff(_hex("FFFF FF FD")) == _hex("FFFFFFFDFD")
    assert stuff(_hex("FF FD FFFD")) == _hex("FF FD FFFD")  # no FF FF FD: untouched
    rng = random.Random(3)
    for _ in range(300):
        field = bytes(rng.choice((0xFF, 0xFD, 0x00, 0x42)) for _ in range(rng.randrange(1, 24)))
        assert unstuff(stuff(field)) == field


def test_stuffed_packets_match_the_sdk_and_decode_back():
    sdk = Protocol2PacketHandler()
    rng = random.Random(11)
    for _ in range(200):
        params = bytes(rng.choice((0xFF, 0xFD, 0x01)) for _ in range(rng.randrange(0, 20)))
        ours = encode_instruction(5, Instruction.WRITE, params)
        # The SDK stuffs and frames in place: header, id, length, instruction, params, crc slots.
        txpacket = [0] * (len(params) + 12) + [0] * 32
        txpacket[4], txpacket[5], txpacket[6], txpacket[7] = 5, (len(params) + 3) & 0xFF, 0, Instruction.WRITE
        txpacket[8:8 + len(params)] = list(params)
        txpacket = sdk.addStuffing(txpacket)
        length = txpacket[5] | (txpacket[6] << 8)
        txpacket[0:4] = [0xFF, 0xFF, 0xFD, 0x00]
        crc = sdk.updateCRC(0, txpacket, length + 5)
        expected = bytes(txpacket[:length + 5]) + bytes((crc & 0xFF, crc >> 8))
        assert ours == expected
        assert decode(ours).params == params


def test_parser_resyncs_on_garbage_and_split_reads():
    ping = encode_instruction(1, Instruction.PING)
    read = encode_instruction(2, Instruction.READ, _hex("84000400"))
    stream = b"\x00\x12\xff\xff" + ping + b"\xff\xff\xfd\xfd\x33" + read + b"\xff"
    parser = PacketParser()
    packets = []
    for k in range(0, len(stream), 3):  # bytes trickle in three at a time
        packets += parser.feed(stream[k:k + 3])
    assert [(p.servo_id, p.instruction) for p in packets] == [(1, Instruction.PING), (2, Instruction.READ)]
    assert parser.pending == 1  # the trailing FF may start a header
    assert parser.discarded_bytes == 4 + 5


def test_parser_reports_bad_crc_without_losing_the_next_packet():
    bad = bytearray(encode_instruction(1, Instruction.PING))
    bad[-1] ^= 0x01
    parser = PacketParser()
    packets = parser.feed(bytes(bad) + encode_instruction(1, Instruction.PING))
    assert [p.crc_ok for p in packets] == [False, True]


def test_parser_rejects_impossible_lengths_and_gives_up_on_truncated_frames():
    ping = encode_instruction(3, Instruction.PING)
    parser = PacketParser()
    # Length 0xFFFF cannot be a packet: skipped at once.
    assert parser.feed(b"\xff\xff\xfd\x00\x01\xff\xff" + ping)[0].servo_id == 3
    # A frame claiming 512 bytes swallows the next ping until the caller gives up on it.
    assert parser.feed(b"\xff\xff\xfd\x00\x01\x00\x02" + ping) == []
    assert [p.servo_id for p in parser.abandon_partial()] == [3]
    assert parser.pending == 0
