"""On-board self-test: run the engine on a built-in input from ROM, compare with the golden output, light an LED.

The bitstream is meaningful without a host: after configuration the :class:`SelfTest` streams the
input ROM into the engine, starts it, checks every ``act_out`` element against the expected ROM
(computed by the golden model at build time) and ends in *pass* or *fail*. :class:`BoardTop` maps
that to the board's LEDs: the pass LED blinks while running and stays on after a pass, the fail LED
lights on a mismatch or a timeout. A later host link (UART) can drive ``restart`` and read
``mismatches`` / ``cycles``, or replace the ROMs by a stream from the host.
"""
from __future__ import annotations

import math

import numpy as np
from amaranth.hdl import Elaboratable, Module, Signal, signed
from amaranth.lib import io, memory, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.errors import SparsynError


def check_selftest_vectors(input_codes, expected_codes) -> None:
    """Refuse (one line) self-test vectors that are empty or not int8; call before building the core."""
    for what, codes in (("input", input_codes), ("expected output", expected_codes)):
        codes = np.asarray(codes).reshape(-1)
        if not codes.size:
            raise SparsynError(f"self-test {what} is empty; give the engine a layer with data")
        if codes.min() < -128 or codes.max() > 127:
            raise SparsynError(f"self-test {what} holds values outside int8; quantize it with "
                               "sparsyn.sw.golden.quantize_input")


class SelfTest(wiring.Component):
    """Drive ``engine`` (the fixed LayerEngine / ModelEngine port interface) with a ROM input and check it.

    Parameters
    ----------
    engine : wiring.Component
        Has ``act_in`` (In stream of signed(8)), ``start``, ``busy``, ``done``, ``cycles`` and
        ``act_out`` (Out stream of signed(8)).
    input_codes : sequence of int
        The engine's input tensor in CHW order (int8 codes; checked by :func:`check_selftest_vectors`).
    expected_codes : sequence of int
        The golden output in CHW order (int8 codes).
    timeout_cycles : int
        Fail if the whole run takes longer than this (engine hang).

    Attributes
    ----------
    restart : In(1)
        Pulse to run the test again (the test also starts once by itself after reset).
    running, passed, failed : Out(1)
        State; from the second cycle after reset exactly one is high.
    timed_out : Out(1)
        The failure was a timeout.
    mismatches : Out(16)
        Output elements that differed from the expected ROM (saturating).
    cycles : Out(32)
        The engine's own cycle count of the last run.

    Latency: input length + engine run + output length (+ a few cycles) per run; one run per restart.
    """

    def __init__(self, engine, input_codes, expected_codes, timeout_cycles: int = 1 << 26):
        self.engine = engine
        self.input_codes = [int(v) for v in np.asarray(input_codes).reshape(-1)]
        self.expected_codes = [int(v) for v in np.asarray(expected_codes).reshape(-1)]
        self.timeout_cycles = int(timeout_cycles)
        super().__init__({
            "restart": In(1),
            "running": Out(1), "passed": Out(1), "failed": Out(1), "timed_out": Out(1),
            "mismatches": Out(16), "cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = eng = self.engine
        n_in, n_out = len(self.input_codes), len(self.expected_codes)
        m.submodules.input_rom = in_rom = memory.Memory(shape=signed(8), depth=n_in, init=self.input_codes)
        m.submodules.expected_rom = exp_rom = memory.Memory(shape=signed(8), depth=n_out,
                                                            init=self.expected_codes)
        rd_in = in_rom.read_port()
        rd_exp = exp_rom.read_port()

        idx = Signal(range(n_in + 1))
        jdx = Signal(range(n_out + 1))
        bad = Signal()   # a mismatch seen in this run
        idx_last, jdx_last = Signal(), Signal()   # registered idx == n_in - 1, jdx == n_out - 1
        elapsed = Signal(range(self.timeout_cycles + 1))
        fire_in = eng.act_in.valid & eng.act_in.ready
        fire_out = eng.act_out.valid & eng.act_out.ready

        # ROM addresses come straight from the idx/jdx registers (no handshake logic in front of the
        # ROMs: timing). The read data holds ROM[idx] one cycle after idx settles, so a ROM word is
        # offered (``in_ok`` / ``exp_ok``) every other cycle — a few hundred cycles per run.
        in_ok, exp_ok = Signal(), Signal()
        m.d.comb += [rd_in.addr.eq(idx), rd_exp.addr.eq(jdx), eng.act_in.payload.eq(rd_in.data)]
        m.d.sync += [in_ok.eq(0), exp_ok.eq(0)]
        # the handshakes are plain registers (high only in LOAD / CHECK), no state decode
        m.d.comb += [eng.act_in.valid.eq(in_ok), eng.act_out.ready.eq(exp_ok)]

        # the timeout is registered (one cycle late) to keep the wide compare off the FSM's paths
        timeout = Signal()
        m.d.sync += timeout.eq(self.running & (elapsed == self.timeout_cycles - 1))
        with m.If(self.running):
            m.d.sync += elapsed.eq(elapsed + 1)

        # the comparison is registered: a received element and its expected value are latched on the
        # handshake and compared in the next cycle (the verdict waits for the last one: DRAIN)
        got, want, compare = Signal(signed(8)), Signal(signed(8)), Signal()
        m.d.sync += [got.eq(eng.act_out.payload), want.eq(rd_exp.data), compare.eq(fire_out)]
        with m.If(compare & (got != want)):
            m.d.sync += bad.eq(1)
            with m.If(self.mismatches != (1 << 16) - 1):
                m.d.sync += self.mismatches.eq(self.mismatches + 1)

        with m.FSM(init="BOOT"):
            with m.State("BOOT"):
                m.next = "LOAD"
                m.d.sync += [self.running.eq(1), self.passed.eq(0), self.failed.eq(0), self.timed_out.eq(0),
                             self.mismatches.eq(0), elapsed.eq(0), idx.eq(0), jdx.eq(0), bad.eq(0),
                             timeout.eq(0), idx_last.eq(n_in == 1), jdx_last.eq(n_out == 1)]
            with m.State("LOAD"):
                m.d.sync += in_ok.eq(~fire_in)
                with m.If(fire_in):
                    m.d.sync += [idx.eq(idx + 1), idx_last.eq(idx == n_in - 2)]
                    with m.If(idx_last):
                        m.next = "START"
                with m.If(timeout):
                    m.next = "END"
            with m.State("START"):
                m.d.comb += eng.start.eq(1)
                m.next = "LAUNCHED"
            with m.State("LAUNCHED"):  # give the engine a cycle to drop a stale ``done``
                m.next = "RUN"
            with m.State("RUN"):
                with m.If(eng.done & ~eng.busy):
                    m.d.sync += [self.cycles.eq(eng.cycles), exp_ok.eq(1)]   # ROM[0] is on the port
                    m.next = "CHECK"
                with m.If(timeout):
                    m.next = "END"
            with m.State("CHECK"):
                m.d.sync += exp_ok.eq(~fire_out)
                with m.If(fire_out):
                    m.d.sync += [jdx.eq(jdx + 1), jdx_last.eq(jdx == n_out - 2)]
                    with m.If(jdx_last):
                        m.next = "DRAIN"
                with m.If(timeout):
                    m.next = "END"
            with m.State("DRAIN"):     # the last element is compared in this cycle
                m.next = "VERDICT"
            with m.State("VERDICT"):
                m.next = "END"
                m.d.sync += [self.running.eq(0), self.passed.eq(~bad), self.failed.eq(bad)]
            with m.State("END"):
                with m.If(self.restart):
                    m.next = "BOOT"
        with m.If(timeout):  # an engine hang ends the run as a failure
            m.d.sync += [self.running.eq(0), self.failed.eq(1), self.timed_out.eq(1), in_ok.eq(0), exp_ok.eq(0)]
        return m


class BoardTop(Elaboratable):
    """A board's top level: the self-test on the board clock (no PLL) and its LEDs.

    ``board`` is a :class:`sparsyn.boards.platforms.Board`; ``core`` has ``running``, ``passed`` and
    ``failed`` outputs (a :class:`SelfTest`, or any stand-in with those ports). The pass LED blinks
    at about 3 Hz while running and stays on after a pass; the fail LED lights on a failure.
    """

    def __init__(self, board, core):
        self.board = board
        self.core = core

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        blink = Signal(max(1, math.ceil(math.log2(self.board.clock_hz / 3))))
        m.d.sync += blink.eq(blink + 1)
        if platform is not None:
            requested = {}
            drive = {"pass": core.passed | (core.running & blink[-1]), "fail": core.failed}
            for role, (resource, number, sub) in (("pass", self.board.pass_led), ("fail", self.board.fail_led)):
                if (resource, number) not in requested:  # an RGB LED holds both roles: request it once
                    requested[resource, number] = platform.request(resource, number, dir="-")
                port = requested[resource, number]
                port = getattr(port, sub) if sub else port
                m.submodules[f"{role}_led"] = buf = io.Buffer("o", port)
                m.d.comb += buf.o.eq(drive[role])
        return m
