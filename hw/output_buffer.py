"""The output buffer: the layer's int8 outputs, written by the requant side, read out on ``act_out``."""
from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .layouts import ACT_BITS
from .memories import buffer_memory
from .per_layer import LayerSelect, as_list

if TYPE_CHECKING:
    from .plan import LayerPlan


class OutputBuffer(wiring.Component):
    """N*Ho*Wo int8 outputs: written in order from ``i``, then streamed out on ``act_out``.

    ``i`` values go to consecutive addresses from 0 (``clear`` returns the write pointer to 0).
    ``publish`` makes the buffer readable: from the next cycle ``act_out`` presents the elements in
    order, one per handshake without bubbles, until the last; ``clear`` withdraws it and returns the
    read pointer to the first element. The read address runs one element ahead of the handshake, and
    ``rptr + 1`` is kept in a register, so the consumer's ``ready`` only drives a 2:1 address mux (no
    incrementer between the handshake and the block RAM address). Read data is used only from
    ``publish`` on, which comes after the last write (no read-during-write).

    Latency: 1 cycle from ``publish`` to the first element on ``act_out``. Throughput: one element per
    cycle in and out.

    Parameters
    ----------
    plan : LayerPlan, or a list of them sharing the buffer (``layer`` input: the active one)
        The output size N*Ho*Wo.
    scratch : ``"ebr"`` (default: a block RAM) or ``"spram"``: the buffer in an iCE40UP SPRAM
        (:class:`~sparsyn.hw.spram.SpramStore`, one int8 per 16-bit word; single-port, which suffices: the buffer
        is written while the layer runs and read after ``publish``, never both in one cycle). Same timing.

    Attributes
    ----------
    i : In(stream.Signature(signed(8), always_ready=True))
    clear, publish : In(1)
    act_out : Out(stream.Signature(signed(8)))
    """

    def __init__(self, plan: LayerPlan | list, *, scratch: str = "ebr"):
        self.plans = as_list(plan)
        self.elements = max(p.out_elements for p in self.plans)
        if scratch not in ("ebr", "spram"):
            raise ValueError(f"scratch must be 'ebr' or 'spram', not {scratch!r}")
        self.scratch = scratch
        super().__init__({
            **({"layer": In(range(len(self.plans)))} if len(self.plans) > 1 else {}),
            "i": In(stream.Signature(signed(ACT_BITS), always_ready=True)),
            "clear": In(1),
            "publish": In(1),
            "act_out": Out(stream.Signature(signed(ACT_BITS))),
        })

    def elaborate(self, platform):
        m = Module()
        sel = LayerSelect(m, self.layer if len(self.plans) > 1 else None, self.plans, self)
        n = sel([p.out_elements for p in self.plans], name="elements")
        wptr = Signal(range(self.elements + 1))
        rptr = Signal(range(self.elements + 1))
        rptr_next = Signal(range(self.elements + 2), init=1)
        valid = Signal()
        take = valid & self.act_out.ready
        if self.scratch == "spram":
            from .spram import SpramStore
            # one int8 per SPRAM word (byte address 2 * element); reads in every cycle without a write
            m.submodules.omem = omem = SpramStore(ACT_BITS, self.elements)
            m.d.comb += [omem.w_addr.eq(wptr << 1), omem.w_data.eq(self.i.payload), omem.w_en.eq(self.i.valid),
                         omem.r_addr.eq(Mux(take, rptr_next, rptr)),
                         self.act_out.payload.eq(omem.r_data.as_signed())]
        else:
            m.submodules.omem = omem = buffer_memory(signed(ACT_BITS), self.elements)
            o_wr = omem.write_port()
            # not transparent: the first act_out address is presented the cycle after the last write
            o_rd = omem.read_port()
            m.d.comb += [o_wr.addr.eq(wptr), o_wr.data.eq(self.i.payload), o_wr.en.eq(self.i.valid),
                         o_rd.addr.eq(Mux(take, rptr_next, rptr)), self.act_out.payload.eq(o_rd.data)]
        with m.If(self.i.valid):
            m.d.sync += wptr.eq(wptr + 1)
        m.d.comb += self.act_out.valid.eq(valid)
        with m.If(take):
            m.d.sync += [rptr.eq(rptr_next), rptr_next.eq(rptr_next + 1), valid.eq(rptr_next < n)]
        with m.If(self.clear):
            m.d.sync += [wptr.eq(0), rptr.eq(0), rptr_next.eq(1), valid.eq(0)]
        with m.If(self.publish):
            m.d.sync += valid.eq(1)
        return m
