"""im2col address generation: output-pixel scan and per-lane activation-buffer addresses.

Both units take one layer, or a list of layers that share them (then a ``layer`` input selects the
active one's geometry, see :mod:`.per_layer`).
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from sparsyn.sw.qmodel import QuantLayer

from .layouts import bits_for_range, lane_descriptor, signed_range
from .const_mul import times_constant
from .mux import mux_tree
from .per_layer import LayerSelect, as_list


def base_shape(layers):
    """Signed shape of ``base_y``/``base_x`` = ``o*stride - pad`` over the output range of every layer (both axes:
    stride and padding per axis, :attr:`QuantLayer.stride_hw` / :attr:`~QuantLayer.padding_hw`)."""
    layers = as_list(layers)
    lo = -max(max(l.padding_hw) for l in layers)
    top = max((o - 1) * s - p for l in layers
              for o, s, p in zip(l.out_shape[1:], l.stride_hw, l.padding_hw))
    return signed_range(lo, top)


def axis_select(sel, layers, values, name):
    """``(y, x)`` per-layer values of the two axes (``values(layer) -> (y, x)``): the x value is named ``name``
    and the y value ``name_y``, unless every layer has the same value on both axes — then one selection serves
    both (a model of square layers keeps the descriptor fields it always had)."""
    pairs = [values(l) for l in layers]
    x = sel([b for _, b in pairs], name=name)
    if all(a == b for a, b in pairs):
        return x, x
    return sel([a for a, _ in pairs], name=f"{name}_y"), x


def _layer_port(layers) -> dict:
    return {"layer": In(range(len(layers)))} if len(layers) > 1 else {}


class PixelScanner(wiring.Component):
    """Walks the Ho x Wo output pixels in row-major order.

    Outputs the current pixel index and ``base_y = oy*sh - ph``, ``base_x = ox*sw - pw`` (stride and padding
    per axis; kept as running sums, no multiplier). ``restart`` returns to pixel 0, ``step`` advances by one
    pixel; both take effect at the next clock edge (latency 1). ``last`` is high on the final pixel.

    Parameters
    ----------
    layer : QuantLayer, or a list of them sharing the scanner (``layer`` input: the active one;
        ``restart`` after changing it).

    Attributes
    ----------
    restart, step : In(1)
    pixel : Out(range(Ho*Wo)); base_y, base_x : Out(signed); last : Out(1)
    """

    def __init__(self, layer: QuantLayer | list):
        self.layers = as_list(layer)
        self.ho = max(l.out_shape[1] for l in self.layers)
        self.wo = max(l.out_shape[2] for l in self.layers)
        shape = base_shape(self.layers)
        py0, px0 = (-v for v in self.layers[0].padding_hw)
        super().__init__({
            **_layer_port(self.layers),
            "restart": In(1), "step": In(1),
            "pixel": Out(unsigned(bits_for_range(max(l.pixels for l in self.layers)))),
            "base_y": Out(shape, init=py0), "base_x": Out(shape, init=px0),
            "last": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ls = self.layers
        sel = LayerSelect(m, self.layer if len(ls) > 1 else None, ls, self)
        sy, s = axis_select(sel, ls, lambda l: l.stride_hw, "stride")
        py, p = axis_select(sel, ls, lambda l: tuple(-v for v in l.padding_hw), "neg_pad")
        ho1 = sel([l.out_shape[1] - 1 for l in ls], name="ho_last")
        wo1 = sel([l.out_shape[2] - 1 for l in ls], name="wo_last")
        ox = Signal(unsigned(bits_for_range(self.wo)))
        oy = Signal(unsigned(bits_for_range(self.ho)))
        m.d.comb += self.last.eq((ox == wo1) & (oy == ho1))
        with m.If(self.restart):
            m.d.sync += [ox.eq(0), oy.eq(0), self.pixel.eq(0), self.base_x.eq(p), self.base_y.eq(py)]
        with m.Elif(self.step):
            m.d.sync += self.pixel.eq(Mux(self.last, 0, self.pixel + 1))
            with m.If(ox == wo1):
                m.d.sync += [ox.eq(0), self.base_x.eq(p)]
                with m.If(oy == ho1):
                    m.d.sync += [oy.eq(0), self.base_y.eq(py)]
                with m.Else():
                    m.d.sync += [oy.eq(oy + 1), self.base_y.eq(self.base_y + sy)]
            with m.Else():
                m.d.sync += [ox.eq(ox + 1), self.base_x.eq(self.base_x + s)]
        return m



class LaneAddress(wiring.Component):
    """Combinational (latency 0): lane descriptor + pixel base -> activation-buffer address.

    ``y = base_y + dy``, ``x = base_x + dx``; ``valid`` is low for an invalid lane or a padding position
    (then ``addr`` is 0 and the lane's activation is forced to 0); ``addr = c*H*W + y*W + x`` with
    constant multiplies as shifted adds (:func:`.const_mul.times_constant`; per layer, selected by ``layer`` when
    shared).

    Attributes
    ----------
    desc : In(lane_descriptor); base_y, base_x : In(signed)
    addr : Out(range(C*H*W)); valid : Out(1)
    """

    def __init__(self, layer: QuantLayer | list):
        self.layers = as_list(layer)
        ls = self.layers
        c = max(l.in_shape[0] for l in ls)
        kh = max(l.kernel[0] for l in ls)
        kw = max(l.kernel[1] for l in ls)
        shape = base_shape(ls)
        pad = max(max(l.padding_hw) for l in ls)
        self.coord_shape = signed_range(-pad, max(max(l.in_shape[1:]) for l in ls) + max(kh, kw) + pad)
        super().__init__({
            **_layer_port(ls),
            "desc": In(lane_descriptor(c, kh, kw)),
            "base_y": In(shape), "base_x": In(shape),
            "addr": Out(unsigned(bits_for_range(max(l.in_shape[0] * l.in_shape[1] * l.in_shape[2] for l in ls)))),
            "valid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        ls = self.layers
        y = Signal(self.coord_shape)
        x = Signal(self.coord_shape)
        m.d.comb += [y.eq(self.base_y + self.desc.dy), x.eq(self.base_x + self.desc.dx)]
        hbits = bits_for_range(max(l.in_shape[1] for l in ls))
        wbits = bits_for_range(max(l.in_shape[2] for l in ls))
        yu = y.as_unsigned()[:hbits]
        xu = x.as_unsigned()[:wbits]
        if len(ls) == 1:
            _, h, w = ls[0].in_shape
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            m.d.comb += self.valid.eq(self.desc.valid & inside)
            with m.If(self.valid):
                m.d.comb += self.addr.eq(times_constant(self.desc.channel, h * w) + times_constant(yu, w) + xu)
            return m
        sel = LayerSelect(m, self.layer, ls, self)
        h = sel([l.in_shape[1] for l in ls], name="h")
        w = sel([l.in_shape[2] for l in ls], name="w")
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        m.d.comb += self.valid.eq(self.desc.valid & inside)
        # the multiplies are by constants (shifted adds): one per distinct geometry, then a Mux tree over the layer
        per = [times_constant(self.desc.channel, l.in_shape[1] * l.in_shape[2]) + times_constant(yu, l.in_shape[2]) + xu
               for l in ls]
        m.d.comb += self.addr.eq(Mux(self.valid, mux_tree(self.layer, per), 0))
        return m
