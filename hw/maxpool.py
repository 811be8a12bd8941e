"""MaxPool2d on an int8 CHW stream (padding counts as -128, i.e. is never selected)."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import MaxPoolLayer

from .layouts import ACT_BITS, bits_for_range, signed_range


def maxpool_cycles(layer: MaxPoolLayer) -> int:
    """Cycles from the last input element to the last output handshake with ``o.ready`` held high."""
    c, ho, wo = layer.out_shape
    return c * ho * wo * (layer.kernel * layer.kernel + 2)


#: Default input-buffer size of a MaxPoolUnit (int8 elements).
MAXPOOL_ELEMENTS = 8192


def check_maxpool(layer: MaxPoolLayer, max_elements: int = MAXPOOL_ELEMENTS) -> None:
    """Refuse (one line) a max-pool layer the unit cannot run; call before constructing the unit."""
    c, h, w = layer.in_shape
    if c * h * w > max_elements:
        raise SparsynError(f"maxpool {layer.name}: input of {c * h * w} elements exceeds the buffer of "
                           f"{max_elements} ({c * h * w - max_elements} over); use a smaller feature map")
    if layer.padding * 2 > layer.kernel:
        raise SparsynError(f"maxpool {layer.name}: padding {layer.padding} exceeds half the kernel "
                           f"{layer.kernel}; use padding <= kernel // 2 as PyTorch requires")


class MaxPoolUnit(wiring.Component):
    """Buffers one CHW image from ``i``, then emits the pooled CHW image on ``o``.

    Each output scans its k x k window from the buffer (one read per cycle) and is offered on ``o``
    for a handshake: ``k*k + 2`` cycles per output with ``o.ready`` high (see :func:`maxpool_cycles`).
    Input is accepted (``i.ready``) only while filling; after the last output it fills again.

    Parameters
    ----------
    layer : MaxPoolLayer (kernel, stride, padding; padding never wins the max), already accepted by
        :func:`check_maxpool`.

    Attributes
    ----------
    i : In(stream.Signature(signed(8))); o : Out(stream.Signature(signed(8)))
    """

    def __init__(self, layer: MaxPoolLayer):
        self.layer = layer
        super().__init__({
            "i": In(stream.Signature(signed(ACT_BITS))),
            "o": Out(stream.Signature(signed(ACT_BITS))),
        })

    def elaborate(self, platform):
        m = Module()
        ly = self.layer
        c, h, w = ly.in_shape
        _, ho, wo = ly.out_shape
        k, s, p = ly.kernel, ly.stride, ly.padding
        n_in = c * h * w
        m.submodules.mem = mem = Memory(shape=signed(ACT_BITS), depth=max(n_in, 2), init=[])
        wr, rd = mem.write_port(), mem.read_port()

        wptr = Signal(range(max(n_in, 2)))
        m.d.comb += [wr.addr.eq(wptr), wr.data.eq(self.i.payload)]

        ch = Signal(unsigned(bits_for_range(c)))
        ox = Signal(unsigned(bits_for_range(wo)))
        oy = Signal(unsigned(bits_for_range(ho)))
        base = signed_range(-p, (max(ho, wo) - 1) * s)
        by, bx = Signal(base, init=-p), Signal(base, init=-p)
        dy, dx = Signal(range(max(k, 2))), Signal(range(max(k, 2)))
        j = Signal(range(k * k + 1))
        coord = signed_range(-p, max(h, w) + k)
        y, x = Signal(coord), Signal(coord)
        m.d.comb += [y.eq(by + dy), x.eq(bx + dx)]
        inside = Signal()
        m.d.comb += inside.eq((y >= 0) & (y < h) & (x >= 0) & (x < w))
        m.d.comb += rd.addr.eq(ch * (h * w) + y.as_unsigned()[:bits_for_range(h)] * w
                               + x.as_unsigned()[:bits_for_range(w)])
        inside_d = Signal()
        best = Signal(signed(ACT_BITS), init=-128)
        m.d.comb += self.o.payload.eq(best)

        # state as plain registers (not an FSM) so that i.ready / o.valid are defined from time 0 in
        # event-driven simulators that do not evaluate always @* blocks before their inputs change
        filling = Signal(init=1)
        emitting = Signal()
        m.d.comb += [self.i.ready.eq(filling), self.o.valid.eq(emitting)]
        with m.If(filling):
            m.d.comb += wr.en.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += wptr.eq(wptr + 1)
                with m.If(wptr == n_in - 1):
                    m.d.sync += [wptr.eq(0), ch.eq(0), oy.eq(0), ox.eq(0), by.eq(-p), bx.eq(-p),
                                 dy.eq(0), dx.eq(0), j.eq(0), best.eq(-128), filling.eq(0)]
        with m.Elif(~emitting):
            # scan: cycle j issues window read j (j < k*k) and folds read j-1 (j >= 1)
            m.d.sync += [j.eq(j + 1), inside_d.eq(inside)]
            with m.If(dx == k - 1):
                m.d.sync += [dx.eq(0), dy.eq(Mux(dy == k - 1, 0, dy + 1))]
            with m.Else():
                m.d.sync += dx.eq(dx + 1)
            with m.If((j > 0) & inside_d & (rd.data > best)):
                m.d.sync += best.eq(rd.data)
            with m.If(j == k * k):
                m.d.sync += emitting.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += [j.eq(0), dy.eq(0), dx.eq(0), best.eq(-128), emitting.eq(0)]
            with m.If(ox == wo - 1):
                m.d.sync += [ox.eq(0), bx.eq(-p)]
                with m.If(oy == ho - 1):
                    m.d.sync += [oy.eq(0), by.eq(-p)]
                    with m.If(ch == c - 1):
                        m.d.sync += [ch.eq(0), filling.eq(1)]
                    with m.Else():
                        m.d.sync += ch.eq(ch + 1)
                with m.Else():
                    m.d.sync += [oy.eq(oy + 1), by.eq(by + s)]
            with m.Else():
                m.d.sync += [ox.eq(ox + 1), bx.eq(bx + s)]
        return m
