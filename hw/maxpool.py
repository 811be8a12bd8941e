"""MaxPool2d on an int8 CHW stream (padding counts as -128, i.e. is never selected)."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import MaxPoolLayer

from .layouts import ACT_BITS, bits_for_range, signed_range
from .const_mul import times_constant
from .mux import mux_tree
from .per_layer import LayerSelect, as_list, stream_members


def maxpool_cycles(layer: MaxPoolLayer) -> int:
    """Cycles from the last input element to the last output handshake with ``o.ready`` held high."""
    c, ho, wo = layer.out_shape
    return c * ho * wo * (layer.kernel * layer.kernel + MaxPoolUnit.read_latency + 1)


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

    Each output scans its k x k window from the buffer (one read per cycle; a read is folded into the
    max ``read_latency`` = 2 cycles after it is issued: the block-RAM read, then a register) and is
    offered on ``o`` for a handshake: ``k*k + 3`` cycles per output with ``o.ready`` high (see
    :func:`maxpool_cycles`).
    Input is accepted (``i.ready``) only while filling; after the last output it fills again.

    Parameters
    ----------
    layer : MaxPoolLayer (kernel, stride, padding; padding never wins the max), already accepted by
        :func:`check_maxpool`; or a list of them sharing the unit (``layer_index`` input: the active one, changed
        only while the unit waits for input).

    Attributes
    ----------
    i : In(stream.Signature(signed(8))); o : Out(stream.Signature(signed(8)))
    read_latency : int
        Cycles from issuing a window read to folding it into the max (2: the block-RAM read, then a
        register that keeps the RAM's clock-to-out off the compare).
    """

    read_latency = 2

    def __init__(self, layer: MaxPoolLayer | list):
        #: the pool layers this unit runs (several: the ``layer`` input selects the active one, set while idle)
        self.pools = as_list(layer)
        self.layer = self.pools[0]
        super().__init__(stream_members(len(self.pools), ('i',)))

    def elaborate(self, platform):
        m = Module()
        pools = self.pools
        sel = LayerSelect(m, self.layer_index if len(pools) > 1 else None, pools, self)
        n_max = max(l.in_shape[0] * l.in_shape[1] * l.in_shape[2] for l in pools)
        n_in = sel([l.in_shape[0] * l.in_shape[1] * l.in_shape[2] for l in pools], name="n_in")
        h, w = sel([l.in_shape[1] for l in pools], name="h"), sel([l.in_shape[2] for l in pools], name="w")
        c1 = sel([l.out_shape[0] - 1 for l in pools], name="c_last")
        ho1, wo1 = sel([l.out_shape[1] - 1 for l in pools], name="ho_last"), sel([l.out_shape[2] - 1 for l in pools],
                                                                                 name="wo_last")
        k1, kk = sel([l.kernel - 1 for l in pools], name="k_last"), sel([l.kernel * l.kernel for l in pools], name="kk")
        s, p = sel([l.stride for l in pools], name="stride"), sel([-l.padding for l in pools], name="neg_pad")
        kmax, pmax = max(l.kernel for l in pools), max(l.padding for l in pools)
        hmax, wmax = max(l.in_shape[1] for l in pools), max(l.in_shape[2] for l in pools)
        m.submodules.mem = mem = Memory(shape=signed(ACT_BITS), depth=max(n_max, 2), init=[])
        wr, rd = mem.write_port(), mem.read_port()
        wptr = Signal(range(max(n_max, 2)))
        m.d.comb += [wr.addr.eq(wptr), wr.data.eq(self.i.payload)]
        ch = Signal(unsigned(bits_for_range(max(l.out_shape[0] for l in pools))))
        ox = Signal(unsigned(bits_for_range(max(l.out_shape[2] for l in pools))))
        oy = Signal(unsigned(bits_for_range(max(l.out_shape[1] for l in pools))))
        base = signed_range(-pmax, max((max(l.out_shape[1:]) - 1) * l.stride for l in pools))
        by, bx = Signal(base, init=-self.pools[0].padding), Signal(base, init=-self.pools[0].padding)
        dy, dx = Signal(range(max(kmax, 2))), Signal(range(max(kmax, 2)))
        j = Signal(range(kmax * kmax + self.read_latency))
        coord = signed_range(-pmax, max(hmax, wmax) + kmax)
        y, x = Signal(coord), Signal(coord)
        m.d.comb += [y.eq(by + dy), x.eq(bx + dx)]
        inside = Signal()
        m.d.comb += inside.eq((y >= 0) & (y < h) & (x >= 0) & (x < w))
        yu, xu = y.as_unsigned()[:bits_for_range(hmax)], x.as_unsigned()[:bits_for_range(wmax)]
        if len(pools) == 1:
            _, h0, w0 = pools[0].in_shape
            m.d.comb += rd.addr.eq(times_constant(ch, h0 * w0) + times_constant(yu, w0) + xu)
        else:
            # the address multiplies are by constants (shifted adds): one per pool geometry, a Mux tree over the pool
            m.d.comb += rd.addr.eq(mux_tree(self.layer_index, [times_constant(ch, l.in_shape[1] * l.in_shape[2])
                                                               + times_constant(yu, l.in_shape[2]) + xu
                                                               for l in pools]))
        # the read data and its window-inside flag, registered: the RAM's clock-to-out is most of a cycle
        rd_q = Signal(signed(ACT_BITS))
        inside_d, inside_q = Signal(), Signal()
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
                    m.d.sync += [wptr.eq(0), ch.eq(0), oy.eq(0), ox.eq(0), by.eq(p), bx.eq(p),
                                 dy.eq(0), dx.eq(0), j.eq(0), best.eq(-128), filling.eq(0)]
        with m.Elif(~emitting):
            # scan: cycle j issues window read j (j < k*k) and folds read j-2 (j >= 2), registered in rd_q
            m.d.sync += [j.eq(j + 1), inside_d.eq(inside), inside_q.eq(inside_d), rd_q.eq(rd.data)]
            with m.If(dx == k1):
                m.d.sync += [dx.eq(0), dy.eq(Mux(dy == k1, 0, dy + 1))]
            with m.Else():
                m.d.sync += dx.eq(dx + 1)
            with m.If((j > 1) & inside_q & (rd_q > best)):
                m.d.sync += best.eq(rd_q)
            with m.If(j == kk + 1):
                m.d.sync += emitting.eq(1)
        with m.Elif(self.o.ready):
            m.d.sync += [j.eq(0), dy.eq(0), dx.eq(0), best.eq(-128), emitting.eq(0)]
            with m.If(ox == wo1):
                m.d.sync += [ox.eq(0), bx.eq(p)]
                with m.If(oy == ho1):
                    m.d.sync += [oy.eq(0), by.eq(p)]
                    with m.If(ch == c1):
                        m.d.sync += [ch.eq(0), filling.eq(1)]
                    with m.Else():
                        m.d.sync += ch.eq(ch + 1)
                with m.Else():
                    m.d.sync += [oy.eq(oy + 1), by.eq(by + s)]
            with m.Else():
                m.d.sync += [ox.eq(ox + 1), bx.eq(bx + s)]
        return m
