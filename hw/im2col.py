"""im2col address generation: output-pixel scan and per-lane activation-buffer addresses."""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.qmodel import QuantLayer

from .layouts import bits_for_range, lane_descriptor, signed_range


def base_shape(layer: QuantLayer):
    """Signed shape of ``base_y``/``base_x`` = ``o*stride - pad`` over the output range."""
    _, ho, wo = layer.out_shape
    top = (max(ho, wo) - 1) * layer.stride - layer.padding
    return signed_range(-layer.padding, top)


class PixelScanner(wiring.Component):
    """Walks the Ho x Wo output pixels in row-major order.

    Outputs the current pixel index and ``base_y = oy*stride - pad``, ``base_x = ox*stride - pad``
    (kept as running sums, no multiplier). ``restart`` returns to pixel 0, ``step`` advances by one
    pixel; both take effect at the next clock edge (latency 1). ``last`` is high on the final pixel.

    Attributes
    ----------
    restart, step : In(1)
    pixel : Out(range(Ho*Wo)); base_y, base_x : Out(signed); last : Out(1)
    """

    def __init__(self, layer: QuantLayer):
        self.layer = layer
        _, self.ho, self.wo = layer.out_shape
        shape = base_shape(layer)
        super().__init__({
            "restart": In(1), "step": In(1),
            "pixel": Out(unsigned(bits_for_range(self.ho * self.wo))),
            "base_y": Out(shape, init=-layer.padding), "base_x": Out(shape, init=-layer.padding),
            "last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        s, p = self.layer.stride, self.layer.padding
        ox = Signal(unsigned(bits_for_range(self.wo)))
        oy = Signal(unsigned(bits_for_range(self.ho)))
        m.d.comb += self.last.eq((ox == self.wo - 1) & (oy == self.ho - 1))
        with m.If(self.restart):
            m.d.sync += [ox.eq(0), oy.eq(0), self.pixel.eq(0), self.base_x.eq(-p), self.base_y.eq(-p)]
        with m.Elif(self.step):
            m.d.sync += self.pixel.eq(Mux(self.last, 0, self.pixel + 1))
            with m.If(ox == self.wo - 1):
                m.d.sync += [ox.eq(0), self.base_x.eq(-p)]
                with m.If(oy == self.ho - 1):
                    m.d.sync += [oy.eq(0), self.base_y.eq(-p)]
                with m.Else():
                    m.d.sync += [oy.eq(oy + 1), self.base_y.eq(self.base_y + s)]
            with m.Else():
                m.d.sync += [ox.eq(ox + 1), self.base_x.eq(self.base_x + s)]
        return m


class LaneAddress(wiring.Component):
    """Combinational (latency 0): lane descriptor + pixel base -> activation-buffer address.

    ``y = base_y + dy``, ``x = base_x + dx``; ``valid`` is low for an invalid lane or a padding position
    (then ``addr`` is 0 and the lane's activation is forced to 0); ``addr = c*H*W + y*W + x`` with
    constant multiplies.

    Attributes
    ----------
    desc : In(lane_descriptor); base_y, base_x : In(signed)
    addr : Out(range(C*H*W)); valid : Out(1)
    """

    def __init__(self, layer: QuantLayer):
        self.layer = layer
        c, h, w = layer.in_shape
        kh, kw = layer.kernel
        shape = base_shape(layer)
        self.coord_shape = signed_range(-layer.padding, max(h, w) + max(kh, kw) + layer.padding)
        super().__init__({
            "desc": In(lane_descriptor(c, kh, kw)),
            "base_y": In(shape), "base_x": In(shape),
            "addr": Out(unsigned(bits_for_range(c * h * w))),
            "valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        _, h, w = self.layer.in_shape
        y = Signal(self.coord_shape)
        x = Signal(self.coord_shape)
        m.d.comb += [y.eq(self.base_y + self.desc.dy), x.eq(self.base_x + self.desc.dx)]
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        m.d.comb += self.valid.eq(self.desc.valid & inside)
        yu = y.as_unsigned()[:bits_for_range(h)]
        xu = x.as_unsigned()[:bits_for_range(w)]
        with m.If(self.valid):
            m.d.comb += self.addr.eq(self.desc.channel * (h * w) + yu * w + xu)
        return m
