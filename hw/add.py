"""Residual add of two int8 CHW streams: ``y = clamp((a*mult_a + b*mult_b + 2**(shift-1)) >> shift, lo, 127)``."""
from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring

from sparsyn.sw.errors import SparsynError
from sparsyn.sw.qmodel import AddLayer
from sparsyn.sw.requant import ACT_MAX, ACT_MIN, MAX_SHIFT, MULT_BITS

from .layouts import ACT_BITS, signed_range
from .requant import clamp_to_int8
from .per_layer import LayerSelect, as_list, stream_members

#: Shifts from this one on give 0 for every input: ``|a*mult_a + b*mult_b| <= 2 * 128 * (2**15 - 1) < 2**23``, so
#: ``s + 2**(shift-1)`` lies in ``[0, 2**shift)`` once ``shift >= 24``. The unit shifts by ``min(shift, 24)``
#: (same result, a narrower adder and shifter).
ADD_SHIFT_CAP = ACT_BITS + MULT_BITS + 1


def check_add(layer: AddLayer) -> None:
    """Refuse (one line) an add layer the unit cannot run; call before constructing the unit."""
    if tuple(layer.in_shape) != tuple(layer.out_shape):
        raise SparsynError(f"add {layer.name}: input shape {tuple(layer.in_shape)} differs from output shape "
                           f"{tuple(layer.out_shape)}; an add keeps the shape of its inputs")
    if len(layer.inputs) != 2:
        raise SparsynError(f"add {layer.name}: reads {len(layer.inputs)} tensors; an add takes exactly two")
    for name, mult in (("mult_a", layer.mult_a), ("mult_b", layer.mult_b)):
        if not 0 <= mult < 1 << MULT_BITS:
            raise SparsynError(f"add {layer.name}: {name} {mult} is outside 0..{(1 << MULT_BITS) - 1} (an unsigned "
                               f"{MULT_BITS}-bit multiplier); re-quantize the model")
    if not 1 <= layer.shift <= MAX_SHIFT:
        raise SparsynError(f"add {layer.name}: shift {layer.shift} is outside 1..{MAX_SHIFT}; re-quantize the model")


def add_cycles(layer: AddLayer) -> int:
    """Cycles from the first input handshake to the last output handshake (both counted) of one tensor, with
    both inputs valid and ``o.ready`` held high: one element per cycle plus the pipeline's latency."""
    c, h, w = layer.out_shape
    return c * h * w + AddUnit.latency


class AddUnit(wiring.Component):
    """Element-wise residual add of the int8 streams ``a`` and ``b`` (element i of each: the same CHW position),
    bit-exact to :func:`sparsyn.sw.golden.run_layer` of an :class:`~sparsyn.sw.qmodel.AddLayer`::

        y = clamp((a*mult_a + b*mult_b + 2**(shift-1)) >> shift, lo, 127)     lo = 0 with relu, else -128

    A pipeline of six register stages, one short operation each:

    1. the inputs (the multipliers' input registers);
    2. the products ``a*mult_a`` and ``b*mult_b`` (DSP-sized: 8 x 15 bits, registered in the DSP blocks);
    3. their sum;
    4. the rounding constant ``2**(shift-1)`` added;
    5. the arithmetic right shift;
    6. the clamp to ``[lo, 127]`` (the output register).

    Latency :attr:`latency` = 6 cycles from an input handshake to its ``o.valid``; throughput one element per
    cycle while ``o.ready`` is high (:func:`add_cycles`). Back-pressure stalls the whole pipeline: every stage
    advances only when the output register is empty or taken (``~o.valid | o.ready``); a pair is taken when both
    ``a`` and ``b`` are valid and the pipeline advances (``a.ready`` / ``b.ready`` wait for the other's ``valid``).

    Parameters
    ----------
    layer : AddLayer (``mult_a``, ``mult_b``, ``shift``, ``relu`` baked in as constants), already accepted by
        :func:`check_add`; or a list of them sharing the unit (``layer_index`` input: the active one, changed only
        while the pipeline is empty).

    Attributes
    ----------
    a, b : In(stream.Signature(signed(8)))
    o : Out(stream.Signature(signed(8)))
    layer_index : In(range(len(layers))), only with several layers
    latency : int
        Register stages from an input handshake to ``o.valid`` (6).
    """

    latency = 6

    def __init__(self, layer: AddLayer | list):
        #: the add layers this unit runs (several: ``layer_index`` selects the active one)
        self.adds = as_list(layer)
        self.layer = self.adds[0]
        super().__init__(stream_members(len(self.adds), ('a', 'b')))

    def elaborate(self, platform):
        m = Module()
        adds = self.adds
        sel = LayerSelect(m, self.layer_index if len(adds) > 1 else None, adds, self)
        shifts = [min(l.shift, ADD_SHIFT_CAP) for l in adds]
        mult_a = sel([l.mult_a for l in adds], name="mult_a")
        mult_b = sel([l.mult_b for l in adds], name="mult_b")
        shift = sel(shifts, name="shift")
        rounding = sel([1 << (s - 1) for s in shifts], name="rounding")
        relu = sel.flag([l.relu for l in adds], name="relu")

        # stall control: every register below advances together
        valid = [Signal(name=f"valid_{s}") for s in range(self.latency)]
        advance = Signal()
        m.d.comb += [advance.eq(~valid[-1] | self.o.ready),
                     self.a.ready.eq(advance & self.b.valid),
                     self.b.ready.eq(advance & self.a.valid),
                     self.o.valid.eq(valid[-1])]

        # the widths follow the largest multipliers (a smaller product stays narrower)
        ma, mb = max(l.mult_a for l in adds), max(l.mult_b for l in adds)
        s_lo, s_hi = ACT_MIN * (ma + mb), ACT_MAX * (ma + mb)
        r_max = max(1 << (s - 1) for s in shifts)

        # 1: input registers; 2: products (reset-less data registers, so yosys can pack them into DSP blocks)
        a_q = Signal(signed(ACT_BITS), reset_less=True)
        b_q = Signal(signed(ACT_BITS), reset_less=True)
        p_a = Signal(signed_range(ACT_MIN * ma, ACT_MAX * ma), reset_less=True)
        p_b = Signal(signed_range(ACT_MIN * mb, ACT_MAX * mb), reset_less=True)
        # 3: sum; 4: rounded; 5: shifted; 6: clamped (the output payload)
        total = Signal(signed_range(s_lo, s_hi), reset_less=True)
        rounded = Signal(signed_range(s_lo, s_hi + r_max), reset_less=True)
        shifted = Signal(signed_range(s_lo, s_hi + r_max), reset_less=True)
        out = Signal(signed(ACT_BITS), reset_less=True)
        m.d.comb += self.o.payload.eq(out)

        with m.If(advance):
            m.d.sync += valid[0].eq(self.a.valid & self.b.valid)
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, self.latency)]
            m.d.sync += [
                a_q.eq(self.a.payload), b_q.eq(self.b.payload),
                p_a.eq(a_q * mult_a), p_b.eq(b_q * mult_b),
                total.eq(p_a + p_b),
                rounded.eq(total + rounding),
                shifted.eq(rounded >> shift),
            ]
            clamp_to_int8(m, out, shifted, relu)
        return m
