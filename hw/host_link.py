"""The UART host link: IDENTIFY / WRITE / READ / RUN / CYCLES from a host (:mod:`sparsyn.sw.link_protocol`) onto a
byte bus into the board's memories and the engine's run / done handshake.

``HostLink`` = :class:`~sparsyn.hw.uart.UARTRx` -> :class:`~sparsyn.hw.frames.Deframer` -> :class:`LinkController`
-> :class:`~sparsyn.hw.frames.Framer` -> :class:`~sparsyn.hw.uart.UARTTx`. The plan (:func:`plan_host_link`: the
parameters checked against each other and against the IDENTIFY payload) is plain data; ``elaborate`` only builds
it.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from sparsyn.sw.link_protocol import (CYCLES, ERROR, IDENTIFY, MAX_LENGTH, READ, REPLY_FLAG, RUN, WRITE, ErrorCode,
                                      Region, decode_identify)

from .frames import Deframer, DeframerEvent, EventKind, FrameHeader, Framer
from .uart import UARTRx, UARTTx, check_divisor

#: Smallest max payload: a READ request has 7 payload bytes, a WRITE 5 + data.
MIN_MAX_PAYLOAD = 8
#: WRITE payload bytes before the data (region, address); READ payload length.
WRITE_HEADER, READ_LENGTH = 5, 7


@dataclass(frozen=True)
class LinkPlan:
    """A checked host link configuration (see :func:`plan_host_link`)."""
    divisor: int
    max_payload: int
    timeout_cycles: int
    identity: bytes
    regions: tuple[Region, ...]

    @property
    def addr_width(self) -> int:
        """Bus address bits: enough for the largest region."""
        return max(1, max((r.size - 1 for r in self.regions), default=0).bit_length())


def plan_host_link(*, divisor: int, identity: bytes, regions, max_payload: int = 256,
                   timeout_cycles: int | None = None) -> LinkPlan:
    """Check the link's parameters; ``regions``: :class:`~sparsyn.sw.link_protocol.Region` s or
    ``(id, size, writable, readable)`` tuples; ``identity``: the IDENTIFY reply payload (built with
    :class:`~sparsyn.sw.link_protocol.Identity`), whose max payload and region table must be these.
    ``timeout_cycles`` defaults to 20 byte times (``200 * divisor``). Raises ValueError / TypeError."""
    divisor = check_divisor(divisor)
    max_payload = operator.index(max_payload)
    if not MIN_MAX_PAYLOAD <= max_payload <= MAX_LENGTH:
        raise ValueError(f"max_payload {max_payload} is not in {MIN_MAX_PAYLOAD} .. {MAX_LENGTH}")
    timeout_cycles = 200 * divisor if timeout_cycles is None else operator.index(timeout_cycles)
    if timeout_cycles <= 10 * divisor:
        raise ValueError(f"timeout_cycles {timeout_cycles} is not above one byte time ({10 * divisor} cycles)")
    regions = tuple(r if isinstance(r, Region) else Region(*r) for r in regions)
    if len({r.id for r in regions}) != len(regions):
        raise ValueError(f"region ids are not unique: {[r.id for r in regions]}")
    identity = bytes(identity)
    ident = decode_identify(identity)
    if ident.max_payload != max_payload:
        raise ValueError(f"the identity says max payload {ident.max_payload}, the link has {max_payload}")
    if ident.regions != regions:
        raise ValueError(f"the identity's region table {ident.regions} is not the link's {regions}")
    return LinkPlan(divisor, max_payload, timeout_cycles, identity, regions)


class LinkBus(wiring.Signature):
    """The host link's byte bus into the board's memories (the link is the initiator).

    Parameters
    ----------
    addr_width : int
        Address bits (1 .. 32), keyword-only.

    Interface attributes
    --------------------
    region : Signal(8)
        The region (memory) id, valid with ``w_en`` / ``r_en``.
    addr : Signal(addr_width)
        Byte address within the region.
    w_data : Signal(8)
        Byte to write.
    w_en : Signal(1)
        Write ``w_data`` at ``region`` / ``addr`` this cycle.
    r_en : Signal(1)
        Read ``region`` / ``addr``.
    r_data : Signal(8), in
        The byte read, the cycle after ``r_en`` (read latency 1: a synchronous memory read port).
    """

    def __init__(self, *, addr_width: int):
        addr_width = operator.index(addr_width)
        if not 1 <= addr_width <= 32:
            raise ValueError(f"LinkBus addr_width {addr_width} is not in 1 .. 32")
        self._addr_width = addr_width
        super().__init__({"region": Out(8), "addr": Out(addr_width), "w_data": Out(8), "w_en": Out(1),
                          "r_en": Out(1), "r_data": In(8)})

    @property
    def addr_width(self) -> int:
        return self._addr_width

    def __eq__(self, other):
        return isinstance(other, LinkBus) and other.addr_width == self.addr_width

    def __hash__(self):
        return hash((LinkBus, self._addr_width))

    def __repr__(self):
        return f"LinkBus(addr_width={self._addr_width})"


class LinkController(wiring.Component):
    """The command processor: deframer events in, replies out, bus writes / reads, engine run.

    A receiver stores each payload in a ``max_payload``-byte buffer (:class:`~amaranth.lib.memory.Memory`) and
    posts the finished frame (or an error event) into a one-entry job slot; the executor takes the job, checks it
    (CRC, command, length, busy, region bounds — in that order), and only then executes: a WRITE's bytes go from
    the buffer to the bus after its CRC is known good, so a corrupted frame never writes. Every job is answered
    (OK reply or ERROR). While the executor answers, the receiver keeps taking the next frame's bytes (e.g. a
    frame right after garbage), stalling only if the buffer still holds an unexecuted frame.

    RUN pulses ``run``, frees the job slot and replies with ``cycles`` once ``done & ~busy`` (checked from the
    second cycle after the pulse on, so a stale ``done`` is not taken); meanwhile WRITE / READ / RUN get BUSY,
    IDENTIFY / CYCLES are answered. A RUN while ``busy`` is high also gets BUSY.

    Latency: a reply header is offered 4 cycles after END (IDENTIFY, CYCLES, errors: IDLE, DECODE, DISPATCH), after the 8-cycle header
    load + 2 cycles of bounds check + 1 check (READ), or after 2 cycles per written byte (WRITE); a reply payload byte every 3 cycles at
    most (FETCH, CAPTURE, SEND) — far faster than the UART. Throughput: one request at a time.

    Parameters
    ----------
    plan : LinkPlan

    Attributes
    ----------
    events : In(stream.Signature(DeframerEvent))
    reply_hdr : Out(stream.Signature(FrameHeader))
    reply_data : Out(stream.Signature(8))
    bus : Out(LinkBus(addr_width=plan.addr_width))
    run : Out(1)
        One-cycle pulse: start the engine.
    busy, done : In(1)
        The engine runs; the engine finished (level, until the next run).
    cycles : In(32)
        The engine's cycle count of its last run, read while the RUN / CYCLES reply is sent (it must hold still
        after ``done``: only this link starts the engine).
    """

    def __init__(self, plan: LinkPlan):
        self.plan = plan
        super().__init__({
            "events": In(stream.Signature(DeframerEvent)),
            "reply_hdr": Out(stream.Signature(FrameHeader)),
            "reply_data": Out(stream.Signature(8)),
            "bus": Out(LinkBus(addr_width=plan.addr_width)),
            "run": Out(1), "busy": In(1), "done": In(1), "cycles": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        maxp = plan.max_payload
        m.submodules.buffer = buf = memory.Memory(shape=8, depth=maxp, init=[])
        m.submodules.identity = rom = memory.Memory(shape=8, depth=len(plan.identity), init=list(plan.identity))
        # the identity is a few dozen bytes: read asynchronously it is LUT logic, not a block RAM (the address k is
        # set in FETCH, the byte taken in CAPTURE as with the synchronous reads)
        wp, rp, rom_rp = buf.write_port(), buf.read_port(), rom.read_port(domain="comb")

        # ---- receiver: events -> payload buffer + job slot ----------------------------------------------------
        slot_valid, slot_error, slot_crc_ok = Signal(), Signal(), Signal()
        slot_code, slot_byte = Signal(8), Signal(8)
        slot_len = Signal(range(maxp + 1))
        ridx = Signal(range(maxp + 1))
        ev = self.events.payload
        frame_pending = slot_valid & ~slot_error            # the buffer holds a frame not executed yet
        is_stream = (ev.kind == EventKind.HEADER) | (ev.kind == EventKind.DATA)
        m.d.comb += self.events.ready.eq(Mux(is_stream, ~frame_pending, ~slot_valid))
        m.d.comb += [wp.addr.eq(ridx), wp.data.eq(ev.byte)]
        with m.If(self.events.valid & self.events.ready):
            with m.Switch(ev.kind):
                with m.Case(EventKind.HEADER):
                    m.d.sync += ridx.eq(0)
                with m.Case(EventKind.DATA):
                    with m.If(ridx != maxp):
                        m.d.comb += wp.en.eq(1)
                        m.d.sync += ridx.eq(ridx + 1)
                with m.Case(EventKind.END):
                    m.d.sync += [slot_valid.eq(1), slot_error.eq(0), slot_byte.eq(ev.byte),
                                 slot_crc_ok.eq(ev.crc_ok), slot_len.eq(ridx)]
                for kind, code in ((EventKind.TRUNCATED, ErrorCode.TRUNCATED),
                                   (EventKind.OVERFLOW, ErrorCode.OVERFLOW),
                                   (EventKind.GARBAGE, ErrorCode.GARBAGE)):
                    with m.Case(kind):
                        m.d.sync += [slot_valid.eq(1), slot_error.eq(1), slot_code.eq(code),
                                     slot_byte.eq(ev.byte)]

        # ---- executor -----------------------------------------------------------------------------------------
        running, launch_wait, free_slot = Signal(), Signal(), Signal()
        head = Signal(8 * READ_LENGTH)          # payload bytes 0..6: region, address, count (READ)
        region, address, count = head[:8], head[8:40], head[40:56]
        aw = plan.addr_width
        addr = Signal(aw)                       # the running bus address (bounds checked before: fits aw bits)
        widx = Signal(range(maxp + 1))          # WRITE: next buffer index to commit
        load = Signal(range(READ_LENGTH + 1))
        reply_cmd, reply_len, k = Signal(8), Signal(16), Signal(16)
        SRC_ERROR, SRC_CYCLES, SRC_ROM, SRC_BUS = 0, 1, 2, 3
        src = Signal(2)
        error_word = Signal(16)                 # an ERROR reply's payload: code, value
        out_byte = Signal(8)
        cmd = slot_byte
        m.d.comb += [self.bus.region.eq(region), self.bus.addr.eq(addr),
                     self.bus.w_data.eq(rp.data), rom_rp.addr.eq(k)]

        def reply(cmd_, length, source, value=None):
            m.d.sync += [reply_cmd.eq(cmd_), reply_len.eq(length), src.eq(source), k.eq(0)]
            if value is not None:
                m.d.sync += error_word.eq(value)
            m.next = "REPLY_HDR"

        def error(code):
            reply(ERROR, 2, SRC_ERROR, Cat(Const(int(code), 8), cmd))

        # bounds: address + n <= size of the region (with the access the command needs); one adder for both
        # commands, on the address bits a region can have (the upper ones must be 0)
        # Pipelined over the BOUNDS_SUM / BOUNDS_CMP states (the adder, then the compares, each into a register), so the check is not
        # one long path into the FSM: the request's header is stable from the end of LOAD on.
        is_write = cmd == WRITE
        xfer = Signal(16)
        end = Signal(max(aw, 16) + 1)
        m.d.comb += xfer.eq(Mux(is_write, slot_len - WRITE_HEADER, count))
        m.d.sync += end.eq(address[:aw] + xfer)
        in_bounds_now = Const(0)
        for r in plan.regions:
            if r.writable or r.readable:
                allowed = is_write if not r.readable else (~is_write if not r.writable else 1)
                in_bounds_now = in_bounds_now | ((region == r.id) & allowed & (end <= r.size))
        in_bounds, too_long = Signal(), Signal()
        m.d.sync += [in_bounds.eq(in_bounds_now & (address[aw:] == 0)), too_long.eq(count > maxp)]

        engine_busy = running | self.busy
        # the verdict on a received request (DECODE -> DISPATCH)
        V_SLOT, V_CRC, V_IDENTIFY, V_CYCLES, V_RUN, V_TRANSFER, V_LENGTH, V_BUSY, V_UNKNOWN = range(9)
        verdict = Signal(range(9))
        last_step = Signal()                    # the byte being committed / sent is the last one
        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += launch_wait.eq(0)
                with m.If(running & ~launch_wait & self.done & ~self.busy):
                    m.d.sync += [running.eq(0), free_slot.eq(0)]
                    reply(RUN | REPLY_FLAG, 4, SRC_CYCLES)
                with m.Elif(slot_valid):
                    m.d.sync += free_slot.eq(1)
                    m.next = "DECODE"
            with m.State("DECODE"):
                # the request's verdict into a register; DISPATCH acts on it (the checks and the reply set-up are
                # two short timing paths, not one; only this link starts the engine, so busy cannot change between)
                m.next = "DISPATCH"
                with m.If(slot_error):
                    m.d.sync += verdict.eq(V_SLOT)
                with m.Elif(~slot_crc_ok):
                    m.d.sync += verdict.eq(V_CRC)
                with m.Elif((cmd == IDENTIFY) | (cmd == CYCLES)):
                    m.d.sync += verdict.eq(Mux(slot_len != 0, V_LENGTH, Mux(cmd == IDENTIFY, V_IDENTIFY, V_CYCLES)))
                with m.Elif(cmd == RUN):
                    m.d.sync += verdict.eq(Mux(slot_len != 0, V_LENGTH, Mux(engine_busy, V_BUSY, V_RUN)))
                with m.Elif((cmd == WRITE) | (cmd == READ)):
                    bad_len = Mux(cmd == WRITE, slot_len < WRITE_HEADER, slot_len != READ_LENGTH)
                    m.d.sync += verdict.eq(Mux(bad_len, V_LENGTH, Mux(engine_busy, V_BUSY, V_TRANSFER)))
                with m.Else():
                    m.d.sync += verdict.eq(V_UNKNOWN)
            with m.State("DISPATCH"):
                with m.Switch(verdict):
                    with m.Case(V_SLOT):
                        reply(ERROR, 2, SRC_ERROR, Cat(slot_code, slot_byte))
                    with m.Case(V_CRC):
                        error(ErrorCode.BAD_CRC)
                    with m.Case(V_IDENTIFY):
                        reply(IDENTIFY | REPLY_FLAG, len(plan.identity), SRC_ROM)
                    with m.Case(V_CYCLES):
                        reply(CYCLES | REPLY_FLAG, 4, SRC_CYCLES)
                    with m.Case(V_RUN):
                        m.next = "RUN_PULSE"
                    with m.Case(V_TRANSFER):
                        m.d.sync += load.eq(0)
                        m.next = "LOAD"
                    with m.Case(V_LENGTH):
                        error(ErrorCode.BAD_LENGTH)
                    with m.Case(V_BUSY):
                        error(ErrorCode.BUSY)
                    with m.Default():
                        error(ErrorCode.UNKNOWN_CMD)
            with m.State("LOAD"):                   # buffer bytes 0..6 -> head (read latency 1)
                m.d.comb += rp.addr.eq(load)
                m.d.sync += load.eq(load + 1)
                with m.If(load != 0):
                    m.d.sync += head.eq(Cat(head[8:], rp.data))
                with m.If(load == READ_LENGTH):
                    m.next = "BOUNDS_SUM"
            with m.State("BOUNDS_SUM"):             # end = address + n, registered
                m.next = "BOUNDS_CMP"
            with m.State("BOUNDS_CMP"):             # the compares against the regions, registered
                m.next = "CHECK"
            with m.State("CHECK"):
                with m.If(cmd == WRITE):
                    with m.If(~in_bounds):
                        error(ErrorCode.BAD_ADDRESS)
                    with m.Elif(slot_len == WRITE_HEADER):
                        reply(WRITE | REPLY_FLAG, 0, SRC_ERROR)
                    with m.Else():
                        m.d.sync += [addr.eq(address), widx.eq(WRITE_HEADER)]
                        m.next = "COMMIT_RD"
                with m.Else():
                    with m.If(too_long):
                        error(ErrorCode.BAD_LENGTH)
                    with m.Elif(~in_bounds):
                        error(ErrorCode.BAD_ADDRESS)
                    with m.Else():
                        m.d.sync += addr.eq(address)
                        reply(READ | REPLY_FLAG, count, SRC_BUS)
            with m.State("COMMIT_RD"):              # the CRC was good: buffer -> bus, one byte per 2 cycles
                m.d.comb += rp.addr.eq(widx)
                m.d.sync += last_step.eq(widx + 1 == slot_len)      # registered: off the FSM's decision path
                m.next = "COMMIT_WR"
            with m.State("COMMIT_WR"):
                m.d.comb += self.bus.w_en.eq(1)
                m.d.sync += [addr.eq(addr + 1), widx.eq(widx + 1)]
                with m.If(last_step):
                    reply(WRITE | REPLY_FLAG, 0, SRC_ERROR)
                with m.Else():
                    m.next = "COMMIT_RD"
            with m.State("RUN_PULSE"):
                m.d.comb += self.run.eq(1)
                m.d.sync += [running.eq(1), launch_wait.eq(1), slot_valid.eq(0)]
                m.next = "IDLE"
            with m.State("REPLY_HDR"):
                m.d.comb += [self.reply_hdr.valid.eq(1), self.reply_hdr.payload.cmd.eq(reply_cmd),
                             self.reply_hdr.payload.length.eq(reply_len)]
                with m.If(self.reply_hdr.ready):
                    m.next = "FINISH"
                    with m.If(reply_len != 0):
                        m.next = "FETCH"
            with m.State("FETCH"):                  # address the byte (ROM / bus read, latency 1)
                m.d.comb += self.bus.r_en.eq(src == SRC_BUS)
                m.next = "CAPTURE"
            with m.State("CAPTURE"):
                m.d.sync += last_step.eq(k + 1 == reply_len)
                with m.Switch(src):
                    with m.Case(SRC_ERROR):
                        m.d.sync += out_byte.eq(error_word.word_select(k[0], 8))
                    with m.Case(SRC_CYCLES):         # the engine holds it after done; only this link starts it
                        m.d.sync += out_byte.eq(self.cycles.word_select(k[:2], 8))
                    with m.Case(SRC_ROM):
                        m.d.sync += out_byte.eq(rom_rp.data)
                    with m.Default():
                        m.d.sync += out_byte.eq(self.bus.r_data)
                m.next = "SEND"
            with m.State("SEND"):
                m.d.comb += [self.reply_data.valid.eq(1), self.reply_data.payload.eq(out_byte)]
                with m.If(self.reply_data.ready):
                    m.d.sync += [k.eq(k + 1), addr.eq(addr + 1)]
                    m.next = "FETCH"
                    with m.If(last_step):
                        m.next = "FINISH"
            with m.State("FINISH"):
                with m.If(free_slot):
                    m.d.sync += slot_valid.eq(0)
                m.next = "IDLE"
        return m


class HostLink(wiring.Component):
    """The UART host link (see the module and :mod:`sparsyn.sw.link_protocol`).

    Latency: a request's reply starts a few cycles after its last byte is received (its last stop bit's middle:
    ~9.5 byte-bit times after its start), WRITE adds 2 cycles per byte, RUN the engine's run; each reply byte takes
    one UART byte time. Throughput: the UART's, one byte per ``10 * divisor`` cycles each way, requests one at a
    time (a request sent before the previous reply may stall and overrun: a one-byte receive buffer).

    Parameters
    ----------
    divisor : int
        Clock cycles per UART bit (>= 4; :func:`~sparsyn.hw.uart.uart_divisor`).
    identity : bytes
        The IDENTIFY reply payload (:meth:`~sparsyn.sw.link_protocol.Identity.encode`); its max payload and
        region table must be the link's.
    regions : list of Region or (id, size, writable, readable)
        The memories behind ``bus``.
    max_payload : int
        Longest request / READ payload (default 256; >= 8): the WRITE buffer's size in bytes.
    timeout_cycles : int
        Inter-byte timeout (default 20 byte times: ``200 * divisor``).

    Attributes
    ----------
    rx : In(1)
        UART receive pin (idle high).
    tx : Out(1)
        UART transmit pin (idle high).
    bus : Out(LinkBus(addr_width=...))
        The byte bus into the regions (address bits for the largest region).
    run : Out(1)
        One-cycle pulse: start the engine.
    busy : In(1)
        The engine runs.
    done : In(1)
        The engine finished (a level, high after completion until the next run).
    cycles : In(32)
        The engine's cycle count of its last run (held after ``done``; sent in the RUN and CYCLES replies).
    """

    def __init__(self, *, divisor: int, identity: bytes, regions, max_payload: int = 256,
                 timeout_cycles: int | None = None):
        self.plan = plan_host_link(divisor=divisor, identity=identity, regions=regions, max_payload=max_payload,
                                   timeout_cycles=timeout_cycles)
        super().__init__({
            "rx": In(1, init=1), "tx": Out(1, init=1),
            "bus": Out(LinkBus(addr_width=self.plan.addr_width)),
            "run": Out(1), "busy": In(1), "done": In(1), "cycles": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        plan = self.plan
        m.submodules.uart_rx = rx = UARTRx(plan.divisor)
        m.submodules.deframer = deframer = Deframer(max_payload=plan.max_payload, timeout_cycles=plan.timeout_cycles)
        m.submodules.controller = ctrl = LinkController(plan)
        m.submodules.framer = framer = Framer()
        m.submodules.uart_tx = tx = UARTTx(plan.divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx)]
        connect(m, rx.o, deframer.i)
        connect(m, deframer.o, ctrl.events)
        connect(m, ctrl.reply_hdr, framer.hdr)
        connect(m, ctrl.reply_data, framer.data)
        # one register between the framer and the transmitter (the framer's byte multiplexer is then not on the
        # transmitter's load path); a byte every other cycle at most, far above the UART's one per 10 * divisor
        held, held_byte = Signal(), Signal(8)
        m.d.comb += [framer.o.ready.eq(~held), tx.i.valid.eq(held), tx.i.payload.eq(held_byte)]
        with m.If(held & tx.i.ready):
            m.d.sync += held.eq(0)
        with m.If(framer.o.valid & ~held):
            m.d.sync += [held.eq(1), held_byte.eq(framer.o.payload)]
        connect(m, flipped(self.bus), ctrl.bus)
        m.d.comb += [self.run.eq(ctrl.run), ctrl.busy.eq(self.busy), ctrl.done.eq(self.done),
                     ctrl.cycles.eq(self.cycles)]
        return m
