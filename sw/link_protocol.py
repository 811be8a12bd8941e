"""The host link's framed protocol over a UART: the one definition shared by the RTL and the host.

Pure Python (nothing from ``sparsyn.hw`` / ``sim`` / ``boards``): the gateware (:mod:`sparsyn.hw.host_link`)
builds its IDENTIFY reply and its error codes from here, the host client (:mod:`sparsyn.sw.link_client`) and the
test benches encode requests and decode replies with it.

Frame (both directions)::

    0xA5 | cmd u8 | length u16 LE | payload (length bytes) | crc u16 BE

``crc`` is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, no final xor) over ``cmd``, the two
length bytes and the payload, sent high byte first — so the CRC over a whole frame after ``SYNC`` (crc bytes
included) is 0, which is how the receivers check it.

Requests (host -> device) and their OK replies (``cmd | 0x80``):

=========  =======================================================  =====================================
request    payload                                                  OK reply payload
=========  =======================================================  =====================================
IDENTIFY   none                                                     :class:`Identity` (see there)
WRITE      region u8, address u32 LE, data (>= 0 bytes)             none (sent after every byte is written)
RUN        none                                                     cycle count u32 LE (when the run ends)
READ       region u8, address u32 LE, count u16 LE (7 bytes)        ``count`` bytes
CYCLES     none                                                     cycle count of the last run, u32 LE
=========  =======================================================  =====================================

Any bad frame is answered with an ``ERROR`` (0x7F) frame, payload ``(code u8, value u8)``: ``value`` is the
offending command byte (0 if none was received), or for ``GARBAGE`` the number of bytes dropped (saturating at
255). See :class:`ErrorCode`. A WRITE payload is buffered and its CRC checked before any byte is written; after
any error the device accepts the next good frame.

Timing rules the device follows (and :class:`FrameDecoder` models with :meth:`FrameDecoder.idle`):

* a frame whose bytes stop arriving for the inter-byte timeout is dropped with ``TRUNCATED``;
* bytes outside a frame are dropped and counted; the count is reported (``GARBAGE``) when the run of garbage
  ends — the line goes idle for the timeout, or a ``SYNC`` byte starts a frame (then before that frame's reply);
* a length above the device's max payload: the rest of the frame is skipped until the line goes idle, then
  ``OVERFLOW`` is sent (so the next frame, sent after the error reply, is always accepted).
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .errors import SparsynError

#: Protocol version reported by IDENTIFY.
LINK_VERSION = 1
#: First byte of every frame.
SYNC = 0xA5
#: Bytes around the payload: SYNC, cmd, length (2), crc (2).
FRAME_OVERHEAD = 6
#: Largest ``length`` field.
MAX_LENGTH = 0xFFFF
#: Reply command = request command | REPLY_FLAG.
REPLY_FLAG = 0x80
#: The error reply's command byte.
ERROR = 0x7F

CRC16_POLY = 0x1021
CRC16_INIT = 0xFFFF


class Cmd(enum.IntEnum):
    """Request commands (host -> device)."""
    IDENTIFY = 0x01
    WRITE = 0x02
    RUN = 0x03
    READ = 0x04
    CYCLES = 0x05


IDENTIFY, WRITE, RUN, READ, CYCLES = (int(c) for c in Cmd)


class ErrorCode(enum.IntEnum):
    """First byte of an ``ERROR`` reply's payload."""
    BAD_CRC = 1        #: the frame's CRC does not match (nothing was executed)
    UNKNOWN_CMD = 2    #: a command byte the device does not know
    BAD_LENGTH = 3     #: the length is wrong for the command (READ != 7, WRITE < 5, others != 0, READ count too big)
    OVERFLOW = 4       #: the length field is above the device's max payload
    BAD_ADDRESS = 5    #: unknown region, not writable / readable, or address + count beyond the region's size
    TRUNCATED = 6      #: the line went idle inside a frame
    GARBAGE = 7        #: bytes outside a frame were dropped (value = how many, saturating at 255)
    BUSY = 8           #: a WRITE / READ / RUN while the engine runs


#: What to do about each error, for the host's messages.
ERROR_HINTS = {
    ErrorCode.BAD_CRC: "the frame was corrupted on the line: check the cable / baud rate and retry",
    ErrorCode.UNKNOWN_CMD: "the board runs another link protocol version: flash this sparsyn's bitstream",
    ErrorCode.BAD_LENGTH: "the request does not fit the command (or the board's max payload): split it",
    ErrorCode.OVERFLOW: "the frame is longer than the board's max payload: split it (see IDENTIFY)",
    ErrorCode.BAD_ADDRESS: "the region / address range is not on the board: check IDENTIFY's region table",
    ErrorCode.TRUNCATED: "the frame stopped mid-way: check the cable / baud rate and that nothing else writes "
                         "to the port",
    ErrorCode.GARBAGE: "bytes outside a frame were dropped: check the baud rate and that nothing else writes "
                       "to the port",
    ErrorCode.BUSY: "the engine is still running: wait for the RUN reply",
}


def command_name(cmd: int) -> str:
    """``"READ"``, ``"READ reply"``, ``"ERROR"`` or ``"0x42"``."""
    if cmd == ERROR:
        return "ERROR"
    try:
        name = Cmd(cmd & ~REPLY_FLAG).name
    except ValueError:
        return f"{cmd:#04x}"
    return name + (" reply" if cmd & REPLY_FLAG else "")


# ---- CRC ------------------------------------------------------------------------------------------------------
def crc16_update(crc: int, byte: int) -> int:
    """CRC-16/CCITT-FALSE state after one more byte (most significant bit first)."""
    crc ^= (byte & 0xFF) << 8
    for _ in range(8):
        crc = ((crc << 1) ^ CRC16_POLY) if crc & 0x8000 else (crc << 1)
        crc &= 0xFFFF
    return crc


def crc16(data: bytes, init: int = CRC16_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    crc = init
    for b in bytes(data):
        crc = crc16_update(crc, b)
    return crc


# ---- frames ---------------------------------------------------------------------------------------------------
def encode_frame(cmd: int, payload: bytes = b"") -> bytes:
    """``SYNC, cmd, length LE, payload, crc BE``."""
    payload = bytes(payload)
    if not 0 <= int(cmd) <= 0xFF:
        raise ValueError(f"command {cmd} is not a byte")
    if len(payload) > MAX_LENGTH:
        raise ValueError(f"payload of {len(payload)} bytes is above the 16-bit length field")
    body = bytes([int(cmd)]) + struct.pack("<H", len(payload)) + payload
    return bytes([SYNC]) + body + struct.pack(">H", crc16(body))


@dataclass(frozen=True)
class Frame:
    """A frame with a good CRC."""
    cmd: int
    payload: bytes

    @property
    def is_error(self) -> bool:
        return self.cmd == ERROR

    def error(self) -> tuple[int, int]:
        """``(code, value)`` of an ERROR frame (the code as :class:`ErrorCode` when known)."""
        return parse_error(self.payload)


@dataclass(frozen=True)
class BadCrc:
    """A complete frame whose CRC does not match (dropped)."""
    cmd: int
    payload: bytes


@dataclass(frozen=True)
class Garbage:
    """``count`` bytes outside a frame (reported when the run ends: idle, or at the next SYNC)."""
    count: int


@dataclass(frozen=True)
class Truncated:
    """The line went idle inside a frame; ``cmd`` is None when only SYNC was received."""
    cmd: int | None
    received: int


@dataclass(frozen=True)
class Overflow:
    """A length field above the decoder's ``max_payload``; the rest of the frame was skipped until idle."""
    cmd: int
    length: int


class FrameDecoder:
    """Streaming frame decoder with exactly the device's resynchronisation rules (a model of
    :class:`sparsyn.hw.frames.Deframer`).

    :meth:`feed` takes bytes and returns the events they complete (:class:`Frame`, :class:`BadCrc`,
    :class:`Garbage` (at a SYNC after garbage)); :meth:`idle` tells it the line went idle for the inter-byte
    timeout and returns :class:`Truncated` / :class:`Overflow` / :class:`Garbage` as the device would.

    Parameters
    ----------
    max_payload : int
        Longer length fields give :class:`Overflow` (default: any 16-bit length is accepted).
    garbage_limit : int or None
        Saturate garbage counts here (the device: 255); None counts exactly.
    """

    _HUNT, _CMD, _LEN0, _LEN1, _DATA, _CRC0, _CRC1, _SKIP = range(8)

    def __init__(self, max_payload: int = MAX_LENGTH, garbage_limit: int | None = None):
        self.max_payload = int(max_payload)
        self.garbage_limit = garbage_limit
        self._state = self._HUNT
        self._garbage = 0
        self._reset_frame()

    def _reset_frame(self):
        self._cmd = None
        self._length = 0
        self._payload = bytearray()
        self._crc_bytes = bytearray()
        self._received = 0

    @property
    def in_frame(self) -> bool:
        return self._state != self._HUNT

    def needed(self) -> int:
        """Bytes that would complete the frame in progress (a minimal frame when hunting): a reader asking for
        this many never reads past a well-formed frame."""
        s = self._state
        if s == self._HUNT:
            return FRAME_OVERHEAD
        if s == self._DATA:
            return self._length - len(self._payload) + 2
        return {self._CMD: 5, self._LEN0: 4, self._LEN1: 3, self._CRC0: 2, self._CRC1: 1}.get(s, 1)

    def feed(self, data: bytes) -> list:
        events = []
        for b in bytes(data):
            ev = self._byte(b)
            if ev:
                events.extend(ev)
        return events

    def _byte(self, b: int):
        s = self._state
        if s == self._HUNT:
            if b == SYNC:
                out = [Garbage(self._garbage)] if self._garbage else []
                self._garbage = 0
                self._reset_frame()
                self._received = 1
                self._state = self._CMD
                return out
            self._garbage += 1
            if self.garbage_limit is not None:
                self._garbage = min(self._garbage, self.garbage_limit)
            return None
        self._received += 1
        if s == self._CMD:
            self._cmd = b
            self._state = self._LEN0
        elif s == self._LEN0:
            self._length = b
            self._state = self._LEN1
        elif s == self._LEN1:
            self._length |= b << 8
            if self._length > self.max_payload:
                self._state = self._SKIP
            else:
                self._state = self._DATA if self._length else self._CRC0
        elif s == self._DATA:
            self._payload.append(b)
            if len(self._payload) == self._length:
                self._state = self._CRC0
        elif s == self._CRC0:
            self._crc_bytes.append(b)
            self._state = self._CRC1
        elif s == self._CRC1:
            self._crc_bytes.append(b)
            self._state = self._HUNT
            body = bytes([self._cmd]) + struct.pack("<H", self._length) + bytes(self._payload)
            if crc16(body + bytes(self._crc_bytes)) == 0:
                return [Frame(self._cmd, bytes(self._payload))]
            return [BadCrc(self._cmd, bytes(self._payload))]
        return None   # _SKIP: dropped until idle

    def idle(self) -> list:
        """The line has been idle for the inter-byte timeout."""
        s = self._state
        self._state = self._HUNT
        if s == self._SKIP:
            return [Overflow(self._cmd, self._length)]
        if s != self._HUNT:
            return [Truncated(self._cmd, self._received)]
        if self._garbage:
            count, self._garbage = self._garbage, 0
            return [Garbage(count)]
        return []


# ---- payloads -------------------------------------------------------------------------------------------------
def write_payload(region: int, address: int, data: bytes) -> bytes:
    return struct.pack("<BI", region, address) + bytes(data)


def read_payload(region: int, address: int, count: int) -> bytes:
    return struct.pack("<BIH", region, address, count)


def u32_payload(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)


def error_payload(code: int, value: int = 0) -> bytes:
    return bytes([int(code), int(value) & 0xFF])


def parse_error(payload: bytes) -> tuple[int, int]:
    """``(code, value)`` of an ERROR payload; the code as :class:`ErrorCode` when known."""
    if len(payload) != 2:
        raise SparsynError(f"malformed ERROR reply ({len(payload)} payload bytes, want 2): the board runs another "
                           "link protocol version; flash this sparsyn's bitstream")
    code, value = payload
    try:
        code = ErrorCode(code)
    except ValueError:
        pass
    return code, value


def parse_u32(payload: bytes, what: str) -> int:
    if len(payload) != 4:
        raise SparsynError(f"malformed {what} reply ({len(payload)} payload bytes, want 4): the board runs another "
                           "link protocol version; flash this sparsyn's bitstream")
    return struct.unpack("<I", payload)[0]


def identify_request() -> bytes:
    return encode_frame(IDENTIFY)


def write_request(region: int, address: int, data: bytes) -> bytes:
    return encode_frame(WRITE, write_payload(region, address, data))


def read_request(region: int, address: int, count: int) -> bytes:
    return encode_frame(READ, read_payload(region, address, count))


def run_request() -> bytes:
    return encode_frame(RUN)


def cycles_request() -> bytes:
    return encode_frame(CYCLES)


# ---- IDENTIFY -------------------------------------------------------------------------------------------------
REGION_WRITABLE = 0x01
REGION_READABLE = 0x02


@dataclass(frozen=True)
class Region:
    """A memory region behind the link bus: ``id`` (u8), ``size`` in bytes (1 .. 2**32 - 1), access."""
    id: int
    size: int
    writable: bool = True
    readable: bool = True

    def __post_init__(self):
        if not 0 <= int(self.id) <= 0xFF:
            raise ValueError(f"region id {self.id} is not a byte")
        if not 1 <= int(self.size) <= 0xFFFFFFFF:
            raise ValueError(f"region {self.id}: size {self.size} is not in 1 .. 2**32 - 1")

    @property
    def flags(self) -> int:
        return (REGION_WRITABLE if self.writable else 0) | (REGION_READABLE if self.readable else 0)


#: Identity layout before the region table: version, design hash, rows, cols, lanes, model hash, max payload.
_IDENTITY_HEAD = struct.Struct("<B8sBBB8sH")
_REGION = struct.Struct("<BIB")


@dataclass(frozen=True)
class Identity:
    """The IDENTIFY reply payload::

        version u8 | design hash 8 bytes | rows u8 | cols u8 | lanes u8 | model hash 8 bytes |
        max payload u16 LE | region count u8 | per region: id u8, size u32 LE, flags u8 (bit0 W, bit1 R)

    ``design_hash`` / ``model_hash``: the first 8 bytes of the design's and the model's digests (zeros when
    none); ``max_payload``: the longest frame payload the device accepts (and READ count it serves).
    """
    design_hash: bytes
    rows: int
    cols: int
    lanes: int
    model_hash: bytes
    max_payload: int
    regions: tuple[Region, ...]
    version: int = LINK_VERSION

    def __post_init__(self):
        object.__setattr__(self, "regions", tuple(self.regions))
        for name in ("design_hash", "model_hash"):
            if len(getattr(self, name)) != 8:
                raise ValueError(f"{name} must be 8 bytes, not {len(getattr(self, name))}")
        ids = [r.id for r in self.regions]
        if len(set(ids)) != len(ids):
            raise ValueError(f"region ids are not unique: {ids}")
        if len(self.regions) > 0xFF:
            raise ValueError(f"{len(self.regions)} regions, at most 255")
        for name in ("rows", "cols", "lanes", "version"):
            if not 0 <= getattr(self, name) <= 0xFF:
                raise ValueError(f"{name} = {getattr(self, name)} is not a byte")
        if not 0 <= self.max_payload <= MAX_LENGTH:
            raise ValueError(f"max_payload = {self.max_payload} is not a u16")

    def region(self, region_id: int) -> Region:
        for r in self.regions:
            if r.id == region_id:
                return r
        raise SparsynError(f"region {region_id} is not on the board (it has {[r.id for r in self.regions]}): "
                           "use one of IDENTIFY's regions")

    def encode(self) -> bytes:
        out = _IDENTITY_HEAD.pack(self.version, bytes(self.design_hash), self.rows, self.cols, self.lanes,
                                  bytes(self.model_hash), self.max_payload)
        out += bytes([len(self.regions)])
        for r in self.regions:
            out += _REGION.pack(r.id, r.size, r.flags)
        return out


def decode_identify(payload: bytes) -> Identity:
    """The IDENTIFY reply payload -> :class:`Identity` (SparsynError on a malformed one)."""
    payload = bytes(payload)
    bad = ("malformed IDENTIFY reply ({}): the board runs another link protocol version; flash this sparsyn's "
           "bitstream")
    if len(payload) < _IDENTITY_HEAD.size + 1:
        raise SparsynError(bad.format(f"{len(payload)} bytes, at least {_IDENTITY_HEAD.size + 1} needed"))
    version, design, rows, cols, lanes, model, max_payload = _IDENTITY_HEAD.unpack_from(payload)
    count = payload[_IDENTITY_HEAD.size]
    want = _IDENTITY_HEAD.size + 1 + count * _REGION.size
    if len(payload) != want:
        raise SparsynError(bad.format(f"{len(payload)} bytes for {count} regions, want {want}"))
    regions = []
    for i in range(count):
        rid, size, flags = _REGION.unpack_from(payload, _IDENTITY_HEAD.size + 1 + i * _REGION.size)
        try:
            regions.append(Region(rid, size, bool(flags & REGION_WRITABLE), bool(flags & REGION_READABLE)))
        except ValueError as err:
            raise SparsynError(bad.format(err)) from None
    try:
        return Identity(design, rows, cols, lanes, model, max_payload, tuple(regions), version=version)
    except ValueError as err:
        raise SparsynError(bad.format(err)) from None
