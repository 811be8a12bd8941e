"""The permuted-diagonal PE: M multipliers, each accumulating into the rows of its own block rows."""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparsyn.sw.array_format import ACC_BITS, bits_for_range

from .layouts import ACT_BITS


class PermDiagPE(wiring.Component):
    """One PE of the permuted-diagonal engine (PermDNN): per cycle, one nonzero input ``x_j`` times the M
    weights of M block rows, each added into the accumulator of the row the block's offset selects.

    Multiplier ``m`` owns an accumulator memory of ``depth`` words (int32). For an input in column
    ``jj`` of its block (0 <= jj < p) and the block's offset ``k[m]``, the weight ``w[m]`` belongs to row
    ``i = (jj - k[m]) mod p`` of the block row, whose accumulator is at ``abase + i``: the address is
    arithmetic on (j, k_l), there is no index memory. Accumulation is a read-modify-write; the read port is
    transparent to the write port, so back-to-back inputs into the same row are exact.

    Pipeline: stage A registers ``(abase + i, w*x)``; stage B reads the accumulator; stage C adds the product to
    the low 16 bits and writes them, keeping the carry and the product's sign; stage D adds ``carry - sign`` to
    the high 16 bits and writes them. Splitting the 32-bit sum keeps every read-modify-write loop (read, add,
    write, with the transparent bypass) to a 16-bit carry chain: the clock of a small FPGA is set by this loop.
    Latency :attr:`latency` = 4 cycles from ``valid`` inputs to the whole word written (a read issued that
    many cycles later sees it). Throughput: M multiply-accumulates per cycle.

    Drain / clear (while no input is valid): ``rd_en`` reads address ``rd_addr`` of every multiplier's
    memory (``rd_data`` one cycle later); ``clr_lanes`` writes zero at ``clr_addr`` into the selected
    multipliers' memories.

    Parameters
    ----------
    p : block size; mults : M; depth : accumulator words per multiplier; offset_bits : width of k.

    Attributes
    ----------
    valid : In(1); x : In(signed(8)); jj : In(range(p)); abase : In(range(depth))
    w : In(ArrayLayout(signed(8), M)); k : In(ArrayLayout(unsigned(offset_bits), M))
    rd_en : In(1); rd_addr : In(range(depth)); rd_data : Out(ArrayLayout(signed(32), M))
    clr_lanes : In(M); clr_addr : In(range(depth))
    """

    #: Cycles from valid inputs to the accumulator word written (both halves).
    latency = 4
    #: Width of the low half of the accumulator (the carry chain of the critical loop).
    HALF = ACC_BITS // 2

    def __init__(self, p: int, mults: int, depth: int, offset_bits: int):
        self.p, self.mults, self.depth = p, mults, max(depth, 2)
        addr = unsigned(bits_for_range(self.depth))
        super().__init__({
            "valid": In(1),
            "x": In(signed(ACT_BITS)),
            "jj": In(unsigned(bits_for_range(p))),
            "abase": In(addr),
            "w": In(data.ArrayLayout(signed(ACT_BITS), mults)),
            "k": In(data.ArrayLayout(unsigned(offset_bits), mults)),
            "rd_en": In(1),
            "rd_addr": In(addr),
            "rd_data": Out(data.ArrayLayout(signed(ACC_BITS), mults)),
            "clr_lanes": In(mults),
            "clr_addr": In(addr),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.p
        addr_shape = self.abase.shape()
        for lane in range(self.mults):
            # stage A: the block row's row from the offset, and the product
            diff = Signal(signed(max(self.jj.shape().width, len(self.k[lane])) + 1), name=f"diff_{lane}")
            m.d.comb += diff.eq(self.jj - self.k[lane])
            row = Mux(diff < 0, diff + p, diff)
            a_addr = Signal(addr_shape, name=f"a_addr_{lane}")
            a_prod = Signal(signed(2 * ACT_BITS), name=f"a_prod_{lane}")
            a_valid = Signal(name=f"a_valid_{lane}")
            m.d.sync += [a_addr.eq(self.abase + row), a_prod.eq(self.w[lane] * self.x), a_valid.eq(self.valid)]
            # stage B: read both halves; stage C: low half + product (write), carry and sign on; stage D: high half
            h = self.HALF
            lo = Memory(shape=unsigned(h), depth=self.depth, init=[])
            hi = Memory(shape=signed(ACC_BITS - h), depth=self.depth, init=[])
            m.submodules[f"acc_lo_{lane}"], m.submodules[f"acc_hi_{lane}"] = lo, hi
            lo_wr, hi_wr = lo.write_port(), hi.write_port()
            lo_rd, hi_rd = lo.read_port(transparent_for=(lo_wr,)), hi.read_port(transparent_for=(hi_wr,))
            b_addr = Signal(addr_shape, name=f"b_addr_{lane}")
            b_prod = Signal(signed(2 * ACT_BITS), name=f"b_prod_{lane}")
            b_valid = Signal(name=f"b_valid_{lane}")
            m.d.sync += [b_addr.eq(a_addr), b_prod.eq(a_prod), b_valid.eq(a_valid)]
            rd_addr = Mux(self.rd_en, self.rd_addr, a_addr)
            m.d.comb += [lo_rd.addr.eq(rd_addr), hi_rd.addr.eq(Mux(self.rd_en, self.rd_addr, b_addr))]
            m.d.comb += self.rd_data[lane].eq(Cat(lo_rd.data, hi_rd.data))
            # C: the low half (the product's two's complement low bits, unsigned) with its carry
            lo_sum = Signal(unsigned(h + 1), name=f"lo_sum_{lane}")
            m.d.comb += lo_sum.eq(lo_rd.data + b_prod.as_unsigned()[:h])
            c_addr = Signal(addr_shape, name=f"c_addr_{lane}")
            c_delta = Signal(signed(2), name=f"c_delta_{lane}")       # carry - sign: -1, 0 or +1
            c_valid = Signal(name=f"c_valid_{lane}")
            m.d.sync += [c_addr.eq(b_addr), c_valid.eq(b_valid),
                         c_delta.eq(lo_sum[h].as_unsigned() - b_prod[-1].as_unsigned())]
            # D: the high half (its read was issued in C, transparent to D's write)
            clear = Signal(name=f"clear_{lane}")
            m.d.comb += clear.eq(~b_valid & ~c_valid & self.clr_lanes[lane])
            with m.If(b_valid):
                m.d.comb += [lo_wr.addr.eq(b_addr), lo_wr.data.eq(lo_sum[:h]), lo_wr.en.eq(1)]
            with m.Elif(clear):
                m.d.comb += [lo_wr.addr.eq(self.clr_addr), lo_wr.data.eq(0), lo_wr.en.eq(1)]
            with m.If(c_valid):
                m.d.comb += [hi_wr.addr.eq(c_addr), hi_wr.data.eq(hi_rd.data + c_delta), hi_wr.en.eq(1)]
            with m.Elif(clear):
                m.d.comb += [hi_wr.addr.eq(self.clr_addr), hi_wr.data.eq(0), hi_wr.en.eq(1)]
        return m
