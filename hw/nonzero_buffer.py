"""The nonzero detector and buffer in front of the permuted-diagonal engine: zero inputs never cost a cycle."""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.array_format import bits_for_range

from .layouts import ACT_BITS
from .memories import buffer_memory


def nonzero_entry(channels: int, pixels: int, p: int) -> data.StructLayout:
    """One buffered nonzero input: its value and where it is — block column ``bj = c div p``, column in the
    block ``jj = c mod p`` (c = input channel; for a Linear layer, the input index) and pixel ``pix``."""
    return data.StructLayout({"x": signed(ACT_BITS), "bj": unsigned(bits_for_range(-(-channels // p))),
                              "jj": unsigned(bits_for_range(p)), "pix": unsigned(bits_for_range(pixels))})


class NonzeroBuffer(wiring.Component):
    """Loads an input tensor from ``act_in`` (CHW order) and keeps only its nonzero elements, in order.

    Each accepted element is checked for zero as it arrives (the nonzero detector); a nonzero one is
    written to the next buffer entry as :func:`nonzero_entry` (value, ``bj``, ``jj``, pixel — counted, not
    divided). When the image's last element has been accepted, ``count`` holds its number of nonzeros and
    the write side starts over; ``restart`` also starts it over. ``act_in.ready = enable``.

    The input is registered: an element accepted in cycle c is checked and written in cycle c+1, so ``count``
    holds from the second cycle after the last element; ``start`` may come in the cycle right after it (the
    engine reads ``count`` one cycle after ``start``; ``restart`` does not touch ``count``).

    Latency: ``read_latency`` = 1 cycle from ``addr`` to ``entry`` (a block RAM read port). Throughput:
    one input element per cycle in, one entry per cycle out.

    Parameters
    ----------
    channels, pixels : the input tensor is ``channels x pixels`` (a Linear layer: K x 1).
    p : block size (for ``bj`` / ``jj``).

    Attributes
    ----------
    act_in : In(stream.Signature(signed(8)))
    enable, restart : In(1)
    count : Out(range(channels*pixels + 1))
    addr : In(range(channels*pixels)); entry : Out(nonzero_entry(...))
    """

    #: Cycles from ``addr`` to ``entry``.
    read_latency = 1

    def __init__(self, channels: int, pixels: int, p: int):
        self.channels, self.pixels, self.p = channels, pixels, p
        self.depth = channels * pixels
        self.layout = nonzero_entry(channels, pixels, p)
        super().__init__({
            "act_in": In(stream.Signature(signed(ACT_BITS))),
            "enable": In(1),
            "restart": In(1),
            "count": Out(range(self.depth + 1)),
            "addr": In(range(max(self.depth, 2))),
            "entry": Out(self.layout),
        })

    def elaborate(self, platform):
        m = Module()
        # no read-during-write: the engine reads only while busy, when act_in is not ready
        m.submodules.mem = mem = buffer_memory(self.layout, self.depth)
        wr, rd = mem.write_port(), mem.read_port()
        m.d.comb += [rd.addr.eq(self.addr), self.entry.eq(rd.data)]

        pix = Signal(range(max(self.pixels, 2)))
        jj = Signal(range(max(self.p, 2)))
        bj = Signal(range(max(-(-self.channels // self.p), 2)))
        ch = Signal(range(max(self.channels, 2)))
        wptr = Signal(range(self.depth + 1))
        # the input is registered first (no logic between the producer's handshake and the counters)
        x = Signal(signed(ACT_BITS))
        take = Signal()
        m.d.sync += [x.eq(self.act_in.payload), take.eq(self.act_in.valid & self.act_in.ready)]
        nonzero = x != 0
        last = (ch == self.channels - 1) & (pix == self.pixels - 1)

        m.d.comb += self.act_in.ready.eq(self.enable)
        m.d.comb += [wr.addr.eq(wptr), wr.en.eq(take & nonzero)]
        m.d.comb += [wr.data.x.eq(x), wr.data.bj.eq(bj), wr.data.jj.eq(jj), wr.data.pix.eq(pix)]
        with m.If(take):
            m.d.sync += wptr.eq(wptr + nonzero)
            with m.If(pix == self.pixels - 1):
                m.d.sync += [pix.eq(0), ch.eq(ch + 1)]
                with m.If(jj == self.p - 1):
                    m.d.sync += [jj.eq(0), bj.eq(bj + 1)]
                with m.Else():
                    m.d.sync += jj.eq(jj + 1)
            with m.Else():
                m.d.sync += pix.eq(pix + 1)
            with m.If(last):
                m.d.sync += [self.count.eq(wptr + nonzero), wptr.eq(0), pix.eq(0), ch.eq(0), jj.eq(0), bj.eq(0)]
        with m.If(self.restart):
            m.d.sync += [wptr.eq(0), pix.eq(0), ch.eq(0), jj.eq(0), bj.eq(0)]
        return m
