"""The host link protocol (sparsyn.sw.link_protocol) and the host client (sparsyn.sw.link_client), without
hardware: exact byte layouts, the CRC, the streaming decoder's resynchronisation, the IDENTIFY struct, and the
client against a scripted fake board / a fake pyserial."""
import errno
import random
import struct
import sys
import types

import pytest

from sparsyn.sw import link_protocol as lp
from sparsyn.sw.errors import SparsynError
from sparsyn.sw.link_client import LinkClient, SerialTransport


# ---- CRC and frames ----------------------------------------------------------------------------------------------
def test_crc_known_vectors():
    assert lp.crc16(b"123456789") == 0x29B1           # CRC-16/CCITT-FALSE check value
    assert lp.crc16(b"") == 0xFFFF
    assert lp.crc16(b"\x00") == 0xE1F0
    assert lp.crc16(b"A") == 0xB915


def test_crc_residue_is_zero_after_the_crc_bytes():
    rng = random.Random(1)
    for n in range(0, 40):
        body = bytes(rng.randrange(256) for _ in range(n))
        assert lp.crc16(body + struct.pack(">H", lp.crc16(body))) == 0


def test_frame_layout_exact_bytes():
    frame = lp.encode_frame(lp.READ, lp.read_payload(2, 0x01020304, 0x0506))
    body = bytes([0x04, 0x07, 0x00, 0x02, 0x04, 0x03, 0x02, 0x01, 0x06, 0x05])
    assert frame == bytes([0xA5]) + body + lp.crc16(body).to_bytes(2, "big")
    assert lp.identify_request() == bytes([0xA5, 0x01, 0x00, 0x00]) + lp.crc16(b"\x01\x00\x00").to_bytes(2, "big")
    assert lp.write_request(1, 16, b"\xaa")[4:10] == bytes([0x01, 0x10, 0, 0, 0, 0xAA])
    assert lp.error_payload(lp.ErrorCode.BAD_CRC, lp.WRITE) == b"\x01\x02"
    assert lp.u32_payload(0x12345678) == b"\x78\x56\x34\x12"
    with pytest.raises(ValueError):
        lp.encode_frame(256)
    with pytest.raises(ValueError):
        lp.encode_frame(1, bytes(65536))


def test_command_names():
    assert lp.command_name(lp.READ) == "READ"
    assert lp.command_name(lp.READ | lp.REPLY_FLAG) == "READ reply"
    assert lp.command_name(lp.ERROR) == "ERROR"
    assert lp.command_name(0x42) == "0x42"


# ---- the streaming decoder ------------------------------------------------------------------------------------------
def test_decoder_round_trip_byte_by_byte():
    frames = [lp.encode_frame(c, p) for c, p in [(0x81, b""), (0x84, bytes(range(200))), (0x7F, b"\x01\x02")]]
    dec = lp.FrameDecoder()
    events = []
    for b in b"".join(frames):
        assert dec.needed() >= 1
        events += dec.feed(bytes([b]))
    assert events == [lp.Frame(0x81, b""), lp.Frame(0x84, bytes(range(200))), lp.Frame(0x7F, b"\x01\x02")]
    assert events[2].is_error and events[2].error() == (lp.ErrorCode.BAD_CRC, 2)


def test_decoder_garbage_is_reported_at_sync_or_idle():
    dec = lp.FrameDecoder()
    good = lp.encode_frame(0x85, b"\x01\x00\x00\x00")
    assert dec.feed(b"\x00\x01\x02" + good) == [lp.Garbage(3), lp.Frame(0x85, b"\x01\x00\x00\x00")]
    assert dec.feed(b"\xff" * 300) == []
    assert dec.idle() == [lp.Garbage(300)]
    assert dec.idle() == []
    sat = lp.FrameDecoder(garbage_limit=255)
    sat.feed(b"\x00" * 300)
    assert sat.idle() == [lp.Garbage(255)]


def test_decoder_bad_crc_truncated_overflow_then_a_good_frame():
    good = lp.encode_frame(0x84, b"\x10\x20")
    bad = bytearray(lp.encode_frame(0x02, b"\x01\x00\x00\x00\x00\x55"))
    bad[-3] ^= 1
    dec = lp.FrameDecoder(max_payload=8)
    assert dec.feed(bytes(bad)) == [lp.BadCrc(0x02, b"\x01\x00\x00\x00\x00\x54")]
    assert dec.feed(good) == [lp.Frame(0x84, b"\x10\x20")]
    assert dec.feed(good[:5]) == [] and dec.in_frame
    assert dec.idle() == [lp.Truncated(0x84, 5)]
    assert dec.feed(b"\xa5") == [] and dec.idle() == [lp.Truncated(None, 1)]
    long = lp.encode_frame(0x02, bytes(9))
    assert dec.feed(long + good) == []                 # skipped until idle, the good frame too
    assert dec.idle() == [lp.Overflow(0x02, 9)]
    assert dec.feed(good) == [lp.Frame(0x84, b"\x10\x20")]


def test_decoder_every_single_byte_corruption_is_caught_or_resynced():
    """Any one byte of a frame changed: never a wrong frame accepted (CRC-16 catches bursts <= 16 bits; a
    changed length gives a bad CRC, truncation or overflow), and the next frame after idle is taken."""
    frame = lp.encode_frame(0x02, b"\x01\x04\x00\x00\x00\xde\xad\xbe\xef")
    good = lp.encode_frame(0x04, b"\x01\x00\x00\x00\x00\x04\x00")
    rng = random.Random(7)
    for index in range(len(frame)):
        for _ in range(8):
            bad = bytearray(frame)
            bad[index] ^= rng.randrange(1, 256)
            dec = lp.FrameDecoder(max_payload=16)
            events = dec.feed(bytes(bad)) + dec.idle()
            accepted = [e for e in events if isinstance(e, lp.Frame)]
            assert accepted == [], (index, events)
            assert dec.feed(good) == [lp.Frame(0x04, good[4:-2])]


# ---- IDENTIFY ------------------------------------------------------------------------------------------------------
def sample_identity():
    return lp.Identity(b"DESIGN01", 4, 8, 2, b"MODEL-01", 256,
                       (lp.Region(1, 784, True, False), lp.Region(2, 10, False, True), lp.Region(7, 2**32 - 1)))


def test_identity_exact_layout_and_round_trip():
    ident = sample_identity()
    raw = ident.encode()
    assert raw == (bytes([1]) + b"DESIGN01" + bytes([4, 8, 2]) + b"MODEL-01" + b"\x00\x01" + bytes([3])
                   + bytes([1]) + (784).to_bytes(4, "little") + bytes([1])
                   + bytes([2]) + (10).to_bytes(4, "little") + bytes([2])
                   + bytes([7]) + b"\xff\xff\xff\xff" + bytes([3]))
    assert lp.decode_identify(raw) == ident
    assert ident.region(2).size == 10


@pytest.mark.parametrize("cut", [1, 5, 23, 24])
def test_malformed_identity_is_one_line(cut):
    raw = sample_identity().encode()
    with pytest.raises(SparsynError) as err:
        lp.decode_identify(raw[:-cut])
    assert "\n" not in str(err.value) and "IDENTIFY" in str(err.value)


def test_identity_and_region_checks():
    with pytest.raises(ValueError):
        lp.Region(1, 0)
    with pytest.raises(ValueError):
        lp.Region(256, 4)
    with pytest.raises(ValueError):
        lp.Identity(b"short", 1, 1, 1, bytes(8), 16, ())
    with pytest.raises(ValueError):
        lp.Identity(bytes(8), 1, 1, 1, bytes(8), 16, (lp.Region(1, 4), lp.Region(1, 8)))
    with pytest.raises(SparsynError, match="region 9 is not on the board"):
        sample_identity().region(9)


# ---- the client against a scripted fake board ---------------------------------------------------------------------
class FakeBoard:
    """A Transport that answers requests like the device (a small Python model), with hooks to misbehave."""

    def __init__(self, identity, *, silent=False, corrupt_reply=False, preface=b"", version=lp.LINK_VERSION):
        self.identity = identity
        self.mem = {r.id: bytearray(r.size) for r in identity.regions}
        self.out = bytearray()
        self.requests = []
        self.silent, self.corrupt_reply, self.preface, self.version = silent, corrupt_reply, preface, version
        self.closed = False

    def write(self, data):
        (frame,) = lp.FrameDecoder().feed(data)
        self.requests.append(frame)
        if self.silent:
            return
        reply = self.answer(frame.cmd, frame.payload)
        if self.corrupt_reply:
            reply = reply[:-1] + bytes([reply[-1] ^ 1])
        self.out += self.preface + reply

    def answer(self, cmd, payload):
        def error(code, value=cmd):
            return lp.encode_frame(lp.ERROR, lp.error_payload(code, value))
        if cmd == lp.IDENTIFY:
            ident = lp.Identity(self.identity.design_hash, 1, 1, 1, bytes(8), self.identity.max_payload,
                                self.identity.regions, version=self.version)
            return lp.encode_frame(0x81, ident.encode())
        if cmd == lp.WRITE:
            if len(payload) > self.identity.max_payload:
                return error(lp.ErrorCode.OVERFLOW)
            rid, addr = struct.unpack_from("<BI", payload)
            data = payload[5:]
            if rid not in self.mem or addr + len(data) > len(self.mem[rid]):
                return error(lp.ErrorCode.BAD_ADDRESS)
            self.mem[rid][addr:addr + len(data)] = data
            return lp.encode_frame(0x82)
        if cmd == lp.READ:
            rid, addr, n = struct.unpack("<BIH", payload)
            if n > self.identity.max_payload:
                return error(lp.ErrorCode.BAD_LENGTH)
            return lp.encode_frame(0x84, bytes(self.mem[rid][addr:addr + n]))
        if cmd == lp.RUN:
            return lp.encode_frame(0x83, lp.u32_payload(4242))
        if cmd == lp.CYCLES:
            return lp.encode_frame(0x85, lp.u32_payload(4242))
        return error(lp.ErrorCode.UNKNOWN_CMD)

    def read(self, n, timeout_s):
        out, self.out[:] = bytes(self.out[:n]), self.out[n:]
        return out

    def close(self):
        self.closed = True


def small_identity():
    return lp.Identity(bytes(8), 2, 2, 1, bytes(8), 12, (lp.Region(1, 100), lp.Region(2, 8, False, True)))


def test_client_writes_and_reads_in_max_payload_frames():
    board = FakeBoard(small_identity())
    with LinkClient(board, timeout_s=0.05) as client:
        data = bytes(range(50))
        client.write(1, 10, data)
        writes = [f for f in board.requests if f.cmd == lp.WRITE]
        assert [len(f.payload) for f in writes] == [12] * 7 + [5 + 1]       # 7 x 7 data bytes + 1
        assert board.mem[1][10:60] == data
        assert client.read(1, 10, 50) == data
        reads = [struct.unpack("<BIH", f.payload) for f in board.requests if f.cmd == lp.READ]
        assert reads == [(1, 10, 12), (1, 22, 12), (1, 34, 12), (1, 46, 12), (1, 58, 2)]
        assert client.run() == 4242 and client.cycles() == 4242
    assert board.closed


def test_client_refuses_ranges_before_sending():
    board = FakeBoard(small_identity())
    client = LinkClient(board, timeout_s=0.05)
    with pytest.raises(SparsynError, match="past the end of region 1"):
        client.write(1, 99, b"\x00\x00")
    with pytest.raises(SparsynError, match="not writable"):
        client.write(2, 0, b"\x00")
    with pytest.raises(SparsynError, match="region 3 is not on the board"):
        client.read(3, 0, 1)
    assert [f.cmd for f in board.requests] == [lp.IDENTIFY]


def test_client_no_reply_is_one_line_naming_the_fix():
    client = LinkClient(FakeBoard(small_identity(), silent=True), timeout_s=0.05)
    with pytest.raises(SparsynError) as err:
        client.identify()
    assert str(err.value) == ("no reply from the board within 0.05 s to IDENTIFY: is it flashed with the sparsyn "
                              "inference bitstream and on this port at this baud?")


def test_client_error_reply_names_the_code():
    client = LinkClient(FakeBoard(small_identity()), timeout_s=0.05)
    with pytest.raises(SparsynError) as err:
        client.request(0x33)
    msg = str(err.value)
    assert "\n" not in msg and "refused 0x33: UNKNOWN_CMD (error 2, value 51)" in msg
    with pytest.raises(SparsynError, match="refused READ: BAD_LENGTH"):
        client.request(lp.READ, lp.read_payload(1, 0, 13))


def test_client_skips_garbage_reports_and_stray_frames():
    preface = (b"\x00\x11" + lp.encode_frame(lp.ERROR, lp.error_payload(lp.ErrorCode.GARBAGE, 9))
               + lp.encode_frame(0x83, lp.u32_payload(1)))      # a late RUN reply from an earlier timeout
    client = LinkClient(FakeBoard(small_identity(), preface=preface), timeout_s=0.05)
    assert client.cycles() == 4242
    assert client.garbage_reports == [9]


def test_client_corrupted_reply_and_version_mismatch():
    with pytest.raises(SparsynError, match="bad CRC"):
        LinkClient(FakeBoard(small_identity(), corrupt_reply=True), timeout_s=0.05).cycles()
    with pytest.raises(SparsynError, match="protocol v2"):
        LinkClient(FakeBoard(small_identity(), version=2), timeout_s=0.05).identify()


# ---- pyserial errors -------------------------------------------------------------------------------------------------
def fake_serial(open_error=None):
    mod = types.ModuleType("serial")

    class SerialException(OSError):
        pass

    class Serial:
        def __init__(self, port, baudrate, **kw):
            if open_error is not None:
                raise open_error(SerialException)
            self.port, self.baudrate, self.timeout, self.written = port, baudrate, None, b""

        def write(self, data):
            self.written += data

        def flush(self):
            pass

        def read(self, n):
            raise SerialException("device reports readiness to read but returned no data")

        def close(self):
            pass

    mod.SerialException, mod.Serial = SerialException, Serial
    return mod


@pytest.mark.parametrize("code,text,want", [
    (errno.ENOENT, "No such file or directory", "does not exist: plug the board in"),
    (errno.EACCES, "Permission denied", "no permission to open serial port /dev/ttyUSB9: add yourself to its group"),
    (errno.EBUSY, "Device or resource busy", "is in use by another program"),
    (errno.EAGAIN, "could not exclusively lock port", "is in use by another program"),
])
def test_serial_open_errors_are_one_line(code, text, want):
    mod = fake_serial(lambda exc: exc(code, f"could not open port /dev/ttyUSB9: [Errno {code}] {text}"))
    with pytest.raises(SparsynError) as err:
        SerialTransport("/dev/ttyUSB9", 115200, serial_module=mod)
    assert want in str(err.value) and "\n" not in str(err.value)


def test_serial_read_error_and_missing_pyserial(monkeypatch):
    t = SerialTransport("/dev/ttyUSB0", 115200, serial_module=fake_serial())
    t.write(b"\x01")
    with pytest.raises(SparsynError, match="lost serial port /dev/ttyUSB0 while reading"):
        t.read(1, 0.1)
    monkeypatch.setitem(sys.modules, "serial", None)          # import serial -> ImportError
    with pytest.raises(SparsynError, match="pip install pyserial"):
        SerialTransport("/dev/ttyUSB0", 115200)
