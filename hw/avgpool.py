"""AvgPool2d / AdaptiveAvgPool2d(1) on an int8 CHW stream: window sums taken as the elements stream past.

Non-overlapping windows only (stride >= kernel per axis; PyTorch's default stride = kernel): every input element
belongs to at most one window, so the unit needs no image buffer, only the partial sums of one band of kh rows
of one channel (Wo of them). Rows and columns past the last whole window are accepted and ignored (PyTorch's
floor), so DS-CNN's 24x5 window over its 25x5 map reads 24 rows and drops the last one.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import AvgPoolLayer
from sparsyn.sw.requant import ACT_MAX, ACT_MIN, MAX_SHIFT, MULT_BITS

from .layouts import ACT_BITS, signed_range
from .requant import clamp_to_int8
from .per_layer import LayerSelect, as_list, stream_members

#: Default limit on the window sums of one row band (Wo): one block RAM of partial sums on iCE40 (256 words).
AVGPOOL_PARTIALS = 256


def window_sum_shape(area: int):
    """The signed shape of a sum of ``area`` int8 values (the width follows the window's area)."""
    return signed_range(ACT_MIN * area, ACT_MAX * area)


def effective_shift(layer: AvgPoolLayer) -> int:
    """``layer.shift``, or the smallest shift giving the same output when it is larger: with
    ``|sum*mult| <= B = 128*area*mult < 2**k``, ``(sum*mult + 2**(s-1)) >> s`` is 0 for every sum once
    ``s >= k+1`` (the unit's adder and shifter stay as narrow as the layer's products)."""
    return min(layer.shift, (-ACT_MIN * layer.area * layer.mult).bit_length() + 1)


def check_avgpool(layer: AvgPoolLayer, max_partials: int = AVGPOOL_PARTIALS) -> None:
    """Refuse (one line) an average-pool layer the unit cannot run; call before constructing the unit."""
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    c, h, w = layer.in_shape
    if sh < kh or sw < kw:
        raise SparsynError(f"avgpool {layer.name}: AvgPool2d with stride < kernel runs in the golden model only; "
                           f"use stride = kernel (kernel {kh}x{kw}, stride {sh}x{sw})")
    if min(kh, kw) < 1 or kh > h or kw > w:
        raise SparsynError(f"avgpool {layer.name}: window {kh}x{kw} does not fit the {h}x{w} map; "
                           "the manifest is inconsistent, re-run 'sparsyn compress'")
    ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
    if tuple(layer.out_shape) != (c, ho, wo):
        raise SparsynError(f"avgpool {layer.name}: output shape {tuple(layer.out_shape)} is not the {(c, ho, wo)} "
                           f"of a {kh}x{kw} window with stride {sh}x{sw} over {(c, h, w)}; re-run 'sparsyn compress'")
    if wo > max_partials:
        raise SparsynError(f"avgpool {layer.name}: {wo} windows per row band exceed the unit's {max_partials} "
                           "partial sums; use wider windows or a narrower feature map")
    if not 0 <= layer.mult < 1 << MULT_BITS:
        raise SparsynError(f"avgpool {layer.name}: mult {layer.mult} is outside 0..{(1 << MULT_BITS) - 1} "
                           f"(an unsigned {MULT_BITS}-bit multiplier); re-quantize the model")
    if not 1 <= layer.shift <= MAX_SHIFT:
        raise SparsynError(f"avgpool {layer.name}: shift {layer.shift} is outside 1..{MAX_SHIFT}; "
                           "re-quantize the model")


def avgpool_cycles(layer: AvgPoolLayer) -> int:
    """Cycles from the last input handshake to the last output handshake of one tensor with ``o.ready`` held
    high: :attr:`AvgPoolUnit.latency`, whatever the layer and the input's timing (the last window's sum enters the
    requant pipeline at the tensor's last input element, even when ignored rows / columns follow its window).
    With an input element every cycle, the first input to the last output handshake (both counted) is
    ``C*H*W + latency`` cycles."""
    return AvgPoolUnit.latency


class AvgPoolUnit(wiring.Component):
    """Average pool of the CHW int8 stream ``i`` onto the CHW int8 stream ``o``, bit-exact to
    :func:`sparsyn.sw.golden.run_layer` of an :class:`~sparsyn.sw.qmodel.AvgPoolLayer`::

        y[c, oy, ox] = clamp((sum*mult + 2**(shift-1)) >> shift, lo, 127)     lo = 0 with relu, else -128
        sum = the kh x kw window of channel c at (oy*sh, ox*sw)

    Each accepted element is added to its window's sum (an element outside every window is accepted and
    ignored); the Wo sums of the current band of kh rows wait between rows in a small memory (one block RAM
    read ahead at the next element's window, transparent to the write of the same cycle; a register when every
    layer has Wo = 1). A finished sum (the last element of its window; the tensor's last window at the tensor's
    last element) enters a pipeline of five register stages, one short operation each:

    1. the sum (the multiplier's input register);
    2. the product ``sum*mult`` (registered: one DSP block for windows of up to 256 elements, whose sums are
       16-bit);
    3. the rounding constant ``2**(shift-1)`` added;
    4. the arithmetic right shift;
    5. the clamp to ``[lo, 127]`` (the output register).

    Latency :attr:`latency` = 5 cycles from an input handshake to its output's ``o.valid``; throughput one input
    element per cycle while ``o.ready`` is high (:func:`avgpool_cycles`). Back-pressure stalls everything:
    the unit accepts an element and its pipeline advances only when the output register is empty or taken
    (``~o.valid | o.ready``).

    Parameters
    ----------
    layer : AvgPoolLayer, already accepted by :func:`check_avgpool`; or a list of them sharing the unit
        (``layer_index`` input: the active one, changed only between tensors, with the pipeline empty).

    Attributes
    ----------
    i : In(stream.Signature(signed(8))); o : Out(stream.Signature(signed(8)))
    layer_index : In(range(len(layers))), only with several layers
    latency : int
        Register stages from the input handshake that completes a window to its ``o.valid`` (5).
    """

    latency = 5

    def __init__(self, layer: AvgPoolLayer | list):
        #: the average-pool layers this unit runs (several: ``layer_index`` selects the active one)
        self.pools = as_list(layer)
        self.layer = self.pools[0]
        super().__init__(stream_members(len(self.pools), ('i',)))

    def elaborate(self, platform):
        m = Module()
        pools = self.pools
        sel = LayerSelect(m, self.layer_index if len(pools) > 1 else None, pools, self)
        c1 = sel([l.in_shape[0] - 1 for l in pools], name="c_last")
        h1, w1 = sel([l.in_shape[1] - 1 for l in pools], name="h_last"), sel([l.in_shape[2] - 1 for l in pools],
                                                                                name="w_last")
        kh1, kw1 = sel([l.kernel[0] - 1 for l in pools], name="kh_last"), sel([l.kernel[1] - 1 for l in pools],
                                                                                 name="kw_last")
        sh1, sw1 = sel([l.stride[0] - 1 for l in pools], name="sh_last"), sel([l.stride[1] - 1 for l in pools],
                                                                                 name="sw_last")
        ho1, wo1 = sel([l.out_shape[1] - 1 for l in pools], name="ho_last"), sel([l.out_shape[2] - 1 for l in pools],
                                                                                    name="wo_last")
        shifts = [effective_shift(l) for l in pools]
        mult = sel([l.mult for l in pools], name="mult")
        shift = sel(shifts, name="shift")
        rounding = sel([1 << (s - 1) for s in shifts], name="rounding")
        relu = sel.flag([l.relu for l in pools], name="relu")

        def counter(most: int, name: str) -> Signal:
            return Signal(range(max(most, 1) + 1), name=name)

        # position of the next element: channel, row y (row dy of band oy), column x (column dx of window ox);
        # oy / ox run past the last whole window over the ignored rows / columns
        ch = counter(max(l.in_shape[0] - 1 for l in pools), "ch")
        y, x = counter(max(l.in_shape[1] - 1 for l in pools), "y"), counter(max(l.in_shape[2] - 1 for l in pools), "x")
        dy, dx = counter(max(l.stride[0] - 1 for l in pools), "dy"), counter(max(l.stride[1] - 1 for l in pools), "dx")
        oy = counter(max((l.in_shape[1] - 1) // l.stride[0] for l in pools), "oy")
        ox = counter(max((l.in_shape[2] - 1) // l.stride[1] for l in pools), "ox")
        state = [ch, y, x, dy, dx, oy, ox]
        nxt = {s.name: Signal.like(s, name=f"{s.name}_next") for s in state}
        m.d.comb += [nxt[s.name].eq(s) for s in state]
        m.d.sync += [s.eq(nxt[s.name]) for s in state]

        area = max(l.area for l in pools)
        acc = Signal(window_sum_shape(area))           # the running sum of the current window
        acc_next = Signal.like(acc)
        wo_max = max(l.out_shape[2] for l in pools)

        # stall control: the element handshake and every pipeline register advance together
        valid = [Signal(name=f"valid_{s}") for s in range(self.latency)]
        advance, take = Signal(), Signal()
        m.d.comb += [advance.eq(~valid[-1] | self.o.ready), take.eq(self.i.valid & advance),
                     self.i.ready.eq(advance), self.o.valid.eq(valid[-1])]

        row_end, img_end = Signal(), Signal()
        used, last_window = Signal(), Signal()
        m.d.comb += [row_end.eq(x == w1), img_end.eq(row_end & (y == h1) & (ch == c1)),
                     used.eq((dx <= kw1) & (ox <= wo1) & (dy <= kh1) & (oy <= ho1)),
                     last_window.eq((ch == c1) & (oy == ho1) & (ox == wo1))]
        window_done = used & (dx == kw1) & (dy == kh1)
        park = used & (dx == kw1) & (dy != kh1)        # a row of the window done: its sum waits for the next row

        # the partial sums of the band, one per window of the row: read at the next element's window
        if wo_max > 1:
            m.submodules.partials = mem = Memory(shape=acc.shape(), depth=wo_max, init=[])
            wr = mem.write_port()
            rd = mem.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(nxt["ox"]), wr.addr.eq(ox), wr.data.eq(acc_next), wr.en.eq(take & park)]
            partial = rd.data
        else:
            partial = Signal.like(acc, name="partial")
            with m.If(take & park):
                m.d.sync += partial.eq(acc_next)
        base = Mux(dx == 0, Mux(dy == 0, 0, partial), acc)
        m.d.comb += acc_next.eq(base + self.i.payload)

        with m.If(take):
            with m.If(used):
                m.d.sync += acc.eq(acc_next)
            with m.If(row_end):
                m.d.comb += [nxt["x"].eq(0), nxt["dx"].eq(0), nxt["ox"].eq(0)]
                with m.If(y == h1):
                    m.d.comb += [nxt["y"].eq(0), nxt["dy"].eq(0), nxt["oy"].eq(0),
                                 nxt["ch"].eq(Mux(ch == c1, 0, ch + 1))]
                with m.Else():
                    m.d.comb += [nxt["y"].eq(y + 1), nxt["dy"].eq(Mux(dy == sh1, 0, dy + 1)),
                                 nxt["oy"].eq(oy + (dy == sh1))]
            with m.Else():
                m.d.comb += [nxt["x"].eq(x + 1), nxt["dx"].eq(Mux(dx == sw1, 0, dx + 1)),
                             nxt["ox"].eq(ox + (dx == sw1))]

        # a finished sum enters the pipeline; the tensor's last one waits for its last element (the ignored ones
        # after it), so that the tensor's last output always follows its last input by ``latency`` cycles
        emit = take & ((window_done & ~last_window) | img_end)
        mmax = max(l.mult for l in pools)
        s_q = Signal(acc.shape(), reset_less=True)
        prod = Signal(signed_range(ACT_MIN * area * mmax, ACT_MAX * area * mmax), reset_less=True)
        rmax = max(1 << (s - 1) for s in shifts)
        rounded = Signal(signed_range(ACT_MIN * area * mmax, ACT_MAX * area * mmax + rmax), reset_less=True)
        shifted = Signal.like(rounded)
        out = Signal(signed(ACT_BITS), reset_less=True)
        m.d.comb += self.o.payload.eq(out)
        with m.If(advance):
            m.d.sync += valid[0].eq(emit)
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, self.latency)]
            m.d.sync += [s_q.eq(Mux(used, acc_next, acc)),
                         prod.eq(s_q * mult),
                         rounded.eq(prod + rounding),
                         shifted.eq(rounded >> shift)]
            clamp_to_int8(m, out, shifted, relu)
        return m
