"""The channel-group feeder: each array row gets L consecutive input channels at the output pixel
(1x1 kernels, Linear layers), from a channel-banked image — no per-lane buffer copies."""
from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Module, Mux, Signal, unsigned
from amaranth.lib import wiring

from sparsyn.sw.array_format import group_descriptor

from .banked_image import BankedImage, FeedSignature
from .im2col import PixelScanner
from .layouts import bits_for_range
from .mux import mux_tree
from .per_layer import LayerSelect, as_list

if TYPE_CHECKING:
    from .plan import LayerPlan


class ChannelGroupFeeder(wiring.Component):
    """The ``channels`` row feed (1x1 kernels): array row r gets channels ``g_r*L .. g_r*L+L-1`` at the pixel.

    Storage: per array row, the C_in x H x W image in L **channel banks** (bank j holds the channels
    c = j mod L at ``(c // L)*H*W + y*W + x``), so the L channels of a group are read in one cycle: R x L
    memories of 1/L of the image each (R image copies in all). A lane past the last channel reads 0.

    Scan: one output pixel per step (a :class:`~.im2col.PixelScanner`, stride and padding as the layer
    says); every step emits (``pixel = issue``). Latency :attr:`latency` = 2 cycles from ``issue`` to
    ``x`` (registered bank addresses, block RAM read); throughput one pixel per cycle.

    Parameters
    ----------
    plan : LayerPlan (a 1x1 layer; R, L; the row-descriptor layout ``{valid, group}``).

    Attributes
    ----------
    act_in : In(stream.Signature(signed(8))); busy, clear : In(1)
    lanes : In(ArrayLayout({valid, group}, R)); restart, issue : In(1); pixel : Out(1)
    x : Out(stream.Signature(ArrayLayout(ArrayLayout(signed(8), L), R), always_ready=True))
    """

    #: Cycles from ``issue`` to ``x``: registered bank addresses, block RAM read.
    latency = 2

    def __init__(self, plan: LayerPlan | list):
        self.plans = as_list(plan)
        self.layers = [p.layer for p in self.plans]
        self.rows, self.group = self.plans[0].array.rows, self.plans[0].array.lanes
        for layer, p in zip(self.layers, self.plans):
            if tuple(layer.kernel) != (1, 1):
                raise ValueError(f"the channel-group feed takes 1x1 kernels, not {layer.kernel}")
            if p.array.lanes != self.group:
                raise ValueError("layers sharing a channel-group feeder must have the same lanes")
        super().__init__(FeedSignature(self.descriptor(self.plans), self.rows, self.group, len(self.plans)))

    @staticmethod
    def descriptor(plans):
        """The row descriptor of the layers sharing the feeder (the widest group field)."""
        return group_descriptor(max(p.layer.in_shape[0] for p in plans), plans[0].array.lanes)

    def elaborate(self, platform):
        m = Module()
        layers, R, L = self.layers, self.rows, self.group
        multi = len(layers) > 1
        sel = LayerSelect(m, self.layer if multi else None, layers, self)
        cin = sel([l.in_shape[0] for l in layers], name="cin")
        h, w = sel([l.in_shape[1] for l in layers], name="h"), sel([l.in_shape[2] for l in layers], name="w")
        # ---- the image in L channel banks per array row (bank c mod L, word (c // L)*H*W + pixel) ---------
        m.submodules.image = image = BankedImage(R, L, [1] * len(layers), [l.in_shape[0] for l in layers],
                                                 [l.in_shape[1] * l.in_shape[2] for l in layers],
                                                 [l.name for l in layers])
        depth = image.depth
        wiring.connect(m, wiring.flipped(self.act_in), image.act_in)
        m.d.comb += [image.busy.eq(self.busy), image.clear.eq(self.clear)]

        # ---- read side: pixel scan -> per-bank address (registered) -> block RAM -> x ---------------------
        m.submodules.scan = scan = PixelScanner(layers)
        if multi:
            m.d.comb += [scan.layer.eq(self.layer), image.layer.eq(self.layer)]
        m.d.comb += [scan.step.eq(self.issue & self.last), scan.restart.eq(self.restart),
                     self.pixel.eq(self.issue & self.last)]
        v1, v2 = Signal(), Signal()
        m.d.sync += [v1.eq(self.pixel), v2.eq(v1)]
        m.d.comb += self.x.valid.eq(v2)
        y, x = scan.base_y, scan.base_x
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        yu = y.as_unsigned()[:bits_for_range(max(l.in_shape[1] for l in layers))]
        xu = x.as_unsigned()[:bits_for_range(max(l.in_shape[2] for l in layers))]
        # the address multiplies stay by constants: one per layer geometry, switched by the layer
        planes = [l.in_shape[1] * l.in_shape[2] for l in layers]      # words of one channel group
        for r in range(R):
            desc = self.lanes[r]
            base = Signal(unsigned(bits_for_range(depth)), name=f"base_{r}")
            per = [desc.group * planes[i] + yu * l.in_shape[2] + xu for i, l in enumerate(layers)]
            m.d.comb += base.eq(per[0] if not multi else mux_tree(self.layer, per))
            for j in range(L):
                addr = Signal(unsigned(bits_for_range(depth)), name=f"addr_{r}_{j}")
                ok0, ok = Signal(name=f"ok0_{r}_{j}"), Signal(name=f"ok_{r}_{j}")
                ok_now = desc.valid & inside & (desc.group * L + j < cin)
                m.d.sync += [addr.eq(Mux(ok_now, base, 0)), ok0.eq(ok_now), ok.eq(ok0)]
                m.d.comb += [image.addr[r][j].eq(addr), self.x.payload[r][j].eq(Mux(ok, image.data[r][j], 0))]
        return m
