"""Host link framing (:mod:`sparsyn.sw.link_protocol`): the :class:`Deframer` (UART bytes -> frame events) and
the :class:`Framer` (reply header + payload bytes -> UART bytes)."""

import operator

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.link_protocol import MAX_LENGTH, SYNC

from .crc16 import CRC16


class EventKind(enum.Enum, shape=3):
    """What a :class:`Deframer` event reports."""
    HEADER = 0       #: a frame starts: ``byte`` = cmd, ``length`` = payload length (<= max_payload)
    DATA = 1         #: one payload byte: ``byte``
    END = 2          #: the frame's CRC bytes arrived: ``byte`` = cmd, ``crc_ok``
    TRUNCATED = 3    #: the line went idle inside a frame: ``byte`` = cmd (0 if not received)
    OVERFLOW = 4     #: length > max_payload (reported once the line is idle): ``byte`` = cmd, ``length``
    GARBAGE = 5      #: bytes outside a frame were dropped: ``byte`` = how many (saturating at 255)


class DeframerEvent(data.Struct):
    """One :class:`Deframer` output (fields not named by the kind are 0 or stale)."""
    kind: EventKind
    byte: 8
    length: 16
    crc_ok: 1


class FrameHeader(data.Struct):
    """A reply's command byte and payload length (the :class:`Framer`'s ``hdr`` stream)."""
    cmd: 8
    length: 16


class Deframer(wiring.Component):
    """UART bytes -> frame events (:class:`DeframerEvent`): ``HEADER``, one ``DATA`` per payload byte, ``END``
    with ``crc_ok``; or an error event. Implements the resynchronisation rules of
    :class:`sparsyn.sw.link_protocol.FrameDecoder` (its model) exactly:

    * outside a frame, bytes other than ``SYNC`` are dropped and counted (saturating at 255); the count is
      reported as ``GARBAGE`` when the line has been idle ``timeout_cycles`` or when a ``SYNC`` ends the run;
    * inside a frame, ``timeout_cycles`` without a byte drop the frame: ``TRUNCATED``;
    * a length above ``max_payload``: the rest is skipped until the line is idle, then ``OVERFLOW`` — never a
      wait on a length the buffer cannot hold, so the deframer cannot hang and takes the next good frame;
    * the CRC is checked over cmd, length, payload and the two CRC bytes (CCITT-FALSE residue 0).

    Latency: an event is on ``o`` the cycle after the byte that makes it is accepted on ``i``; idle events
    ``timeout_cycles`` + 1 cycles after the last byte. Throughput: one byte per cycle (``i.ready`` is low only
    while an event waits on ``o``).

    Parameters
    ----------
    max_payload : int
        Longest payload accepted (1 .. 65535).
    timeout_cycles : int
        Inter-byte timeout in clock cycles (>= 1; at the UART, more than one byte time).

    Attributes
    ----------
    i : In(stream.Signature(8))
        Bytes from the UART receiver.
    o : Out(stream.Signature(DeframerEvent))
        Events.
    in_frame : Out(1)
        A frame is being received.
    crc : CRC16
        The frame check unit (a submodule): ``crc.crc`` is the CRC of the frame's bytes after ``SYNC`` received
        so far (read by the formal proofs).
    """

    def __init__(self, *, max_payload: int, timeout_cycles: int):
        self.max_payload = operator.index(max_payload)
        self.timeout_cycles = operator.index(timeout_cycles)
        if not 1 <= self.max_payload <= MAX_LENGTH:
            raise ValueError(f"max_payload {self.max_payload} is not in 1 .. {MAX_LENGTH}")
        if self.timeout_cycles < 1:
            raise ValueError(f"timeout_cycles {self.timeout_cycles} is below 1")
        super().__init__({"i": In(stream.Signature(8)), "o": Out(stream.Signature(DeframerEvent)),
                          "in_frame": Out(1)})
        self.crc = CRC16()

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = self.crc
        T = self.timeout_cycles
        # cycles until the line counts as idle (T after the last byte), counting down; ``expired`` is its zero as a
        # register, so the timeout is one flag on the FSM's paths rather than a wide compare
        left = Signal(range(T + 1), init=0)
        expired = Signal(init=1)
        garbage = Signal(8)
        cmd = Signal(8)
        length = Signal(16)
        count = Signal(range(self.max_payload + 1))       # payload bytes still to come (DATA)
        last_byte = Signal()                                # the next payload byte is the frame's last

        can_emit = ~self.o.valid | self.o.ready
        m.d.comb += self.i.ready.eq(can_emit)
        take = self.i.valid & can_emit
        byte = self.i.payload
        timed_out = expired & ~self.i.valid & can_emit
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += [left.eq(T), expired.eq(0)]
        with m.Elif(~expired):
            m.d.sync += [left.eq(left - 1), expired.eq(left == 1)]
        m.d.comb += crc.data.eq(byte)

        def emit(kind, byte_=0, length_=0, crc_ok=0):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.kind.eq(kind), self.o.payload.byte.eq(byte_),
                         self.o.payload.length.eq(length_), self.o.payload.crc_ok.eq(crc_ok)]

        def truncate_on_idle(cmd_known=True):
            with m.If(timed_out):
                emit(EventKind.TRUNCATED, cmd if cmd_known else 0)
                m.next = "HUNT"

        with m.FSM() as fsm:
            with m.State("HUNT"):
                with m.If(take):
                    with m.If(byte == SYNC):
                        with m.If(garbage != 0):
                            emit(EventKind.GARBAGE, garbage)
                        m.d.sync += garbage.eq(0)
                        m.d.comb += crc.clear.eq(1)
                        m.next = "CMD"
                    with m.Elif(garbage != 0xFF):
                        m.d.sync += garbage.eq(garbage + 1)
                with m.Elif(timed_out & (garbage != 0)):
                    emit(EventKind.GARBAGE, garbage)
                    m.d.sync += garbage.eq(0)
            with m.State("CMD"):
                with m.If(take):
                    m.d.sync += cmd.eq(byte)
                    m.d.comb += crc.en.eq(1)
                    m.next = "LEN0"
                truncate_on_idle(cmd_known=False)
            with m.State("LEN0"):
                with m.If(take):
                    m.d.sync += length[:8].eq(byte)
                    m.d.comb += crc.en.eq(1)
                    m.next = "LEN1"
                truncate_on_idle()
            with m.State("LEN1"):
                full = Cat(length[:8], byte)
                with m.If(take):
                    m.d.sync += [length[8:].eq(byte), count.eq(full - 1), last_byte.eq(full == 1)]
                    m.d.comb += crc.en.eq(1)
                    with m.If(full > self.max_payload):
                        m.next = "SKIP"
                    with m.Else():
                        emit(EventKind.HEADER, cmd, full)
                        with m.If(full == 0):
                            m.next = "CRC0"
                        with m.Else():
                            m.next = "DATA"
                truncate_on_idle()
            with m.State("DATA"):
                with m.If(take):
                    emit(EventKind.DATA, byte)
                    m.d.comb += crc.en.eq(1)
                    # payload bytes still to come after this one, counting down; ``last_byte`` registered
                    m.d.sync += [count.eq(count - 1), last_byte.eq(count == 1)]
                    with m.If(last_byte):
                        m.next = "CRC0"
                truncate_on_idle()
            with m.State("CRC0"):
                with m.If(take):
                    m.d.comb += crc.en.eq(1)
                    m.next = "CRC1"
                truncate_on_idle()
            with m.State("CRC1"):
                with m.If(take):
                    m.d.comb += crc.en.eq(1)
                    emit(EventKind.END, cmd, crc_ok=crc.next == 0)
                    m.next = "HUNT"
                truncate_on_idle()
            with m.State("SKIP"):                   # an oversize frame: drop bytes until the line is idle
                with m.If(timed_out):
                    emit(EventKind.OVERFLOW, cmd, length)
                    m.next = "HUNT"
            m.d.comb += self.in_frame.eq(~fsm.ongoing("HUNT"))
        return m


class Framer(wiring.Component):
    """Reply header + payload bytes -> the frame's bytes for the UART transmitter: ``SYNC``, cmd, length (LE),
    the payload (``length`` bytes taken from ``data``), CRC-16/CCITT-FALSE (high byte first).

    Latency: ``SYNC`` is offered on ``o`` the cycle after ``hdr`` is accepted; a payload byte is passed from
    ``data`` to ``o`` combinationally. Throughput: one byte per cycle when ``o`` is ready (in the link, one per
    UART byte time); ``length`` + 6 bytes per frame.

    Attributes
    ----------
    hdr : In(stream.Signature(FrameHeader))
        A reply to send (accepted when the previous frame is out).
    data : In(stream.Signature(8))
        Its payload bytes, ``hdr.length`` of them.
    o : Out(stream.Signature(8))
        Frame bytes.
    busy : Out(1)
        A frame is being sent.
    crc : CRC16
        The frame check unit (a submodule): ``crc.crc`` is the CRC of the frame's bytes after ``SYNC`` sent so
        far, up to the last payload byte (read by the formal proofs).
    """

    hdr: In(stream.Signature(FrameHeader))
    data: In(stream.Signature(8))
    o: Out(stream.Signature(8))
    busy: Out(1)

    def __init__(self):
        super().__init__()
        self.crc = CRC16()

    def elaborate(self, platform):
        m = Module()
        m.submodules.crc = crc = self.crc
        cmd = Signal(8)
        length = Signal(16)
        count = Signal(16)
        sent = self.o.valid & self.o.ready
        m.d.comb += crc.data.eq(self.o.payload)

        def byte_state(value, next_state, add_to_crc=True):
            m.d.comb += [self.o.valid.eq(1), self.o.payload.eq(value)]
            with m.If(self.o.ready):
                m.next = next_state
                if add_to_crc:
                    m.d.comb += crc.en.eq(1)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                m.d.comb += self.hdr.ready.eq(1)
                with m.If(self.hdr.valid):
                    m.d.sync += [cmd.eq(self.hdr.payload.cmd), length.eq(self.hdr.payload.length), count.eq(0)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                byte_state(SYNC, "CMD", add_to_crc=False)
                m.d.comb += crc.clear.eq(1)
            with m.State("CMD"):
                byte_state(cmd, "LEN0")
            with m.State("LEN0"):
                byte_state(length[:8], "LEN1")
            with m.State("LEN1"):
                byte_state(length[8:], "DATA")
                with m.If(length == 0):
                    with m.If(self.o.ready):
                        m.next = "CRC0"
            with m.State("DATA"):
                m.d.comb += [self.o.valid.eq(self.data.valid), self.o.payload.eq(self.data.payload),
                             self.data.ready.eq(self.o.ready)]
                with m.If(sent):
                    m.d.comb += crc.en.eq(1)
                    m.d.sync += count.eq(count + 1)
                    with m.If(count + 1 == length):
                        m.next = "CRC0"
            with m.State("CRC0"):
                byte_state(crc.crc[8:], "CRC1", add_to_crc=False)
            with m.State("CRC1"):
                byte_state(crc.crc[:8], "IDLE", add_to_crc=False)
            m.d.comb += self.busy.eq(~fsm.ongoing("IDLE"))
        return m
