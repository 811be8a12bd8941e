"""The accumulator buffer: read-modify-write of the array's column sums into per-pixel partial sums."""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import acc_vector, bits_for_range
from .memories import buffer_memory, rom_memory, rom_offsets, rom_read_port
from .per_layer import LayerSelect, as_list

if TYPE_CHECKING:
    from .plan import LayerPlan


class AccumulatorRead(wiring.Signature):
    """The accumulator buffer's second read port, from the reader's side.

    Interface attributes
    --------------------
    bank : Out(1); pixel : Out(range(pixels))
        The word to read: output pixel ``pixel`` of accumulator bank ``bank``.
    data : In(ArrayLayout(signed(32), cols))
        That word, :attr:`AccumulatorBuffer.read_latency` cycles after the address.
    """

    def __init__(self, *, pixels: int, cols: int):
        self._pixels, self._cols = operator.index(pixels), operator.index(cols)
        super().__init__({
            "bank": Out(1),
            "pixel": Out(range(max(self._pixels, 2))),
            "data": In(acc_vector(self._cols)),
        })

    @property
    def pixels(self) -> int:
        return self._pixels

    @property
    def cols(self) -> int:
        return self._cols

    def __eq__(self, other):
        return isinstance(other, AccumulatorRead) and (self.pixels, self.cols) == (other.pixels, other.cols)

    def __repr__(self):
        return f"AccumulatorRead(pixels={self.pixels}, cols={self.cols})"


class AccumulatorBuffer(wiring.Component):
    """Ho*Wo words of C x int32 partial sums (one per output pixel) in 1 or 2 banks, updated by the array.

    Every array output ``y`` (one pixel's C column sums; pixels arrive in row-major order) is added to
    that pixel's word in bank ``bank`` and written back; on a section's first pass (``first``) it is
    added to the section's bias (from the bias ROM) instead. With more than one section there are two
    banks: the requant side reads a finished section from one (``read``) while the next section
    accumulates into the other.

    The word is read ahead of its sum: the caller announces each pixel on ``issue`` (with its pass's
    ``first`` flag) ``lead`` cycles before its ``y`` arrives, and the buffer reads the word
    :attr:`read_ahead` = 2 cycles before ``y`` (block RAM read, then a register in front of the adder).
    The sum is registered and written :attr:`write_latency` = 2 cycles after ``y`` is presented (read,
    add and write are separate stages), so a pixel's next read may come ``read_ahead +
    write_latency`` = 4 cycles after its previous one at the earliest (see
    :func:`sparsyn.hw.cycles.pass_period`): no word is read in the cycle it is written.
    Throughput: one pixel per cycle. ``read`` has :attr:`read_latency` = 2 cycles (block RAM read, then a
    register: the reader's column select stays off the RAM's clock-to-out).

    Parameters
    ----------
    plan : LayerPlan, or a list of them sharing the buffer (``layer`` input: the active one; the memory
        holds the largest layer, the bias memory every layer's ``bias`` ROM end to end)
        Ho*Wo, C, the number of sections (1: one bank) and the ``bias`` ROM.
    lead : int
        Cycles from a pixel's ``issue`` to its ``y`` (the activation read plus the array); at least
        :attr:`read_ahead`.

    Attributes
    ----------
    issue, first : In(1)
        A pixel enters the array's input pipeline / its pass is the section's first.
    section : In(unsigned)
        The section being accumulated (selects its bias; registered, so it must be stable from 2
        cycles before the section's first ``y``).
    bank : In(1)
        The bank being accumulated.
    clear : In(1)
        The read and write pixel counters return to pixel 0.
    y : In(stream.Signature(ArrayLayout(signed(32), C), always_ready=True))
        The array's column sums.
    read : In(AccumulatorRead(pixels=Ho*Wo, cols=C))
    rom_memories : dict
        ``{"bias": Memory}``, initialised from the layer's ``bias`` ROM.
    """

    #: Cycles a pixel's word is read before its ``y``: block RAM read, register in front of the adder.
    read_ahead = 2
    #: Cycles from ``y`` to the end of its write: registered sum, write.
    write_latency = 2
    #: Cycles from a ``read`` address to its ``data`` (block RAM read, register).
    read_latency = 2

    def __init__(self, plan: LayerPlan | list, lead: int):
        self.plans = plans = as_list(plan)
        self.pixels, self.cols = max(p.layer.pixels for p in plans), plans[0].array.cols
        # requant of a section overlaps the next section
        self.banks = 2 if any(p.sections > 1 for p in plans) else 1
        self.lead = operator.index(lead)
        #: word offset of each layer's bias ROM in the (shared) bias memory
        self.bias_base = rom_offsets([p.packed.roms["bias"] for p in plans])
        self.rom_memories = {"bias": rom_memory(*[p.packed.roms["bias"] for p in plans])}
        super().__init__({
            **({"layer": In(range(len(plans)))} if len(plans) > 1 else {}),
            "issue": In(1),
            "first": In(1),
            "section": In(unsigned(bits_for_range(max(p.sections for p in plans)))),
            "bank": In(1),
            "clear": In(1),
            "y": In(stream.Signature(acc_vector(self.cols), always_ready=True)),
            "read": In(AccumulatorRead(pixels=self.pixels, cols=self.cols)),
        })

    def elaborate(self, platform):
        m = Module()
        C, plans = self.cols, self.plans
        sel = LayerSelect(m, self.layer if len(plans) > 1 else None, plans, self)
        P = sel([p.layer.pixels for p in plans], name="pixels")
        m.submodules.accmem = accmem = buffer_memory(acc_vector(C), self.banks * self.pixels)
        m.submodules.bmem = bmem = self.rom_memories["bias"]
        acc_wr = accmem.write_port()
        acc_rd = accmem.read_port()
        acc_rq = accmem.read_port()
        # a synchronous read (a block RAM; a small table: an asynchronous read into a register), so the bias ROM of a
        # shared datapath is not LUT logic
        b_rd = rom_read_port(m, bmem, "bias")

        def address(bank, pixel):
            # bank 1 starts after the largest layer's pixels (a constant: no adder on the layer's size)
            return Mux(bank, self.pixels + pixel, pixel)

        # the read goes out read_ahead cycles before y (pre = issue delayed); the pass's "first" flag
        # travels with the pixel, since passes of a section overlap in flight
        pre, first = self.issue, Signal(name="first_0")
        m.d.comb += first.eq(self.first)
        for d in range(self.lead - self.read_ahead):
            reg, freg = Signal(name=f"pre_{d}"), Signal(name=f"first_{d + 1}")
            m.d.sync += [reg.eq(pre), freg.eq(first)]
            pre, first = reg, freg
        first_wb = Signal()
        m.d.sync += first_wb.eq(first)
        acc_rc = Signal(range(max(self.pixels, 2)))
        acc_wc = Signal(range(max(self.pixels, 2)))
        with m.If(pre):
            m.d.sync += acc_rc.eq(Mux(acc_rc == P - 1, 0, acc_rc + 1))
        m.d.comb += acc_rd.addr.eq(address(self.bank, acc_rc))

        # the section's bias, registered (off the pass table -> bias ROM lookup path): the section only
        # changes at a section start, LOAD + activation read + array latency (>= 3) cycles before its
        # first sum
        m.d.comb += b_rd.addr.eq(sel(self.bias_base, name="bias_base") + self.section)
        bias = Signal(acc_vector(C))
        m.d.comb += bias.eq(b_rd.data)

        # the word to add to (the bias on a section's first pass) is registered in front of the adder,
        # the sum is registered and written one cycle after y
        old = Signal(acc_vector(C))
        m.d.sync += old.eq(Mux(first_wb, bias, acc_rd.data))
        acc_sum = Signal(acc_vector(C))
        sum_valid = Signal()
        sum_addr = Signal.like(acc_wr.addr)
        m.d.sync += [acc_sum[col].eq(old[col] + self.y.payload[col]) for col in range(C)]
        m.d.sync += [sum_valid.eq(self.y.valid), sum_addr.eq(address(self.bank, acc_wc))]
        with m.If(self.y.valid):
            m.d.sync += acc_wc.eq(Mux(acc_wc == P - 1, 0, acc_wc + 1))
        m.d.comb += [acc_wr.data.eq(acc_sum), acc_wr.en.eq(sum_valid), acc_wr.addr.eq(sum_addr)]
        with m.If(self.clear):
            m.d.sync += [acc_rc.eq(0), acc_wc.eq(0)]

        # ---- the requant side's read port (it reads the other bank) ------------------------------
        rq_data = Signal(acc_vector(C), reset_less=True)
        m.d.sync += rq_data.eq(acc_rq.data)
        m.d.comb += [acc_rq.addr.eq(address(self.read.bank, self.read.pixel)), self.read.data.eq(rq_data)]
        return m
