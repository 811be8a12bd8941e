"""The kernel-window feeder: each array row gets one input channel's kh x kw window per output pixel,
from a row-banked image and a window shift register — no per-lane buffer copies."""
from __future__ import annotations

from typing import TYPE_CHECKING

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring

from sparsyn.sw.array_format import window_descriptor
from sparsyn.sw.qmodel import QuantLayer

from .banked_image import BankedImage, FeedSignature
from .layouts import ACT_BITS, bits_for_range, signed_range
from .im2col import axis_select
from .per_layer import LayerSelect, as_list
from .mux import mux_tree

if TYPE_CHECKING:
    from .plan import LayerPlan


def window_steps(layer: QuantLayer) -> int:
    """Steps (cycles of ``issue``) per pass: each output row shifts ``(Wo-1)*sw + kw`` columns in (sw: the stride
    along the row)."""
    _, ho, wo = layer.out_shape
    return ho * ((wo - 1) * layer.stride_hw[1] + layer.kernel[1])


class KernelWindowFeeder(wiring.Component):
    """The ``window`` row feed: array row r gets channel ``c_r``'s kh x kw window at every output pixel.

    Storage: per array row, the C_in x H x W image in kh **row banks** (bank i holds the input rows
    y = i mod kh, at ``c*ceil(H/kh)*W + (y // kh)*W + x``): the kh rows of a window column are in kh
    different banks, so a whole column is read in one cycle. R x kh memories of 1/kh of the image each
    (R image copies in all, not R x kh*kw).

    Scan (shared by every row): per output row, ``(Wo-1)*sw + kw`` **steps**, one input column per
    step (columns ``-pw ..``, padding reads 0); a kh x (kw-1) shift register keeps the previous columns.
    After the kw-th step and every ``sw``-th step after it the window of the next output pixel is
    complete: that step **emits** (``pixel`` high in its issue cycle). Output rows follow each other
    ``sh`` input rows apart (the first at ``-ph``), and after the last step the scan wraps to the first
    (``restart`` also returns to it). Stride (sh, sw) and padding (ph, pw) are per axis.
    :func:`window_steps` steps per pass.

    Latency :attr:`latency` = 2 cycles from an emitting ``issue`` to its window on ``x`` (registered
    bank addresses, block RAM read; the newest column comes straight from the read ports). Throughput:
    one step per cycle; one window per emitting step.

    The write side takes ``act_in`` in CHW order while ``busy`` is low, into every row's banks.

    Parameters
    ----------
    plan : LayerPlan (the layer geometry; R, L = kh*kw; the row-descriptor layout ``{valid, channel}``).

    Attributes
    ----------
    act_in : In(stream.Signature(signed(8))); busy, clear : In(1)
    lanes : In(ArrayLayout({valid, channel}, R))
        The channel each array row reads (sampled in the issue cycle).
    restart, issue : In(1)
        Back to the first step / take one step.
    pixel : Out(1)
        ``issue`` and this step emits a window (combinational).
    x : Out(stream.Signature(ArrayLayout(ArrayLayout(signed(8), kh*kw), R), always_ready=True))
        Lane ``dy*kw + dx`` of row r = input ``(c_r, oy*sh - ph + dy, ox*sw - pw + dx)`` (0 outside the image).
    """

    #: Cycles from ``issue`` to ``x``: registered bank addresses, block RAM read.
    latency = 2

    def __init__(self, plan: LayerPlan | list):
        self.plans = as_list(plan)
        self.layers = [p.layer for p in self.plans]
        self.rows = self.plans[0].array.rows
        kh, kw = self.layers[0].kernel
        for p in self.plans:
            if tuple(p.layer.kernel) != (kh, kw):
                raise ValueError("layers sharing a window feeder must have the same kernel size")
            if p.array.lanes != kh * kw:
                raise ValueError(f"window feed of a {kh}x{kw} kernel needs {kh * kw} lanes, array has {p.array.lanes}")
        super().__init__(FeedSignature(self.descriptor(self.plans), self.rows, kh * kw, len(self.plans)))

    @staticmethod
    def descriptor(plans):
        """The row descriptor of the layers sharing the feeder (the widest channel field)."""
        return window_descriptor(max(p.layer.in_shape[0] for p in plans))

    def elaborate(self, platform):
        m = Module()
        layers, R = self.layers, self.rows
        multi = len(layers) > 1
        sel = LayerSelect(m, self.layer if multi else None, layers, self)
        kh, kw = layers[0].kernel
        # y: the output rows' input rows (stride ss, padding ps); x: the columns of a row's steps (sxs, pxs)
        ss, sxs = [l.stride_hw[0] for l in layers], [l.stride_hw[1] for l in layers]
        ps, pxs = [l.padding_hw[0] for l in layers], [l.padding_hw[1] for l in layers]
        t_rows = [(l.out_shape[2] - 1) * sx + kw for l, sx in zip(layers, sxs)]
        s = sel(ss, name="stride")
        neg_p, neg_px = axis_select(sel, layers, lambda l: tuple(-v for v in l.padding_hw), "neg_pad")
        h, w = sel([l.in_shape[1] for l in layers], name="h"), sel([l.in_shape[2] for l in layers], name="w")
        ho1 = sel([l.out_shape[1] - 1 for l in layers], name="ho_last")
        t_row1 = sel([t - 1 for t in t_rows], name="t_row_last")
        s1 = sel([v - 1 for v in sxs], name="stride_m1")
        pmax, smax, pxmax = max(ps), max(sxs), max(pxs)
        hmax, wmax = max(l.in_shape[1] for l in layers), max(l.in_shape[2] for l in layers)
        homax = max(l.out_shape[1] for l in layers)

        # ---- the image in kh row banks per array row (bank y mod kh, word c*plane + (y // kh)*w + x) ------
        m.submodules.image = image = BankedImage(R, kh, [l.in_shape[0] for l in layers],
                                                 [l.in_shape[1] for l in layers], [l.in_shape[2] for l in layers],
                                                 [l.name for l in layers])
        depth = image.depth
        hb = -(-hmax // kh)
        wiring.connect(m, wiring.flipped(self.act_in), image.act_in)
        m.d.comb += [image.busy.eq(self.busy), image.clear.eq(self.clear)]
        if multi:
            m.d.comb += image.layer.eq(self.layer)

        # ---- scan: steps of one column, output rows, emit ----------------------------------------------
        t = Signal(range(max(max(t_rows), 2)))
        oy = Signal(range(max(homax, 2)))
        xc = Signal(signed_range(-pxmax, max(t_rows) - min(pxs)), init=-pxs[0])   # input column of this step
        wait = Signal(range(max(kw, smax, 2)), init=kw - 1)                   # steps until the next emit
        # by = oy*s - p, qb = by // kh, ry = by mod kh (per layer at the first output row)
        qb0s, ry0s = [(-v) // kh for v in ps], [(-v) % kh for v in ps]
        qb0, ry0 = sel(qb0s, name="qb0"), sel(ry0s, name="ry0")
        top = max((l.out_shape[1] - 1) * sy for l, sy in zip(layers, ss))
        by = Signal(signed_range(-pmax, top), init=-ps[0])
        qb = Signal(signed_range(min(min(qb0s), -1), top // kh + 1), init=qb0s[0])
        ry = Signal(range(max(kh, 2)), init=ry0s[0])
        sa = sel([v // kh for v in ss], name="sa")
        sb = sel([v % kh for v in ss], name="sb")
        emit = Signal()
        advance = Signal()          # the step's last cycle (held steps: see ``last``)
        m.d.comb += [advance.eq(self.issue & self.last), emit.eq(wait == 0), self.pixel.eq(advance & emit)]
        row_end = t == t_row1
        with m.If(self.restart):
            m.d.sync += [t.eq(0), oy.eq(0), xc.eq(neg_px), wait.eq(kw - 1), by.eq(neg_p), qb.eq(qb0), ry.eq(ry0)]
        with m.Elif(advance):
            with m.If(row_end):
                m.d.sync += [t.eq(0), xc.eq(neg_px), wait.eq(kw - 1)]
                with m.If(oy == ho1):
                    m.d.sync += [oy.eq(0), by.eq(neg_p), qb.eq(qb0), ry.eq(ry0)]
                with m.Else():
                    m.d.sync += [oy.eq(oy + 1), by.eq(by + s)]
                    with m.If(ry + sb >= kh):
                        m.d.sync += [ry.eq(ry + sb - kh), qb.eq(qb + sa + 1)]
                    with m.Else():
                        m.d.sync += [ry.eq(ry + sb), qb.eq(qb + sa)]
            with m.Else():
                m.d.sync += [t.eq(t + 1), xc.eq(xc + 1), wait.eq(Mux(wait == 0, s1, wait - 1))]

        # ---- bank reads: bank i holds window row d_i = (i - ry) mod kh, input row by + d_i ---------------
        x_ok = (xc >= 0) & (xc < w)
        xu = xc.as_unsigned()[:bits_for_range(wmax)]
        abits = bits_for_range(depth)

        def per_layer(value_of, name):
            """A word-address term with per-layer constant multiplies (one per geometry, switched by the layer)."""
            sig = Signal(unsigned(abits), name=name)
            m.d.comb += sig.eq(value_of(0) if not multi else mux_tree(self.layer, [value_of(k)
                                                                                  for k in range(len(layers))]))
            return sig

        # each row's channel base (c * plane) and each bank's row base ((y // kh) * w)
        chan_base = [per_layer(lambda k, r=r: self.lanes[r].channel * image.planes[k], f"chan_base_{r}")
                     for r in range(R)]
        step1, step2, emit1, emit2 = Signal(), Signal(), Signal(), Signal()
        ry1, ry2 = Signal.like(ry), Signal.like(ry)
        m.d.sync += [step1.eq(advance), step2.eq(step1), emit1.eq(self.pixel), emit2.eq(emit1),
                     ry1.eq(ry), ry2.eq(ry1)]
        bank_data = [[None] * kh for _ in range(R)]
        for i in range(kh):
            wrapped = Signal(name=f"wrapped_{i}")            # i < ry: the row is in the next bank period
            m.d.comb += wrapped.eq(i < ry)
            yi = Signal(signed_range(-pmax - kh, top + 2 * kh), name=f"y_{i}")
            m.d.comb += yi.eq(by + Mux(wrapped, i + kh, i) - ry)
            row_ok = (yi >= 0) & (yi < h)
            qi = Signal(signed_range(min(min(qb0s), -1) - 1, top // kh + 2), name=f"q_{i}")
            m.d.comb += qi.eq(qb + wrapped)
            qu = qi.as_unsigned()[:bits_for_range(hb)]
            row_base = per_layer(lambda k: qu * layers[k].in_shape[2], f"row_base_{i}")
            for r in range(R):
                desc = self.lanes[r]
                addr = Signal(unsigned(bits_for_range(depth)), name=f"addr_{r}_{i}")
                ok0, ok = Signal(name=f"ok0_{r}_{i}"), Signal(name=f"ok_{r}_{i}")
                ok_now = desc.valid & row_ok & x_ok
                m.d.sync += [addr.eq(Mux(ok_now, chan_base[r] + row_base + xu, 0)), ok0.eq(ok_now), ok.eq(ok0)]
                m.d.comb += image.addr[r][i].eq(addr)
                val = Signal(signed(ACT_BITS), name=f"bank_{r}_{i}_data")
                m.d.comb += val.eq(Mux(ok, image.data[r][i], 0))
                bank_data[r][i] = val

        # ---- the newest column (window row dy from bank (ry + dy) mod kh) and the shift register ------
        m.d.comb += self.x.valid.eq(emit2)
        for r in range(R):
            col_new = []
            for dy in range(kh):
                v = Signal(signed(ACT_BITS), name=f"col_{r}_{dy}")
                idx = Signal(range(max(kh, 2)), name=f"colsel_{r}_{dy}")
                m.d.comb += idx.eq(Mux(ry2 + dy >= kh, ry2 + dy - kh, ry2 + dy))
                m.d.comb += v.eq(mux_tree(idx, bank_data[r]))
                col_new.append(v)
            win = [[Signal(signed(ACT_BITS), name=f"win_{r}_{dx}_{dy}") for dy in range(kh)] for dx in range(kw - 1)]
            with m.If(step2):
                for dx in range(kw - 1):
                    src = win[dx + 1] if dx + 1 < kw - 1 else col_new
                    m.d.sync += [win[dx][dy].eq(src[dy]) for dy in range(kh)]
            for dy in range(kh):
                for dx in range(kw):
                    v = win[dx][dy] if dx < kw - 1 else col_new[dy]
                    m.d.comb += self.x.payload[r][dy * kw + dx].eq(v)
        return m
