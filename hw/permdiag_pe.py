"""The permuted-diagonal PE: M multipliers, each accumulating into the rows of its own block rows."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
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

    Pipeline: stage A registers ``(abase + i, w*x)``, stage B reads the accumulator, stage C writes
    ``acc + product``. Latency :attr:`latency` = 3 cycles from ``valid`` inputs to the word written (a
    read issued that many cycles later sees it). Throughput: M multiply-accumulates per cycle.

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

    #: Cycles from valid inputs to the accumulator word written.
    latency = 3

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
            diff = Signal(signed(addr_shape.width + 2), name=f"diff_{lane}")
            m.d.comb += diff.eq(self.jj - self.k[lane])
            row = Mux(diff < 0, diff + p, diff)
            a_addr = Signal(addr_shape, name=f"a_addr_{lane}")
            a_prod = Signal(signed(2 * ACT_BITS), name=f"a_prod_{lane}")
            a_valid = Signal(name=f"a_valid_{lane}")
            m.d.sync += [a_addr.eq(self.abase + row), a_prod.eq(self.w[lane] * self.x), a_valid.eq(self.valid)]
            # stage B: accumulator read; stage C: write acc + product
            acc = Memory(shape=signed(ACC_BITS), depth=self.depth, init=[])
            m.submodules[f"acc_{lane}"] = acc
            wr = acc.write_port()
            rd = acc.read_port(transparent_for=(wr,))
            b_addr = Signal(addr_shape, name=f"b_addr_{lane}")
            b_prod = Signal(signed(2 * ACT_BITS), name=f"b_prod_{lane}")
            b_valid = Signal(name=f"b_valid_{lane}")
            m.d.sync += [b_addr.eq(a_addr), b_prod.eq(a_prod), b_valid.eq(a_valid)]
            m.d.comb += rd.addr.eq(Mux(self.rd_en, self.rd_addr, a_addr))
            m.d.comb += self.rd_data[lane].eq(rd.data)
            with m.If(b_valid):
                m.d.comb += [wr.addr.eq(b_addr), wr.data.eq(rd.data + b_prod), wr.en.eq(1)]
            with m.Elif(self.clr_lanes[lane]):
                m.d.comb += [wr.addr.eq(self.clr_addr), wr.data.eq(0), wr.en.eq(1)]
        return m
