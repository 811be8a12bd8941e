"""The permuted-diagonal engine (PermDNN): one FC / 1x1 layer, index-free, skipping zero inputs.

A composition of small components around one control FSM::

    act_in -> NonzeroBuffer (nonzero_buffer.py: the nonzero detector; keeps (x, bj, jj, pixel) of each
              nonzero input, in order, while the input loads)
           -> per (nonzero input, slot t): weights ROM word t*K + j and offsets ROM word t*BC + bj
              (U = P*M lanes wide) -> P x PermDiagPE (permdiag_pe.py: M multipliers each, accumulating
              into row (jj - k) mod p of their block row; read-modify-write accumulators)
           -> DRAIN: row by row, pixel by pixel, the accumulator of that row + its bias (ROM)
              -> RequantUnit (requant.py, the spine's) -> OutputBuffer (output_buffer.py, the spine's)

Control (FSM, per image): IDLE --start (registered)--> ARM (1 cycle) -> COMPUTE (one (input, slot) pair per cycle, z*T cycles for z
nonzero inputs) -> FLUSH (the pipeline's last write lands) -> DRAIN (N*HW reads; each read clears the
accumulator behind it, so the accumulators are zero whenever the engine is idle) -> WAIT (the last value
through the requant unit) -> IDLE with done=1. After reset a SWEEP clears every accumulator first
(``act_in`` is not ready and ``start`` is ignored meanwhile). The exact cycle model is
:func:`sparsyn.hw.permdiag_plan.permdiag_cycles`.
"""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring

from sparsyn.sw.array_format import ACC_BITS, RequantConst
from sparsyn.sw.qmodel import QuantLayer
from sparsyn.sw.schemes import PackedLayer

from .engine import engine_signature
from .memories import rom_memory, rom_read_port
from .mux import mux_tree
from .nonzero_buffer import NonzeroBuffer
from .output_buffer import OutputBuffer
from .permdiag_pe import PermDiagPE
from .permdiag_plan import (DRAIN_FRONT, START_REGISTER, PermDiagPlan, drain_latency, flush_cycles,
                            plan_permdiag_layer)
from .plan import EngineLimits
from .requant import RequantUnit


class PermDiagEngine(wiring.Component):
    """Runs one permuted-diagonal FC / 1x1 layer per image: ``act_in`` -> ``start`` -> ``done`` -> ``act_out``.

    The same port interface and protocol as :class:`~sparsyn.hw.engine.LayerEngine`
    (:func:`~sparsyn.hw.engine.engine_signature`). Latency: ``plan.cycles(x)`` cycles from the cycle after
    ``start`` to ``done`` (also on ``cycles``): z*T + N*HW + a constant for an input with z nonzeros.
    Throughput: one image per ``C_in*HW + latency + N*HW`` cycles (load, compute and unload in turn); U = P*M
    multiply-accumulates per cycle while computing.

    Parameters
    ----------
    plan : PermDiagPlan (:meth:`PermDiagEngine.plan` or :func:`sparsyn.hw.engines.plan_layer`).

    Attributes
    ----------
    model : dict — static cycle figures (``total`` = every input nonzero).
    rom_memories : dict[str, Memory] — ROM name -> the memory initialised from exactly that ROM's words (filled
        in by elaboration).
    rom_tables : dict — empty (no scheme table is decoded as PE constants).
    """

    def __init__(self, plan: PermDiagPlan):
        self.plan = plan
        self.layer, self.packed, self.array, self.model = plan.layer, plan.packed, plan.array, plan.model
        #: name -> the Memory initialised from that ROM (filled in by each elaboration)
        self.rom_memories: dict = {}
        self.rom_tables: dict[str, list[int]] = {}
        super().__init__(engine_signature())

    @classmethod
    def plan(cls, layer: QuantLayer, packed: PackedLayer, limits: EngineLimits = EngineLimits()) -> PermDiagPlan:
        """The plain-data plan of ``layer`` (refuses, in one line, what this engine cannot run)."""
        return plan_permdiag_layer(layer, packed, limits)

    @property
    def in_elements(self) -> int:
        return self.plan.in_elements

    @property
    def out_elements(self) -> int:
        return self.plan.out_elements

    def elaborate(self, platform):
        m = Module()
        plan, meta = self.plan, self.plan.meta
        n, k, hw = plan.layer.n, meta["k"], plan.layer.pixels
        p, M, P, U, T = meta["p"], meta["mults"], meta["pes"], meta["lanes"], meta["slots"]
        bc, ob, depth = meta["block_cols"], meta["offset_bits"], plan.acc_depth

        # fresh memories per elaboration (a board build elaborates the design more than once)
        self.rom_memories = {name: rom_memory(rom) for name, rom in plan.packed.roms.items()}
        for name, mem in self.rom_memories.items():
            m.submodules[f"rom_{name}"] = mem
        w_rd = self.rom_memories["weights"].read_port()
        k_rd = self.rom_memories["offsets"].read_port()
        b_rd = rom_read_port(m, self.rom_memories["bias"], "bias")
        r_rd = rom_read_port(m, self.rom_memories["requant"], "requant")

        m.submodules.nz = nz = NonzeroBuffer(meta["in_channels"], hw, p)
        pes = [PermDiagPE(p, M, depth, ob) for _ in range(P)]
        for q, pe in enumerate(pes):
            m.submodules[f"pe{q}"] = pe
        m.submodules.requant = rq = RequantUnit(plan.layer.relu)
        m.submodules.output = out = OutputBuffer(plan)

        busy, done, sweep = Signal(), Signal(), Signal(init=1)
        m.d.comb += [self.busy.eq(busy), self.done.eq(done)]
        with m.If(busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        wiring.connect(m, wiring.flipped(self.act_in), nz.act_in)
        wiring.connect(m, out.act_out, wiring.flipped(self.act_out))
        m.d.comb += nz.enable.eq(~busy & ~sweep)
        # start is registered (the producer's start pulse drives one flip-flop, not the whole engine); the cycle
        # counter counts that cycle too (cycles = from the cycle after start to done)
        go = Signal()
        m.d.sync += go.eq(self.start & ~busy & ~sweep & ~go)
        with m.If(self.start & ~busy & ~sweep):
            m.d.sync += done.eq(0)             # done falls right after start, as on every engine

        # ---- COMPUTE: s0 issue (nonzero e, slot t) -> s1 entry read, addresses computed -> s2 ROM reads
        #      -> s3 PE inputs (each stage registered: a block RAM's output never drives an address adder and a
        #      ROM in the same cycle)
        e = Signal(range(max(plan.in_elements, 2) + 1))
        t = Signal(range(max(T, 2)))
        t_w = Signal(range(max(T * k, 2)))          # t*K
        t_k = Signal(range(max(T * bc, 2)))         # t*BC
        t_a = Signal(range(max(depth, 2)))          # t*p*HW
        e_next = Signal.like(e)                     # e + 1, kept in a register (no adder before the compare)
        issue, more = Signal(), Signal()
        s1_valid, s1_tw, s1_tk, s1_ta = Signal(), Signal.like(t_w), Signal.like(t_k), Signal.like(t_a)
        m.d.comb += nz.addr.eq(e)
        m.d.sync += [s1_valid.eq(issue), s1_tw.eq(t_w), s1_tk.eq(t_k), s1_ta.eq(t_a)]
        ent = nz.entry
        s2_valid, s2_x, s2_jj = Signal(), Signal(signed(8)), Signal.like(ent.jj)
        s2_waddr, s2_kaddr = Signal.like(w_rd.addr), Signal.like(k_rd.addr)
        s2_abase = Signal(range(max(depth, 2)))
        m.d.sync += [s2_valid.eq(s1_valid), s2_x.eq(ent.x), s2_jj.eq(ent.jj), s2_abase.eq(s1_ta + ent.pix * p),
                     s2_waddr.eq(s1_tw + ent.bj * p + ent.jj), s2_kaddr.eq(s1_tk + ent.bj)]
        m.d.comb += [w_rd.addr.eq(s2_waddr), k_rd.addr.eq(s2_kaddr)]
        s3_valid, s3_x, s3_jj, s3_abase = Signal(), Signal.like(s2_x), Signal.like(s2_jj), Signal.like(s2_abase)
        m.d.sync += [s3_valid.eq(s2_valid), s3_x.eq(s2_x), s3_jj.eq(s2_jj), s3_abase.eq(s2_abase)]
        w_word = data.ArrayLayout(signed(8), U)(w_rd.data)
        k_word = data.ArrayLayout(ob, U)(k_rd.data)
        for q, pe in enumerate(pes):
            m.d.comb += [pe.valid.eq(s3_valid), pe.x.eq(s3_x), pe.jj.eq(s3_jj), pe.abase.eq(s3_abase)]
            for lane in range(M):
                m.d.comb += [pe.w[lane].eq(w_word[q * M + lane]), pe.k[lane].eq(k_word[q * M + lane])]

        # ---- DRAIN: read row r (lane u, slot t, row i of its block) at pixel pix; clear it behind the read ---
        d_r = Signal(range(max(n, 2)))
        d_i = Signal(range(max(p, 2)))
        d_u = Signal(range(max(U, 2)))
        d_ta = Signal(range(max(depth, 2)))
        d_pix = Signal(range(max(hw, 2)))
        draining = Signal()
        d_addr = Signal(range(max(depth, 2)))
        m.d.comb += d_addr.eq(d_ta + d_pix * p + d_i)
        m.d.comb += [b_rd.addr.eq(d_r), r_rd.addr.eq(d_r)]
        for pe in pes:
            m.d.comb += [pe.rd_en.eq(draining), pe.rd_addr.eq(d_addr)]
        # +1: accumulator word, bias and constants read; the lane and address to clear
        d1_valid, d1_u, d1_addr = Signal(), Signal.like(d_u), Signal.like(d_addr)
        m.d.sync += [d1_valid.eq(draining), d1_u.eq(d_u), d1_addr.eq(d_addr)]
        lanes = [pe.rd_data[lane] for pe in pes for lane in range(M)]
        for q, pe in enumerate(pes):
            m.d.comb += pe.clr_addr.eq(d1_addr)
            for lane in range(M):
                m.d.comb += pe.clr_lanes[lane].eq(d1_valid & (d1_u == q * M + lane))
        # +2: the selected accumulator and its bias, registered, into the requant unit
        d2_valid, d2_acc, d2_bias = Signal(), Signal(signed(ACC_BITS)), Signal(signed(ACC_BITS))
        d2_const = Signal(RequantConst)
        m.d.sync += [d2_valid.eq(d1_valid), d2_acc.eq(mux_tree(d1_u, lanes)), d2_bias.eq(b_rd.data),
                     d2_const.eq(r_rd.data)]
        m.d.comb += [rq.i.valid.eq(d2_valid), rq.i.payload.acc.eq(d2_acc + d2_bias),
                     rq.i.payload.mult.eq(d2_const.mult), rq.i.payload.shift.eq(d2_const.shift)]
        wiring.connect(m, rq.o, out.i)
        assert DRAIN_FRONT == 2

        # ---- SWEEP after reset: zero every accumulator word ------------------------------------------
        s_addr = Signal(range(max(depth, 2)))
        with m.If(sweep):
            for pe in pes:
                m.d.comb += [pe.clr_addr.eq(s_addr), pe.clr_lanes.eq(-1)]
            m.d.sync += s_addr.eq(s_addr + 1)
            with m.If(s_addr == depth - 1):
                m.d.sync += sweep.eq(0)

        wait = Signal(range(max(flush_cycles(), drain_latency()) + 1))
        m.d.comb += [nz.restart.eq(go), out.clear.eq(go)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(go):
                    m.d.sync += [busy.eq(1), self.cycles.eq(START_REGISTER), e.eq(0), e_next.eq(1), t.eq(0),
                                 t_w.eq(0), t_k.eq(0), t_a.eq(0)]
                    m.next = "ARM"
            with m.State("ARM"):
                # the nonzero count is final now; whether another entry follows is kept in a register (no
                # comparator between the count and the FSM)
                m.d.sync += more.eq(nz.count != 0)
                m.next = "COMPUTE"
            with m.State("COMPUTE"):
                m.d.comb += issue.eq(more)
                with m.If(issue):
                    with m.If(t == T - 1):
                        m.d.sync += [t.eq(0), t_w.eq(0), t_k.eq(0), t_a.eq(0), e.eq(e_next), e_next.eq(e_next + 1),
                                     more.eq(e_next != nz.count)]
                    with m.Else():
                        m.d.sync += [t.eq(t + 1), t_w.eq(t_w + k), t_k.eq(t_k + bc), t_a.eq(t_a + p * hw)]
                with m.Else():
                    m.d.sync += wait.eq(0)
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == flush_cycles() - 1):
                    m.d.sync += [d_r.eq(0), d_i.eq(0), d_u.eq(0), d_ta.eq(0), d_pix.eq(0)]
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.comb += draining.eq(1)
                with m.If(d_pix == hw - 1):
                    m.d.sync += [d_pix.eq(0), d_r.eq(d_r + 1)]
                    with m.If(d_i == p - 1):
                        m.d.sync += d_i.eq(0)
                        with m.If(d_u == U - 1):
                            m.d.sync += [d_u.eq(0), d_ta.eq(d_ta + p * hw)]
                        with m.Else():
                            m.d.sync += d_u.eq(d_u + 1)
                    with m.Else():
                        m.d.sync += d_i.eq(d_i + 1)
                    with m.If(d_r == n - 1):
                        m.d.sync += wait.eq(0)
                        m.next = "WAIT"
                with m.Else():
                    m.d.sync += d_pix.eq(d_pix + 1)
            with m.State("WAIT"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == drain_latency() - 1):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.d.comb += out.publish.eq(1)
                    m.next = "IDLE"
        return m
